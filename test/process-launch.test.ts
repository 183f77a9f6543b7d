// What importing latchkey costs, and the helper threads in every way Node
// runs a program.
// - Issue 12 (lazy start): `import 'latchkey'` reserves its tables (64 bytes
//   each) and loads no driver; a program that only takes thread locks makes
//   only the thread tier's tables and starts no helper thread.
// - Issue 17 item 2: a process started with `node --input-type=module -e …`
//   could not start its lease keeper (a Worker inherits the program's
//   execArgv, and --input-type makes it fail at once): its host leases were
//   never renewed, so another process got the lock while it still held it.
//   Now the keeper starts in every launch mode (-e, --input-type, stdin,
//   --import, a CommonJS caller); where it cannot start at all (latchkey's
//   files incomplete, as in a bundle), the request fails with a coded error.
import { afterEach, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cleanup, freshDir, hostChild } from './fixtures/host-util.js';

afterEach(cleanup);

const dist = resolve('dist/src');
const indexUrl = pathToFileURL(join(dist, 'index.js')).href;

/** Run node with `args` (and `stdin`), in `env`; its exit code, stdout and stderr. */
function run(args: string[], env: Record<string, string>, stdin = ''): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => done({ code, out, err }));
    child.stdin.end(stdin);
  });
}

describe('import latchkey', () => {
  test('reserves 256 bytes of SharedArrayBuffer and loads no driver; thread locks make only the thread tier\'s tables, with no helper thread', async () => {
    const script = `
      import Module from 'node:module';
      import { getEnvironmentData } from 'node:worker_threads';
      const keys = ['latchkey:default-table', 'latchkey:locks-table', 'latchkey:host-table', 'latchkey:cluster-table'];
      const sizes = () => keys.map((k) => getEnvironmentData(k).byteLength);
      const drivers = () => Object.keys(Module._cache).filter((p) => /better-sqlite3|[\\\\/]pg[\\\\/]|ioredis|[\\\\/]redis[\\\\/]/.test(p));
      const lk = await import(${JSON.stringify(indexUrl)});
      const { helperState } = await import(${JSON.stringify(pathToFileURL(join(dist, 'atomics/queue/table.js')).href)});
      const atImport = sizes(), driversAtImport = drivers();
      lk.LockTable.default().mutex('a').lockSync().unlock();
      await lk.locks.request('b', () => {});
      lk.locks.lockSync('c', { mode: 'shared' }).unlock();
      const helpers = keys.slice(2).map((k) => helperState(getEnvironmentData(k)).state);
      console.log(JSON.stringify({ atImport, driversAtImport, afterThreadLocks: sizes(), drivers: drivers(), helpers }));`;
    const r = await run(['--input-type=module', '-e', script], {});
    expect(r.err).toBe('');
    const report = JSON.parse(r.out) as { atImport: number[]; driversAtImport: string[]; afterThreadLocks: number[]; drivers: string[]; helpers: number[] };
    expect(report.atImport).toEqual([64, 64, 64, 64]);
    expect(report.driversAtImport).toEqual([]);
    // The default table (~0.8 MB) and the thread-scope queues are made; the host and cluster tables are not.
    expect(report.afterThreadLocks[0]).toBeGreaterThan(64);
    expect(report.afterThreadLocks[0]).toBeLessThanOrEqual(1 << 20);
    expect(report.afterThreadLocks[1]).toBeGreaterThan(64);
    expect(report.afterThreadLocks.slice(2)).toEqual([64, 64]);
    expect(report.drivers).toEqual([]);
    expect(report.helpers).toEqual([0, 0]);
  });
});

describe('the lease keeper starts in every launch mode (issue 17 item 2)', () => {
  // The program takes a host lock with a 250 ms lease and then blocks its
  // only thread for 1.5 s: only the keeper thread can renew the lease. Another
  // process asks for the lock meanwhile and must not get it.
  const holder = (load: string) => `
    ${load}
    const lock = await locks.lock(process.env.NAME, { scope: 'host', ttl: 250 });
    console.log('held ' + lock.token);
    const until = Date.now() + 1500;
    while (Date.now() < until); // a thread blocked in its critical section
    lock.unlock();
    console.log('released');`;
  const esm = holder(`const { locks } = await import(${JSON.stringify(indexUrl)});`);
  // CommonJS has no top-level await: the same inside an async function.
  const cjs = `const { locks } = require(${JSON.stringify(join(dist, 'index.js'))});\n(async () => {${holder('')}\n})();`;

  type Env = Record<string, string>;
  const modes: Array<[string, (env: Env) => Promise<{ code: number | null; out: string; err: string }>]> = [
    ['-e (CommonJS)', (env) => run(['-e', cjs], env)],
    ['--input-type=module -e', (env) => run(['--input-type=module', '-e', esm], env)],
    ['stdin, --input-type=module', (env) => run(['--input-type=module'], env, esm)],
    ['stdin (CommonJS)', (env) => run([], env, cjs)],
    ['--import of a preload that holds the lock', (env) => {
      const preload = join(freshDir('lk-launch-'), 'preload.mjs');
      writeFileSync(preload, esm);
      return run(['--import', preload, '-e', '0'], env);
    }],
    ['a CommonJS file that requires latchkey', (env) => {
      const file = join(freshDir('lk-launch-'), 'caller.cjs');
      writeFileSync(file, cjs);
      return run([file], env);
    }],
  ];

  for (const [mode, start] of modes) {
    test(`${mode}: a holder whose thread blocks past many leases keeps its lock; nobody else gets in`, async () => {
      const dir = freshDir(), name = `launch-${mode.replace(/\W+/g, '-')}`;
      const other = await hostChild('file', dir);
      const running = start({ NAME: name, LATCHKEY_DIR: dir, LATCHKEY_BACKEND: 'file' });
      // Wait for the grant, then ask while the holder blocks.
      let held = false;
      for (let i = 0; i < 200 && !held; i++) {
        const { q } = await other.call('query') as { q: { held: Array<{ name: string }> } };
        held = q.held.some((l) => l.name === name);
        if (!held) await new Promise((r) => setTimeout(r, 20));
      }
      expect(held, 'the holder got the lock').toBe(true);
      await new Promise((r) => setTimeout(r, 700)); // well past its 250 ms lease
      expect(await other.call('lock', { key: 'a', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
      const r = await running;
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/held \d+\nreleased/);
      expect(await other.call('lock', { key: 'b', name, opts: { timeout: 2000 } })).toMatchObject({ granted: true });
    }, 20_000);
  }
});

describe('a helper thread that cannot start', () => {
  const copies: string[] = [];
  afterEach(() => {
    for (const c of copies.splice(0)) rmSync(c, { recursive: true, force: true });
  });

  test('fails the host request with ERR_LOCK_BACKEND (never a grant on a lease nobody renews)', async () => {
    // latchkey's files without the keeper's script, as a bundle that inlined latchkey would leave them.
    const copy = mkdtempSync(join(resolve('dist'), 'nokeeper-')); // inside the repository: its node_modules resolve
    copies.push(copy);
    cpSync(dist, join(copy, 'src'), { recursive: true });
    rmSync(join(copy, 'src/bridge/host/keeper-thread.js'));
    writeFileSync(join(copy, 'package.json'), '{"type":"module"}');
    const url = pathToFileURL(join(copy, 'src/index.js')).href;
    const r = await run(['--input-type=module', '-e', `
      const { locks } = await import(${JSON.stringify(url)});
      try {
        await locks.request('no-keeper', { scope: 'host' }, () => console.log('granted'));
      } catch (err) {
        console.log(JSON.stringify({ code: err.code, message: err.message }));
      }
      const q = await locks.query({ scope: 'host' });
      console.log(JSON.stringify(q.held.filter((l) => l.name === 'no-keeper')));`], { LATCHKEY_DIR: freshDir() });
    expect(r.err).toBe('');
    const [failure, held] = r.out.trim().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(failure).toMatchObject({ code: 'ERR_LOCK_BACKEND', message: expect.stringContaining('lease keeper') });
    expect(held).toEqual([]);
  });
});
