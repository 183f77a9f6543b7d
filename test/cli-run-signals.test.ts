// `latchkey run`: SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to latchkey reach
// the command; received while latchkey waits for the lock they end the wait
// (128 + n, the command never runs, the wait is withdrawn); and a lock lost
// while the command runs (stolen by another process) is reported on stderr,
// the command is sent SIGTERM and latchkey exits 76.
import { afterEach, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { constants } from 'node:os';
import {
  FIXTURES, Latchkey, childEnv, cleanup, freshEnv, holdArgs, readStamps, status, untilStatus, waiting,
} from './fixtures/cli-util.js';

afterEach(cleanup);

const EXIT_LOST = 76;
const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const;

describe('latchkey run forwards signals to the command', () => {
  test.each(signals)('%s to latchkey reaches the command; latchkey exits with the command\'s status', async (signal) => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('x', stamps, 'a', [], true), env);
    await a.started('a');
    a.kill(signal);
    await a.line((l) => l === `got ${signal}`, 20_000, `the command to get ${signal}`);
    expect(await a.exited).toEqual({ code: 3, signal: null });
    expect(a.stderr).toBe('');
  }, 30_000);

  test('SIGTERM to latchkey kills a command that does not handle it: latchkey exits 128 + 15', async () => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('x', stamps, 'a'), env);
    await a.started('a');
    a.kill('SIGTERM');
    expect(await a.exited).toEqual({ code: 128 + constants.signals.SIGTERM, signal: null });
    // And the lock is free.
    const b = new Latchkey(holdArgs('x', stamps, 'b', ['--nonblock']), env);
    await b.started('b');
    b.go();
    expect((await b.exited).code).toBe(0);
  }, 30_000);
});

describe('a signal while latchkey waits for the lock', () => {
  test.each(['SIGTERM', 'SIGINT'] as const)('%s ends the wait: 128 + n, the command never runs, the wait is withdrawn', async (signal) => {
    const env = freshEnv(), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('x', stamps, 'a'), env);
    await a.started('a');
    const b = new Latchkey(holdArgs('x', stamps, 'b'), env);
    await untilStatus(env, waiting('x', b.pid), 'b waiting');
    b.kill(signal);
    expect(await b.exited).toEqual({ code: 128 + constants.signals[signal], signal: null });
    expect(readStamps(stamps).map(([k, l]) => `${k} ${l}`)).toEqual(['start a']);
    const after = await status(env);
    expect(after.locks.filter((l) => l.pid === b.pid)).toEqual([]);
    expect(after.locks.filter((l) => l.pid === a.pid).map((l) => l.state)).toEqual(['held']);
    a.go();
    expect((await a.exited).code).toBe(0);
  }, 30_000);
});

describe.each(['file', 'sqlite'] as const)('a lock lost while the command runs (%s backend)', (backend) => {
  test('stolen by another process: latchkey says so on stderr, sends the command SIGTERM and exits 76', async () => {
    const env = freshEnv(backend), stamps = join(env.dir, 'stamps');
    const a = new Latchkey(holdArgs('x', stamps, 'a', [], true), env);
    await a.started('a');
    const thief = spawn(process.execPath, [join(FIXTURES, 'cli-steal.js'), 'x'], { env: childEnv(env), stdio: ['ignore', 'pipe', 'inherit'] });
    let stole = '';
    thief.stdout!.setEncoding('utf8').on('data', (d: string) => (stole += d));
    const thiefExit = new Promise<number | null>((resolve) => thief.once('close', resolve));
    await a.line((l) => l === 'got SIGTERM', 20_000, 'the command to get SIGTERM');
    expect(await a.exited).toEqual({ code: EXIT_LOST, signal: null });
    expect(a.stderr).toMatch(/^latchkey: Lock "x" was stolen: .*; sending SIGTERM to the command\n$/);
    expect(await thiefExit).toBe(0);
    expect(stole).toMatch(/^stole \d+\n$/);
  }, 30_000);
});
