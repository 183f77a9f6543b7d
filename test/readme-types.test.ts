// The README's TypeScript compiles, strict, against the built declarations,
// in a fresh project set up as the README tells a user to (`latchkey` and
// @types/node installed, module NodeNext), with every declaration file
// checked (skipLibCheck off): so the README cannot drift from the API, and
// the published declarations stand on their own. And they publish no
// @internal member.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = fs.readFileSync(join(root, 'README.md'), 'utf8');

/** Every ```ts block of the README, with the line it starts on. */
export function tsBlocks(text: string): Array<{ line: number; code: string }> {
  const blocks: Array<{ line: number; code: string }> = [];
  const re = /^```ts\n([\s\S]*?)^```$/gm;
  for (let m; (m = re.exec(text)) !== null;) blocks.push({ line: text.slice(0, m.index).split('\n').length + 1, code: m[1]! });
  return blocks;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A consumer project: package.json (ESM), tsconfig (strict, NodeNext), node_modules with latchkey and @types/node. */
function consumer(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(join(tmpdir(), 'lk-readme-'));
  dirs.push(dir);
  fs.writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'readme-consumer', private: true, type: 'module' }));
  fs.writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      // No `types`: the declarations reference @types/node themselves (a tsconfig with `types: []` works too).
      strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', lib: ['es2023'],
      types: [], noEmit: true, skipLibCheck: false,
    },
    include: ['*.ts'],
  }));
  fs.mkdirSync(join(dir, 'node_modules', '@types'), { recursive: true });
  // The package as installed: its package.json's `exports` and `types` lead to dist/src/*.d.ts.
  fs.symlinkSync(root, join(dir, 'node_modules', 'latchkey'), 'dir');
  fs.symlinkSync(fs.realpathSync(join(root, 'node_modules', '@types', 'node')), join(dir, 'node_modules', '@types', 'node'), 'dir');
  for (const [name, code] of Object.entries(files)) fs.writeFileSync(join(dir, name), code);
  return dir;
}

function tsc(dir: string): { status: number; output: string } {
  try {
    const output = execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir, '--pretty', 'false'], { encoding: 'utf8' });
    return { status: 0, output };
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string };
    return { status: e.status, output: `${e.stdout}${e.stderr}` };
  }
}

describe('the README', () => {
  test('has TypeScript blocks, each importing latchkey', () => {
    const blocks = tsBlocks(readme);
    expect(blocks.length).toBeGreaterThanOrEqual(5);
    for (const b of blocks) expect(b.code, `README.md:${b.line}`).toMatch(/from 'latchkey'/);
  });

  test('every TypeScript block compiles with strict against the built declarations', () => {
    const blocks = tsBlocks(readme);
    const files = Object.fromEntries(blocks.map((b) => [`readme-${b.line}.ts`, b.code]));
    const dir = consumer(files);
    const { status, output } = tsc(dir);
    // Errors point at README lines: readme-<line>.ts(l,c) is README.md line <line> + l - 1.
    const mapped = output.replace(/\S*readme-(\d+)\.ts\((\d+),(\d+)\)/g, (_, start: string, l: string, c: string) => `README.md:${Number(start) + Number(l) - 1}:${c}`);
    expect(mapped, 'tsc output').toBe('');
    expect(status).toBe(0);
  }, 120_000);

  test('a strict consumer sees null only with ifAvailable: true', () => {
    const dir = consumer({
      'null.ts': `import { locks, type Lock, type LockGuard } from 'latchkey';
const a: LockGuard = locks.lockSync('a');
const b: LockGuard = await locks.lock('b', { scope: 'thread', timeout: 10 });
const c: LockGuard | null = locks.lockSync('c', { ifAvailable: true });
await locks.request('d', (lock: Lock) => lock.token);
await locks.request('e', { mode: 'shared' }, (lock: Lock) => lock.token);
await locks.request('f', { ifAvailable: true }, (lock: Lock | null) => lock?.token);
// @ts-expect-error: with ifAvailable the guard may be null
const g: LockGuard = locks.lockSync('g', { ifAvailable: true });
// @ts-expect-error: with ifAvailable the callback may get null
await locks.request('h', { ifAvailable: true }, (lock: Lock) => lock.token);
const flag = Math.random() > 2;
// @ts-expect-error: ifAvailable not known to be false: null is possible
const i: LockGuard = locks.lockSync('i', { ifAvailable: flag });
a.unlock(); b.unlock(); c?.unlock(); g.unlock(); i.unlock();
`,
    });
    const { status, output } = tsc(dir);
    expect(output).toBe('');
    expect(status).toBe(0);
  }, 60_000);
});

describe('the published declarations', () => {
  const dts = (dir: string): string[] => fs.readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.d.ts')).map((f) => join(dir, f));

  test('carry no @internal member', () => {
    const files = dts(join(root, 'dist', 'src'));
    expect(files.length).toBeGreaterThan(10);
    const leaks = files.filter((f) => fs.readFileSync(f, 'utf8').includes('@internal')).map((f) => relative(root, f));
    expect(leaks).toEqual([]);
    const table = fs.readFileSync(join(root, 'dist', 'src', 'atomics', 'table.d.ts'), 'utf8');
    expect(table).not.toContain('unsafeExposeInternals');
    expect(table).toContain('static create(');
  });
});
