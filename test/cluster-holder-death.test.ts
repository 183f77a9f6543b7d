// Cluster scope: a holder process that dies (SIGKILL) loses its PostgreSQL
// session, and with it the advisory lock, at once: a waiting process is
// granted within 1 s of the kill, told `abandoned`, with a larger token.
// And the converse: a holder that gave the lock back before it exited did
// not die holding it, so nobody is told it did.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  clusterChild, clusterCleanup, forgetNames, hr, msBetween, pgClient, pgUrl, uniquePrefix, useServerGate, waitingOnServer,
} from './fixtures/cluster-util.js';
import { hostFixture } from './fixtures/host-util.js';
import { askerToldOfDeath, oneOfTwoToldOfDeath, waiterToldOfDeath } from './fixtures/tier-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('death');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

describe('cluster holder death', () => {
  test('a waiting process gets the lock within 1 s of the holder\'s SIGKILL, abandoned, with a larger token', async () => {
    const name = fresh('victim');
    const [holder, waiter] = await Promise.all([clusterChild(), clusterChild()]);
    // The holder tells the parent (IPC reply) once it holds the lock; the
    // waiter is really waiting once the server lists it.
    const ms = await waiterToldOfDeath(holder, waiter, name, async () => {
      await waitingOnServer(await pgClient(), name, waiter.pid);
    });
    console.log(`[holder death] granted ${ms.toFixed(1)} ms after the SIGKILL`);
  }, 30_000);

  test('a process that asks right after the SIGKILL gets it within 1 s, abandoned', async () => {
    const name = fresh('after');
    const [holder, next] = await Promise.all([clusterChild(), clusterChild()]);
    await askerToldOfDeath(holder, next, name);
  }, 30_000);

  test('two processes wait: exactly one of them is told the holder died', async () => {
    const name = fresh('two');
    const [holder, w1, w2] = await Promise.all([clusterChild(), clusterChild(), clusterChild()]);
    await oneOfTwoToldOfDeath(holder, w1, w2, name, 300);
  }, 30_000);

  test('a shared holder killed: the writer waiting behind it is granted within 1 s, with a larger token', async () => {
    const name = fresh('reader');
    const [reader, writer] = await Promise.all([clusterChild(), clusterChild()]);
    const r = await reader.call('lock', { key: 'r', name, opts: { mode: 'shared' } });
    expect(r).toMatchObject({ granted: true, mode: 'shared' });
    expect(await writer.call('request', { key: 'w', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await new Promise((res) => setTimeout(res, 300));
    expect(writer.seen((m) => m.ev === 'granted')).toBe(false);
    const killedAt = hr();
    reader.kill('SIGKILL');
    const g = await writer.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the grant');
    expect(msBetween(killedAt, g.at)).toBeLessThan(1000);
    expect(g).toMatchObject({ mode: 'exclusive' });
    expect(g.token).toBeGreaterThan(r.token);
  }, 30_000);

  // A holder that released before exiting did not die holding it.
  test('holders that unlock() and then process.exit() at once: the next holder is NOT told abandoned', async () => {
    const name = fresh('clean-exit');
    // Three rounds: the release races the exit, and may win by luck once.
    const told: boolean[] = [];
    let last = 0;
    for (let round = 0; round < 3; round++) {
      const first = await clusterChild();
      const h = await first.call('lock', { key: 'h', name, opts: { timeout: 5000 } });
      expect(h).toMatchObject({ granted: true });
      expect(h.token).toBeGreaterThan(last);
      if (round > 0) told.push(h.abandoned as boolean);
      first.send({ id: 999, op: 'unlockExit', key: 'h' });
      expect(await first.exited).toMatchObject({ code: 0 });
      last = h.token as number;
    }
    const next = await clusterChild();
    const g = await next.call('lock', { key: 'n', name, opts: { timeout: 5000 } });
    expect(g).toMatchObject({ granted: true });
    expect(g.token).toBeGreaterThan(last);
    told.push(g.abandoned as boolean);
    expect(told, 'each previous holder unlocked before it exited: abandoned must be false').toEqual([false, false, false]);
  }, 30_000);

  test('scripts that lock, unlock and end one after the other: none is told abandoned', async () => {
    const name = fresh('scripts');
    const runs: Array<{ token: number; abandoned: boolean }> = [];
    for (let i = 0; i < 3; i++) {
      const { stdout } = await promisify(execFile)(process.execPath, [hostFixture('cluster-once'), name], {
        env: { ...process.env, LATCHKEY_PG_URL: pgUrl() }, timeout: 15_000,
      });
      runs.push(JSON.parse(stdout.trim()) as { token: number; abandoned: boolean });
    }
    for (let i = 1; i < runs.length; i++) expect(runs[i]!.token).toBeGreaterThan(runs[i - 1]!.token);
    expect(runs.map((r) => r.abandoned), 'each script unlocked before it ended').toEqual([false, false, false]);
  }, 30_000);
});
