// Cluster scope: a waiter parked in the server (a session blocked in
// PostgreSQL's lock manager) that times out (the server's lock_timeout), is
// aborted (pg_cancel_backend), or whose process dies leaves nothing held
// or queued on the server, and never takes the lock later; an abort that
// races the grant, round after round, leaves nothing either (granted: the
// requester gives it back; not: nothing was taken).
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import {
  type Child, type ServerLock, clusterCleanup, clusterKid, forgetNames, hr, msBetween, pgClient, pgUrl, serverLocks, uniquePrefix, untilServer,
  useServerGate, waitingOnServer,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('parked');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

const holders = (l: ServerLock[]) => l.filter((x) => x.granted);
const waiters = (l: ServerLock[]) => l.filter((x) => !x.granted);

/** `count` processes with their cluster agent up and connected (it starts on first use: that can take a few hundred ms). */
async function kids(count: number): Promise<Child[]> {
  const all = await Promise.all(Array.from({ length: count }, () => clusterKid()));
  for (const k of all) {
    const warm = fresh('warm');
    expect(await k.call('lock', { key: warm, name: warm })).toMatchObject({ granted: true });
    expect(await k.call('unlock', { key: warm })).toMatchObject({ ok: true });
  }
  return all;
}

describe('cluster waiter parked in the server', () => {
  test('times out: ERR_LOCK_TIMEOUT at its timeout, and then nothing of it is queued or held on the server', async () => {
    const name = fresh('timeout');
    const pg = await pgClient();
    const [a, b] = await kids(2) as [Child, Child];
    expect(await a.call('lock', { key: 'h', name })).toMatchObject({ granted: true });
    // Once parked (b's first wait on this name is a try, then a park: time it from a second request).
    expect(await b.call('lock', { key: 'w', name, opts: { timeout: 50 } })).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    const t0 = hr();
    const waiting = b.call('lock', { key: 'w', name, opts: { timeout: 400 } });
    await waitingOnServer(pg, name, b.pid);
    const r = await waiting;
    const ms = msBetween(t0, r.at);
    console.log(`[parked timeout] timed out ${ms.toFixed(0)} ms after the request (timeout 400)`);
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    expect(ms).toBeGreaterThanOrEqual(390);
    expect(ms).toBeLessThan(1500);
    const l = await serverLocks(pg, name);
    expect(waiters(l), 'queued for it after the timeout').toEqual([]);
    expect(holders(l).map((x) => x.pid)).toEqual([a.pid]);
    // Nothing in the background takes it later.
    expect(await a.call('unlock', { key: 'h' })).toMatchObject({ ok: true });
    await untilServer(pg, name, (x) => x.length === 0, 'the lock free', 3000);
    await sleep(200);
    expect(await serverLocks(pg, name)).toEqual([]);
  }, 30_000);

  test('aborted: AbortError at the abort, and then nothing of it is queued or held on the server', async () => {
    const name = fresh('abort');
    const pg = await pgClient();
    const [a, b] = await kids(2) as [Child, Child];
    expect(await a.call('lock', { key: 'h', name })).toMatchObject({ granted: true });
    const abortAt = hr() + 300_000_000n;
    const waiting = b.call('lock', { key: 'w', name, abortAtNs: abortAt.toString() });
    await waitingOnServer(pg, name, b.pid);
    const r = await waiting;
    console.log(`[parked abort] settled ${msBetween(abortAt, r.at).toFixed(1)} ms after the abort`);
    expect(r).toMatchObject({ granted: false, error: { name: 'AbortError' } });
    expect(msBetween(abortAt, r.at)).toBeLessThan(1000);
    // The requester is told at once; its session leaves the server's queue one round trip later (pg_cancel_backend).
    const l = await untilServer(pg, name, (x) => waiters(x).length === 0, 'the aborted wait gone from the server', 1000);
    expect(holders(l).map((x) => x.pid)).toEqual([a.pid]);
    expect(await a.call('unlock', { key: 'h' })).toMatchObject({ ok: true });
    await untilServer(pg, name, (x) => x.length === 0, 'the lock free', 3000);
    await sleep(200);
    expect(await serverLocks(pg, name)).toEqual([]);
    // And the process can wait for it again (its parking connection was left clean).
    expect(await a.call('lock', { key: 'h2', name })).toMatchObject({ granted: true });
    const again = b.call('lock', { key: 'w2', name, opts: { timeout: 5000 } });
    await waitingOnServer(pg, name, b.pid);
    expect(await a.call('unlock', { key: 'h2' })).toMatchObject({ ok: true });
    expect(await again).toMatchObject({ granted: true, abandoned: false });
    expect(await b.call('unlock', { key: 'w2' })).toMatchObject({ ok: true });
  }, 30_000);

  test('aborts racing the grant, 24 rounds: each either gets the lock (and gives it back) or not, and nothing is left held or queued', async () => {
    const name = fresh('race');
    const pg = await pgClient();
    const [a, b] = await kids(2) as [Child, Child];
    let granted = 0, aborted = 0;
    for (let round = 0; round < 24; round++) {
      expect(await a.call('lock', { key: 'h', name })).toMatchObject({ granted: true });
      // The release at t, the abort from 2 ms before to 9 ms after: before the grant reaches b, as it comes, after.
      const t = hr() + 150_000_000n, abortAt = t + BigInt((round % 12) - 2) * 1_000_000n;
      const waiting = b.call('lock', { key: 'w', name, abortAtNs: abortAt.toString(), opts: { timeout: 10_000 } });
      expect(await a.call('unlock', { key: 'h', atNs: t.toString() })).toMatchObject({ ok: true });
      const r = await waiting;
      if (r.granted === true) {
        granted++;
        expect(await b.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
      } else {
        aborted++;
        expect(r.error).toMatchObject({ name: 'AbortError' });
      }
      await untilServer(pg, name, (l) => l.length === 0, `round ${round}: nothing held or queued`, 3000);
    }
    console.log(`[parked race] ${granted} granted (given back), ${aborted} aborted`);
    expect(granted + aborted).toBe(24);
    expect(aborted, 'rounds where the abort won').toBeGreaterThan(0);
  }, 60_000);

  test('its process killed: it leaves the queue, and the waiter behind it is granted at the release', async () => {
    const name = fresh('killed');
    const pg = await pgClient();
    const [a, b, c] = await kids(3) as [Child, Child, Child];
    expect(await a.call('lock', { key: 'h', name })).toMatchObject({ granted: true });
    void b.call('lock', { key: 'w', name, opts: { timeout: 20_000 } }, 25_000).catch(() => {});
    await waitingOnServer(pg, name, b.pid);
    const cWaits = c.call('lock', { key: 'w', name, opts: { timeout: 20_000 } }, 25_000);
    await waitingOnServer(pg, name, c.pid);
    b.kill('SIGKILL');
    await b.exited;
    // The server notices the dead waiter's socket (at once here: the kernel closes it) and drops it from the queue.
    await untilServer(pg, name, (l) => waiters(l).length === 1, 'the dead waiter gone from the queue', 3000);
    const unlocked = await a.call('unlock', { key: 'h' });
    const g = await cWaits;
    console.log(`[parked killed] c granted ${msBetween(unlocked.t0, g.at).toFixed(1)} ms after the release`);
    expect(g).toMatchObject({ granted: true, abandoned: false });
    expect(msBetween(unlocked.t0, g.at)).toBeLessThan(1000);
    expect(holders(await serverLocks(pg, name)).map((x) => x.pid)).toEqual([c.pid]);
    expect(await c.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
  }, 30_000);
});
