// What a `latchkey run` loads (issue 16): the command may cost at most
// 1.3× `node -e 0`, and what it costs above that is mostly loading
// modules. An uncontended run at host scope loads the command, the front
// door and the host tier; nothing of the other commands, of the cluster
// tier, of the LockTable primitives, and no driver. Its time is measured in
// bench/host.ts; this checks what it loads, which can fail without a clock.
import { afterEach, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FIXTURES, MAIN, childEnv, cleanup, freshEnv } from './fixtures/cli-util.js';

afterEach(cleanup);

const DIST = fileURLToPath(new URL('../dist/', import.meta.url));

/** Run `latchkey ARGS` with every module it loads logged: its exit status, and the modules (paths under dist/, or as node gave them). */
function loads(args: string[]): Promise<{ code: number | null; stderr: string; modules: string[] }> {
  const env = freshEnv('file'), log = join(env.dir, 'modules');
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--import', join(FIXTURES, 'cli-module-log.js'), MAIN, ...args], {
      env: childEnv(env, { LATCHKEY_TEST_MODULES: log }), stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', fail);
    child.on('close', (code) => {
      const urls = readFileSync(log, 'utf8').split('\n').filter((u) => u !== '');
      const modules = urls.map((u) => (u.startsWith('file:') ? fileURLToPath(u) : u)).map((p) => (p.startsWith(DIST) ? p.slice(DIST.length) : p));
      done({ code, stderr, modules });
    });
  });
}

const kNotForRun: Array<[string, RegExp]> = [
  ['the other commands', /^src\/cli\/(status|prune|demo|bench|hot|forward|table|names)\.js$/],
  ['the cluster tier', /^src\/(bridge\/cluster\/|process-cluster\.js$)/],
  ['the LockTable primitives', /^src\/(atomics\/(table|kinds|mutex|rwlock|semaphore|condition|barrier|once)(-word)?\.js|process-default\.js)$/],
  ['the public surface (index.js and what only it exports)', /^src\/(index\.js|workers\/)/],
  ['a driver (or anything from node_modules)', /[\\/]node_modules[\\/]/],
];

describe('what latchkey loads', () => {
  test('run NAME -- true (host scope, file backend, uncontended): the front door and the host tier, nothing else', async () => {
    const r = await loads(['run', 'cli-modules', '--', 'true']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // The log sees what it should (else the test below proves nothing).
    for (const m of ['src/cli/main.js', 'src/cli/run.js', 'src/locks.js', 'src/process.js', 'src/bridge/host/host.js', 'src/bridge/host/file.js']) {
      expect(r.modules).toContain(m);
    }
    for (const [what, pattern] of kNotForRun) expect(r.modules.filter((m) => pattern.test(m)), what).toEqual([]);
  });

  test('--help loads no lock machinery', async () => {
    const r = await loads(['--help']);
    expect(r.code).toBe(0);
    expect(r.modules.filter((m) => m.startsWith('src/')).sort()).toEqual(['src/cli/args.js', 'src/cli/exit-codes.js', 'src/cli/main.js']);
  });
});
