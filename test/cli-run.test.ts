// `latchkey run NAME -- COMMAND`: mutual exclusion between real latchkey
// processes, the command's exit status passed through, --nonblock and
// --wait failing with their own codes without running the command, and the
// lock given back when the command is killed and when latchkey itself is.
// Sequenced by what the commands print and read (fixtures/cli-util.ts), and
// by `latchkey status` showing a waiter, never by sleeping.
import { afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import {
  type BackendKind, Latchkey, RMW, cleanup, freshEnv, holdArgs, hr, latchkey, msSince, orphan, readStamps, untilStatus, waiting,
} from './fixtures/cli-util.js';

afterEach(cleanup);

const EXIT_CONFLICT = 75, EXIT_TIMEOUT = 124;

describe.each(['file', 'sqlite'] as const)('latchkey run (%s backend)', (backend: BackendKind) => {
  test('two latchkey runs of one NAME never overlap, and both run', async () => {
    const env = freshEnv(backend), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('build', stamps, 'a'), env);
    const first = await a.started('a');
    const b = new Latchkey(holdArgs('build', stamps, 'b'), env);
    // b has tried and waits: only now is "b did not start" a fact and not a race.
    await untilStatus(env, waiting('build', b.pid), 'b waiting');
    expect(b.lines.some((l) => l.startsWith('started b'))).toBe(false);
    a.go();
    expect(await a.exited).toEqual({ code: 0, signal: null });
    const second = await b.started('b');
    b.go();
    expect(await b.exited).toEqual({ code: 0, signal: null });
    expect(readStamps(stamps).map(([kind, label]) => `${kind} ${label}`)).toEqual(['start a', 'end a', 'start b', 'end b']);
    expect(second.token).toBeGreaterThan(first.token);
    expect([first.abandoned, second.abandoned]).toEqual(['0', '0']);
  }, 60_000);

  test('four concurrent latchkey runs doing a read-modify-write: exact count, no two commands overlap', async () => {
    const env = freshEnv(backend), counter = join(env.dir, 'counter'), stamps = join(env.dir, 'stamps');
    fs.writeFileSync(counter, '0');
    const runs = Array.from({ length: 4 }, (_, i) => new Latchkey(['run', 'rmw', '--', process.execPath, '-e', RMW, counter, stamps, `r${i}`], env));
    const exits = await Promise.all(runs.map((r) => r.exited));
    expect(exits.map((e) => e.code), runs.map((r) => r.stderr).join('')).toEqual([0, 0, 0, 0]);
    expect(fs.readFileSync(counter, 'utf8')).toBe('4');
    const spans = fs.readFileSync(stamps, 'utf8').trim().split('\n').map((l) => l.split(' ').slice(1).map(BigInt)).sort((x, y) => (x[0]! < y[0]! ? -1 : 1));
    expect(spans).toHaveLength(4);
    for (let i = 1; i < spans.length; i++) expect(spans[i]![0]!).toBeGreaterThan(spans[i - 1]![1]!);
  }, 60_000);

  test('--nonblock while another process holds NAME exits 75 at once, without running the command', async () => {
    const env = freshEnv(backend), stamps = join(env.dir, 'stamps'), marker = join(env.dir, 'ran');
    const a = new Latchkey(holdArgs('build', stamps, 'a'), env);
    await a.started('a');
    const r = await latchkey(['run', '--nonblock', 'build', '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`], env);
    expect(r.code).toBe(EXIT_CONFLICT);
    expect(fs.existsSync(marker)).toBe(false);
    expect(r.stderr).toMatch(/^latchkey: .*"build".*\n$/);
    expect(r.stderr).toContain(`pid ${a.pid}`);
    a.go();
    expect((await a.exited).code).toBe(0);
    // Free again: --nonblock takes it and runs the command.
    const again = await latchkey(['run', '-n', 'build', '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`], env);
    expect(again.code).toBe(0);
    expect(fs.existsSync(marker)).toBe(true);
  }, 60_000);

  test('--wait 0.3 while another process holds NAME exits 124 after 0.3 s, without running the command', async () => {
    const env = freshEnv(backend), stamps = join(env.dir, 'stamps'), marker = join(env.dir, 'ran');
    const a = new Latchkey(holdArgs('build', stamps, 'a'), env);
    await a.started('a');
    const t0 = hr();
    const r = await latchkey(['run', '--wait', '0.3', 'build', '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`], env);
    const took = msSince(t0);
    expect(r.code, r.stderr).toBe(EXIT_TIMEOUT);
    expect(r.stderr).toMatch(/^latchkey: timed out after 0\.3 s .*"build".*\n$/);
    expect(fs.existsSync(marker)).toBe(false);
    // At least the wait; at most the wait plus a node start-up on a loaded machine.
    expect(took).toBeGreaterThanOrEqual(300);
    expect(took).toBeLessThan(5000);
    a.go();
    expect((await a.exited).code).toBe(0);
  }, 60_000);

  test('the lock is given back when the command is SIGKILLed: latchkey exits 137 and a waiting run gets it', async () => {
    const env = freshEnv(backend), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('build', stamps, 'a'), env);
    const cmd = await a.started('a');
    const b = new Latchkey(holdArgs('build', stamps, 'b'), env);
    await untilStatus(env, waiting('build', b.pid), 'b waiting');
    process.kill(cmd.pid, 'SIGKILL');
    expect(await a.exited).toEqual({ code: 128 + 9, signal: null });
    const got = await b.started('b');
    // latchkey gave it back itself: the next holder is not told of a death.
    expect(got.abandoned).toBe('0');
    b.go();
    expect((await b.exited).code).toBe(0);
  }, 60_000);

  test('the lock is given back when latchkey itself is SIGKILLed: a waiting run gets it within 2 s, abandoned', async () => {
    const env = freshEnv(backend), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('build', stamps, 'a'), env);
    const cmd = await a.started('a');
    orphan(cmd.pid); // a's command outlives a
    const b = new Latchkey(holdArgs('build', stamps, 'b'), env);
    await untilStatus(env, waiting('build', b.pid), 'b waiting');
    const killed = hr();
    a.kill('SIGKILL');
    const got = await b.started('b');
    // The host tier sees the dead pid at its next look (~100 ms), not at the end of the 10 s lease.
    expect(msSince(killed)).toBeLessThan(2000);
    expect(got.abandoned).toBe('1');
    expect((await a.exited).signal).toBe('SIGKILL');
    b.go();
    expect((await b.exited).code).toBe(0);
  }, 60_000);
});

describe('latchkey run: the command and its status', () => {
  test('the command\'s exit status is passed through', async () => {
    const env = freshEnv();
    for (const code of [0, 1, 7, 255]) {
      const r = await latchkey(['run', 'x', '--', process.execPath, '-e', `process.exit(${code})`], env);
      expect(r, r.stderr).toMatchObject({ code, signal: null });
    }
  }, 60_000);

  test('a command killed by a signal makes latchkey exit 128 + the signal number', async () => {
    const env = freshEnv();
    const r = await latchkey(['run', 'x', '--', process.execPath, '-e', 'process.kill(process.pid, "SIGKILL")'], env);
    expect(r.code).toBe(128 + 9);
  }, 30_000);

  test('a command that is not found exits 127, one that cannot be executed 126, each with one line on stderr', async () => {
    const env = freshEnv(), notExec = join(env.dir, 'not-executable');
    fs.writeFileSync(notExec, 'echo hi\n', { mode: 0o644 });
    const missing = await latchkey(['run', 'x', '--', 'latchkey-no-such-command-xyz'], env);
    expect(missing.code).toBe(127);
    expect(missing.stderr).toMatch(/^latchkey: cannot run "latchkey-no-such-command-xyz": command not found\n$/);
    const denied = await latchkey(['run', 'x', '--', notExec], env);
    expect(denied.code).toBe(126);
    expect(denied.stderr).toMatch(/^latchkey: cannot run .*\n$/);
    // Neither left the lock held.
    expect((await latchkey(['run', '-n', 'x', '--', process.execPath, '-e', ''], env)).code).toBe(0);
  }, 60_000);

  test('the command gets LATCHKEY_NAME and a LATCHKEY_TOKEN that grows from run to run; arguments reach it as given', async () => {
    const env = freshEnv();
    const script = 'console.log(JSON.stringify([process.env.LATCHKEY_NAME, process.env.LATCHKEY_TOKEN, process.argv.slice(1)]))';
    const tokens: number[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await latchkey(['run', 'name with spaces', '--', process.execPath, '-e', script, '--', '--flag', '', 'a b', '--'], env);
      expect(r.code, r.stderr).toBe(0);
      const [name, token, args] = JSON.parse(r.stdout) as [string, string, string[]];
      expect(name).toBe('name with spaces');
      expect(args).toEqual(['--flag', '', 'a b', '--']);
      tokens.push(Number(token));
    }
    expect(tokens[1]).toBeGreaterThan(tokens[0]!);
  }, 60_000);

  test('--scope thread excludes only latchkey\'s own threads: a second process runs while the first holds NAME', async () => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('t', stamps, 'a', ['--scope', 'thread']), env);
    await a.started('a');
    const b = new Latchkey(holdArgs('t', stamps, 'b', ['--scope', 'thread', '--nonblock']), env);
    await b.started('b');
    b.go();
    a.go();
    expect([(await a.exited).code, (await b.exited).code]).toEqual([0, 0]);
  }, 60_000);

  test('--shared runs share the lock: two shared holders run at once, an exclusive one waits for both', async () => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps');
    const s1 = new Latchkey(holdArgs('db', stamps, 's1', ['--shared']), env);
    const s2 = new Latchkey(holdArgs('db', stamps, 's2', ['-s']), env);
    await Promise.all([s1.started('s1'), s2.started('s2')]);
    const x = new Latchkey(holdArgs('db', stamps, 'x'), env);
    await untilStatus(env, waiting('db', x.pid), 'x waiting');
    s1.go();
    expect((await s1.exited).code).toBe(0);
    await untilStatus(env, waiting('db', x.pid), 'x still waiting');
    expect(x.lines.some((l) => l.startsWith('started x'))).toBe(false);
    s2.go();
    expect((await s2.exited).code).toBe(0);
    await x.started('x');
    x.go();
    expect((await x.exited).code).toBe(0);
    const order = readStamps(stamps).map(([k, l]) => `${k} ${l}`);
    expect(order.slice(-2)).toEqual(['start x', 'end x']);
  }, 60_000);
});
