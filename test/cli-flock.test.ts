// `latchkey run` as users of flock(1) expect: `NAME COMMAND [ARGS…]`
// without `--`, `-c 'shell command'`, `-E CODE` for a conflict or a
// timeout; and a lock store that fails (a symlink or a directory where a
// file belongs: raw ELOOP / EISDIR from the file backend) ends latchkey with
// 69, never 70 ("internal error"). Real latchkey processes, as in cli-run.
import { afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { HOLD, Latchkey, cleanup, freshEnv, holdArgs, latchkey, status, untilStatus, waiting } from './fixtures/cli-util.js';

afterEach(cleanup);

const EXIT_UNAVAILABLE = 69;
/** Writes a marker file: whether the command ran. */
const touch = (marker: string) => [process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`];

describe('latchkey run NAME COMMAND [ARGS...] without --', () => {
  test('the arguments after COMMAND are the command\'s, options included, exactly as given', async () => {
    const env = freshEnv(), script = join(env.dir, 'args.js');
    // A script file: `node -e` would take -n and --wait for its own options.
    fs.writeFileSync(script, 'console.log(JSON.stringify([process.env.LATCHKEY_NAME, process.argv.slice(2)]))');
    const r = await latchkey(['run', '-x', 'plain', process.execPath, script, '-n', '--wait', '5', '-c', 'x', ''], env);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(['plain', ['-n', '--wait', '5', '-c', 'x', '']]);
  }, 30_000);

  test('latchkey\'s options may come between NAME and COMMAND', async () => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps'), marker = join(env.dir, 'ran');
    const a = new Latchkey(holdArgs('busy', stamps, 'a'), env);
    await a.started('a');
    const r = await latchkey(['run', 'busy', '-n', ...touch(marker)], env);
    expect(r.code).toBe(75);
    expect(fs.existsSync(marker)).toBe(false);
    a.go();
    expect((await a.exited).code).toBe(0);
  }, 30_000);

  test('it excludes as the -- form does: a second run waits for the first', async () => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps');
    const hold = (label: string) => ['run', 'nodash', process.execPath, '-e', HOLD, stamps, label];
    const a = new Latchkey(hold('a'), env);
    await a.started('a');
    const b = new Latchkey(hold('b'), env);
    await untilStatus(env, waiting('nodash', b.pid), 'b waiting');
    expect(b.lines.some((l) => l.startsWith('started b'))).toBe(false);
    a.go();
    await b.started('b');
    b.go();
    expect([(await a.exited).code, (await b.exited).code]).toEqual([0, 0]);
  }, 60_000);

  test('an option of the command\'s before COMMAND is refused (exit 64), with the way out', async () => {
    const env = freshEnv(), marker = join(env.dir, 'ran');
    const r = await latchkey(['run', 'x', '-j4', ...touch(marker)], env);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/^latchkey: run: unknown option '-j'.*put '--' before a COMMAND.*\n$/);
    expect(fs.existsSync(marker)).toBe(false);
  }, 30_000);
});

describe('latchkey run -c', () => {
  test('runs the shell command with $SHELL -c, holding the lock; its status is latchkey\'s', async () => {
    const env = freshEnv(), out = join(env.dir, 'out');
    const r = await latchkey(['run', 'shell', '-c', `echo "$LATCHKEY_NAME $LATCHKEY_TOKEN" > '${out}'; exit 7`], env);
    expect(r.code, r.stderr).toBe(7);
    const [name, token] = fs.readFileSync(out, 'utf8').trim().split(' ');
    expect(name).toBe('shell');
    expect(Number(token)).toBeGreaterThan(0);
  }, 30_000);

  test('the shell is $SHELL when set, else /bin/sh', async () => {
    const env = freshEnv(), out = join(env.dir, 'out');
    const shell = join(env.dir, 'my-shell');
    // A "shell" that records how it was called, then runs /bin/sh with the same arguments.
    fs.writeFileSync(shell, `#!/bin/sh\necho "$@" > '${out}'\nexec /bin/sh "$@"\n`, { mode: 0o755 });
    const l = new Latchkey(['run', 'shell', '-c', 'exit 3'], env, { SHELL: shell });
    l.proc.stdin!.end();
    expect((await l.exited).code).toBe(3);
    expect(fs.readFileSync(out, 'utf8')).toBe('-c exit 3\n');
  }, 30_000);

  test('-c together with a COMMAND, or an empty -c, is refused (exit 64), nothing run', async () => {
    const env = freshEnv(), marker = join(env.dir, 'ran');
    const both = await latchkey(['run', 'x', '-c', `touch '${marker}'`, ...touch(marker)], env);
    expect(both.code).toBe(64);
    expect(both.stderr).toMatch(/-c and a COMMAND cannot be used together/);
    const empty = await latchkey(['run', 'x', '-c', ''], env);
    expect(empty.code).toBe(64);
    expect(fs.existsSync(marker)).toBe(false);
  }, 30_000);
});

describe('latchkey run -E CODE', () => {
  test('-E sets the status of --nonblock finding the lock held, and of --wait running out; the command never runs', async () => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps'), marker = join(env.dir, 'ran');
    const a = new Latchkey(holdArgs('e', stamps, 'a'), env);
    await a.started('a');
    const conflict = await latchkey(['run', '-n', '-E', '9', 'e', ...touch(marker)], env);
    expect(conflict.code).toBe(9);
    expect(conflict.stderr).toMatch(/is taken/);
    const timeout = await latchkey(['run', '--wait', '0.2', '--conflict-exit-code', '0', 'e', '--', ...touch(marker)], env);
    expect(timeout.code).toBe(0);
    expect(timeout.stderr).toMatch(/timed out after 0\.2 s/);
    expect(fs.existsSync(marker)).toBe(false);
    a.go();
    expect((await a.exited).code).toBe(0);
    // Free: -E does not touch the command's own status.
    const ran = await latchkey(['run', '-n', '-E', '9', 'e', process.execPath, '-e', 'process.exit(4)'], env);
    expect(ran.code).toBe(4);
  }, 60_000);

  test.each([['256'], ['-1'], ['x'], ['1.5']])('-E %s is refused (exit 64)', async (code) => {
    const env = freshEnv(), marker = join(env.dir, 'ran');
    const r = await latchkey(['run', `--conflict-exit-code=${code}`, 'x', ...touch(marker)], env);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/-E must be an integer from 0 to 255/);
    expect(fs.existsSync(marker)).toBe(false);
  }, 30_000);
});

describe('a lock store that cannot be used: exit 69, never 70', () => {
  /** The directory of name `x` in the file backend's lock directory, after one run made it. */
  async function nameDir(dir: string): Promise<string> {
    const env = { dir, backend: 'file' as const };
    expect((await latchkey(['run', 'x', 'true'], env)).code).toBe(0);
    const entry = fs.readdirSync(dir).find((e) => e.startsWith('x~'));
    expect(entry).toBeDefined();
    return join(dir, entry!);
  }

  test.each([
    ['a symbolic link where the token file belongs (ELOOP)', (seq: string) => fs.symlinkSync('/etc/hostname', seq)],
    ['a directory where the token file belongs (EISDIR)', (seq: string) => fs.mkdirSync(seq)],
  ])('%s: run exits 69 with one line naming the file, the command not run; status still answers', async (_what, spoil) => {
    const env = freshEnv(), marker = join(env.dir, 'ran');
    const seq = join(await nameDir(env.dir), 'seq');
    fs.rmSync(seq);
    spoil(seq);
    const r = await latchkey(['run', 'x', ...touch(marker)], env);
    expect(r.code, r.stderr).toBe(EXIT_UNAVAILABLE);
    expect(r.stderr).toMatch(/^latchkey: [^\n]*seq[^\n]*\n$/);
    expect(r.stderr).not.toContain('internal error');
    expect(fs.existsSync(marker)).toBe(false);
    expect((await status(env)).locks).toEqual([]);
  }, 30_000);
});

describe('latchkey status NAME and the holder\'s token', () => {
  test('status NAME shows only that name\'s holders, waiters and grant count', async () => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('one', stamps, 'a'), env);
    const b = new Latchkey(holdArgs('two', stamps, 'b'), env);
    await Promise.all([a.started('a'), b.started('b')]);
    const r = await latchkey(['status', '--json', 'two'], env);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { locks: Array<{ name: string; pid: number }>; hot: Array<{ name: string }> };
    expect(report.locks.map((l) => [l.name, l.pid])).toEqual([['two', b.pid]]);
    expect(report.hot.map((h) => h.name)).toEqual(['two']);
    const both = JSON.parse((await latchkey(['status', '--json', 'one', 'two', 'none'], env)).stdout) as typeof report;
    expect(both.locks.map((l) => l.name).sort()).toEqual(['one', 'two']);
    const text = await latchkey(['status', 'one'], env);
    expect(text.stdout).toMatch(/^one\s+held\s/m);
    expect(text.stdout).not.toMatch(/^two\s/m);
    a.go();
    b.go();
    await Promise.all([a.exited, b.exited]);
  }, 60_000);

  test.each(['file', 'sqlite'] as const)('status shows the token the holder sees (LATCHKEY_TOKEN), %s backend', async (backend) => {
    const env = freshEnv(backend), stamps = join(env.dir, 'stamps');
    for (let i = 0; i < 3; i++) expect((await latchkey(['run', 'tok', 'true'], env)).code).toBe(0);
    const a = new Latchkey(holdArgs('tok', stamps, 'a'), env);
    const seen = await a.started('a');
    const held = (await status(env)).locks.find((l) => l.name === 'tok' && l.state === 'held')!;
    expect(held.token).toBe(seen.token);
    expect(held.hostToken).toBe(4); // the fourth host grant of the name
    const text = await latchkey(['status', 'tok'], env);
    expect(text.stdout).toMatch(new RegExp(`^tok\\s+held\\s+exclusive\\s+${a.pid}\\s+${seen.token}\\s`, 'm'));
    a.go();
    await a.exited;
  }, 60_000);
});
