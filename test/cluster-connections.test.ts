// Cluster scope: a process's connections to the server stay within
// LATCHKEY_PG_CONNECTIONS (default 8, home included), whatever it waits
// for at once. One connection (home) serves every try and uncontended
// grant; each wait parked in the server takes one more; at the bound, a
// further wait polls with tries on home instead of parking, and is granted
// all the same once the lock is free. A value that is not an integer ≥ 2
// is refused before anything is asked of the server.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import {
  type Child, clusterCleanup, clusterKid, forgetNames, pgClient, pgPort, pgUrl, portsTo, serverLocks, uniquePrefix, untilServer, useServerGate,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('conns');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

/** `waiter` waits for all of `names` at once while `holder` holds them; its sockets to the server, sampled until all are granted. */
async function waitForAll(holder: Child, waiter: Child, names: string[]): Promise<{ most: number; ms: number; parked: number }> {
  const pg = await pgClient();
  expect(await holder.call('many', { names })).toMatchObject({ ok: true });
  const all = waiter.call('many', { names, opts: { timeout: 20_000 } }, 25_000);
  let most = 0, done = false;
  void all.finally(() => (done = true));
  const sample = (async () => {
    while (!done && !waiter.gone) {
      try {
        most = Math.max(most, portsTo(waiter.pid, pgPort()).length);
      } catch {
        break; // it exited (the test failed)
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  // Some of its waits parked in the server (as many as it has parking connections): any of them.
  for (const deadline = Date.now() + 5000; ;) {
    if ((await Promise.all(names.map((x) => serverLocks(pg, x)))).some((l) => l.some((k) => !k.granted && k.pid === waiter.pid))) break;
    if (Date.now() > deadline) throw new Error(`process ${waiter.pid} never waited in the server for any of ${names.length} names`);
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 300));
  let parked = 0;
  for (const name of names) {
    const r = await pg.query(`SELECT count(*)::int AS n FROM pg_locks k WHERE k.locktype = 'advisory' AND NOT k.granted AND k.objsubid = 1
      AND ((k.classid::bigint << 32) | k.objid::bigint) = (SELECT key FROM latchkey_live WHERE name = $1)`, [name]);
    parked += r.rows[0].n as number;
  }
  const t0 = performance.now();
  expect(await holder.call('unlockMany', {})).toMatchObject({ ok: true });
  const got = await all;
  const ms = performance.now() - t0;
  await sample;
  expect(got, 'every wait granted once the holder let go').toMatchObject({ ok: true });
  expect(got.tokens).toHaveLength(names.length);
  expect(await waiter.call('unlockMany', {})).toMatchObject({ ok: true });
  for (const name of names) await untilServer(pg, name, (l) => l.length === 0, `${name} let go`, 3000);
  return { most, ms, parked };
}

describe('cluster connections per process', () => {
  test('LATCHKEY_PG_CONNECTIONS=2: 3 waits at once use 2 connections (one parks, two poll), and all are granted', async () => {
    const names = [0, 1, 2].map((i) => fresh(`b${i}`));
    const [holder, waiter] = await Promise.all([clusterKid(), clusterKid({ LATCHKEY_PG_CONNECTIONS: '2' })]);
    const r = await waitForAll(holder, waiter, names);
    console.log(`[connections bound 2] at most ${r.most} sockets; ${r.parked} of 3 waits parked in the server; all granted ${r.ms.toFixed(0)} ms after the release`);
    expect(r.most).toBeLessThanOrEqual(2);
    expect(r.parked).toBe(1);
    expect(r.ms).toBeLessThan(3000);
  }, 40_000);

  test('default (8): 12 waits at once use at most 8 connections, 7 of them parked, and all are granted', async () => {
    const names = Array.from({ length: 12 }, (_, i) => fresh(`d${i}`));
    const [holder, waiter] = await Promise.all([clusterKid(), clusterKid()]);
    const r = await waitForAll(holder, waiter, names);
    console.log(`[connections default] at most ${r.most} sockets; ${r.parked} of 12 waits parked in the server; all granted ${r.ms.toFixed(0)} ms after the release`);
    expect(r.most).toBeLessThanOrEqual(8);
    expect(r.parked).toBe(7);
    expect(r.ms).toBeLessThan(3000);
  }, 40_000);

  test('LATCHKEY_PG_CONNECTIONS that is not an integer ≥ 2: ERR_LOCK_BACKEND naming it, before any connection', async () => {
    for (const value of ['1', '2.5', 'lots']) {
      const c = await clusterKid({ LATCHKEY_PG_CONNECTIONS: value });
      const r = await c.call('lock', { key: 'x', name: fresh('bad') });
      expect(r, `LATCHKEY_PG_CONNECTIONS=${value}`).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
      expect(r.error.message).toMatch(/LATCHKEY_PG_CONNECTIONS must be an integer ≥ 2/);
      expect(portsTo(c.pid, pgPort())).toEqual([]);
    }
  }, 30_000);
});
