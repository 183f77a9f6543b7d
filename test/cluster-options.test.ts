// Cluster scope, the request options and the edges of the backend, across
// real processes on the real server: timeout, ifAvailable, shared, steal,
// query() across processes, lockSync() in a worker thread, the process's
// connection count whatever its threads and locks, and a server that cannot
// be used (closed port, a role without rights, an unknown role).
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import {
  Child, backendsOf, clientIdOf, closeClients, closedPort, clusterChild, clusterCleanup, forgetNames, hr, msBetween, pgClient, pgPort, pgUrl,
  portsTo, serverLocks, uniquePrefix, useServerGate,
} from './fixtures/cluster-util.js';
import { keyOf } from '../src/bridge/cluster/postgres-schema.js';
import type pg from 'pg';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('opts');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

type Entry = { name: string; mode: string; clientId: string };
const mine = (list: Entry[], prefix: string) => list.filter((e) => e.name.startsWith(prefix));

/** ifAvailable until granted: unlock() returns before the agent has given the lock back to the server (one round trip). */
async function lockWhenFree(c: Child, key: string, name: string, opts: Record<string, unknown> = {}, ms = 1000): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  for (;;) {
    const r = await c.call('lock', { key, name, opts: { ...opts, ifAvailable: true } });
    if (r.granted === true || performance.now() - t0 > ms) return r;
    await sleep(2);
  }
}

/** Sessions of process `pid` waiting for (or holding) `name` in the server's lock manager. */
async function rowsFor(c: pg.Client, what: 'waiting' | 'holding', name: string, pid: number): Promise<number> {
  return (await serverLocks(c, name)).filter((x) => x.pid === pid && x.granted === (what === 'holding')).length;
}

describe('cluster options', () => {
  test('timeout: ERR_LOCK_TIMEOUT, and the request leaves (not pending in query(), nothing kept on the server)', async () => {
    const name = fresh('timeout');
    const pg = await pgClient();
    const [a, b, c] = await Promise.all([clusterChild(), clusterChild(), clusterChild()]);
    const h = await a.call('lock', { key: 'h', name });
    expect(h).toMatchObject({ granted: true });
    // lock()
    const t = await b.call('lock', { key: 'b', name, opts: { timeout: 300 } });
    expect(t).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    const waited = msBetween(t.t0, t.at);
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(waited).toBeLessThan(2000);
    // request()
    expect(await b.call('request', { key: 'r', name, opts: { timeout: 300 } })).toMatchObject({ queued: true });
    expect(await b.next((m) => m.ev === 'settled' && m.key === 'r', 5000)).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    // lockSync()
    expect(await b.call('lockSync', { key: 's', name, opts: { timeout: 300 } })).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    // Gone: not pending anywhere.
    const q = await c.call('query');
    expect(q.ok).toBe(true);
    expect(mine(q.q.pending, name), 'pending after the timeouts').toEqual([]);
    expect(mine(q.q.held, name)).toEqual([{ name, mode: 'exclusive', clientId: clientIdOf(a.pid) }]);
    expect(await rowsFor(pg, 'waiting', name, b.pid)).toBe(0);
    // Nothing kept in the background: once the holder lets go, a third process gets it, and b never did.
    expect(await a.call('unlock', { key: 'h' })).toMatchObject({ ok: true });
    const g = await lockWhenFree(c, 'c', name);
    expect(g, 'a timed-out request must not take the lock later').toMatchObject({ granted: true });
    expect(await rowsFor(pg, 'holding', name, b.pid)).toBe(0);
    expect(b.seen((m) => m.ev === 'granted')).toBe(false);
    expect(await c.call('unlock', { key: 'c' })).toMatchObject({ ok: true });
  }, 30_000);

  test('ifAvailable: null while another process holds it, granted once it is free', async () => {
    const name = fresh('ifav');
    const [a, b] = await Promise.all([clusterChild(), clusterChild()]);
    const h = await a.call('lock', { key: 'h', name });
    expect(h).toMatchObject({ granted: true });
    const t0 = performance.now();
    expect(await b.call('lock', { key: 'b', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await b.call('lockSync', { key: 'b', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await b.call('request', { key: 'r', name, opts: { ifAvailable: true } })).toMatchObject({ queued: true });
    expect(await b.next((m) => m.ev === 'unavailable' && m.key === 'r')).toBeDefined();
    expect(await b.next((m) => m.ev === 'settled' && m.key === 'r')).toMatchObject({ ok: true, value: 'unavailable' });
    expect(performance.now() - t0, 'ifAvailable answers without waiting').toBeLessThan(2000);
    // Shared is not available beside an exclusive holder either.
    expect(await b.call('lock', { key: 'b', name, opts: { ifAvailable: true, mode: 'shared' } })).toMatchObject({ granted: false });
    expect(await a.call('unlock', { key: 'h' })).toMatchObject({ ok: true });
    const g = await lockWhenFree(b, 'b', name);
    expect(g).toMatchObject({ granted: true, abandoned: false });
    expect(g.token as number).toBeGreaterThan(h.token);
    // And the other way round.
    expect(await a.call('lock', { key: 'h', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await b.call('unlock', { key: 'b' })).toMatchObject({ ok: true });
  }, 30_000);

  test('shared: three processes read at once, a writer is not available until all have left', async () => {
    const name = fresh('shared');
    const [a, b, c, w] = await Promise.all([clusterChild(), clusterChild(), clusterChild(), clusterChild()]);
    const readers = [a, b, c];
    const grants = [];
    for (const r of readers) grants.push(await r.call('lock', { key: 'r', name, opts: { mode: 'shared', timeout: 5000 } }));
    for (const g of grants) expect(g).toMatchObject({ granted: true, mode: 'shared' });
    const q = await w.call('query');
    expect(mine(q.q.held, name).sort((x, y) => x.clientId.localeCompare(y.clientId)))
      .toEqual(readers.map((r) => ({ name, mode: 'shared', clientId: clientIdOf(r.pid) })).sort((x, y) => x.clientId.localeCompare(y.clientId)));
    expect(await w.call('lock', { key: 'w', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    const waiting = w.call('lock', { key: 'w', name, opts: { timeout: 10_000 } }, 15_000);
    let lastAt = 0n;
    for (const r of readers) {
      await sleep(100);
      expect(w.seen((m) => m.granted === true), 'the writer got in beside a reader').toBe(false);
      lastAt = (await r.call('unlock', { key: 'r' })).at as bigint;
    }
    const g = await waiting;
    expect(g).toMatchObject({ granted: true, mode: 'exclusive' });
    expect(g.at).toBeGreaterThan(lastAt);
    expect(g.token).toBeGreaterThan(Math.max(...grants.map((x) => x.token as number)));
    expect(await w.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
  }, 30_000);

  test('steal: NotSupportedError, as a rejected promise (lock(), request()) or a throw (lockSync()); the holder keeps its lock', async () => {
    const name = fresh('steal');
    const [a, b] = await Promise.all([clusterChild(), clusterChild()]);
    const h = await a.call('lock', { key: 'h', name });
    expect(h).toMatchObject({ granted: true });
    const r = await b.call('request', { key: 'r', name, opts: { steal: true } });
    expect(r, 'request() rejects, it does not throw').toMatchObject({ queued: true });
    expect(await b.next((m) => m.ev === 'settled' && m.key === 'r')).toMatchObject({ ok: false, error: { name: 'NotSupportedError' } });
    expect(await b.call('lock', { key: 'l', name, opts: { steal: true } })).toMatchObject({ granted: false, error: { name: 'NotSupportedError' } });
    expect(await b.call('lockSync', { key: 's', name, opts: { steal: true } })).toMatchObject({ granted: false, error: { name: 'NotSupportedError' } });
    // Even with nobody holding it.
    expect(await b.call('lock', { key: 'l', name: fresh('steal-free'), opts: { steal: true } })).toMatchObject({ granted: false, error: { name: 'NotSupportedError' } });
    await sleep(100);
    expect(a.seen((m) => m.ev === 'aborted' || m.ev === 'compromised')).toBe(false);
    expect(b.seen((m) => m.ev === 'granted')).toBe(false);
    expect(await a.call('unlock', { key: 'h' })).toMatchObject({ ok: true });
  }, 30_000);

  test('query() from one process lists a lock another holds (held) and a third waits for (pending)', async () => {
    const name = fresh('query'), other = fresh('query-shared');
    const [holder, waiter, reader, asker] = await Promise.all([clusterChild(), clusterChild(), clusterChild(), clusterChild()]);
    expect(await holder.call('lock', { key: 'h', name })).toMatchObject({ granted: true });
    expect(await reader.call('lock', { key: 'r', name: other, opts: { mode: 'shared' } })).toMatchObject({ granted: true });
    expect(await waiter.call('request', { key: 'w', name })).toMatchObject({ queued: true });
    const deadline = performance.now() + 5000;
    let q: { held: Entry[]; pending: Entry[] };
    for (;;) {
      const r = await asker.call('query');
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      q = r.q;
      if (mine(q.pending, PREFIX).length > 0 || performance.now() > deadline) break;
      await sleep(50);
    }
    expect(mine(q.held, PREFIX).sort((x, y) => x.name.localeCompare(y.name))).toEqual([
      { name, mode: 'exclusive', clientId: clientIdOf(holder.pid) },
      { name: other, mode: 'shared', clientId: clientIdOf(reader.pid) },
    ]);
    expect(mine(q.pending, PREFIX)).toEqual([{ name, mode: 'exclusive', clientId: clientIdOf(waiter.pid) }]);
    // Once the holder lets go: the waiter holds it, and nothing is pending.
    expect(await holder.call('unlock', { key: 'h' })).toMatchObject({ ok: true });
    const g = await waiter.next((m) => m.ev === 'granted' && m.key === 'w', 5000, 'the waiter\'s grant');
    expect(g).toBeDefined();
    const after = (await holder.call('query')).q as { held: Entry[]; pending: Entry[] };
    expect(mine(after.held, name)).toEqual([{ name, mode: 'exclusive', clientId: clientIdOf(waiter.pid) }]);
    expect(mine(after.pending, name)).toEqual([]);
    await waiter.call('release', { key: 'w' });
    expect(await reader.call('unlock', { key: 'r' })).toMatchObject({ ok: true });
  }, 30_000);

  test('lockSync() in a worker thread blocks that worker only: the main thread runs on', async () => {
    const name = fresh('sync-worker');
    const [a, b] = await Promise.all([clusterChild(), clusterChild()]);
    const h = await a.call('lock', { key: 'h', name });
    expect(h).toMatchObject({ granted: true });
    expect(await b.call('syncWorker', { key: 'w', name, opts: { timeout: 15_000 } })).toMatchObject({ started: true });
    // While the worker is blocked in lockSync(), b's main thread answers at once and its timers tick.
    const first = await b.call('ping');
    let slowest = 0;
    for (let i = 0; i < 10; i++) {
      await sleep(50);
      const t0 = hr(), p = await b.call('ping');
      slowest = Math.max(slowest, msBetween(t0, p.at));
    }
    const last = await b.call('ping');
    expect(slowest, 'the main thread answered within').toBeLessThan(100);
    expect(last.ticks - first.ticks, '5 ms ticks of the main thread while the worker waited').toBeGreaterThan(40);
    expect(b.seen((m) => m.ev === 'worker-granted' || m.ev === 'worker-failed'), 'the worker got past lockSync() while a held it').toBe(false);
    const unlocked = await a.call('unlock', { key: 'h' });
    const g = await b.next((m) => (m.ev === 'worker-granted' || m.ev === 'worker-failed') && m.key === 'w', 5000, 'the worker\'s grant');
    expect(g).toMatchObject({ ev: 'worker-granted' });
    expect(g.at).toBeGreaterThan(unlocked.t0); // t0: just before a.unlock(), which may return after the grant
    expect(g.token).toBeGreaterThan(h.token);
    // Held by b's worker: not available to a.
    expect(await a.call('lock', { key: 'h', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await b.call('workerUnlock', { key: 'w' })).toMatchObject({ ok: true });
    expect(await b.next((m) => m.ev === 'worker-unlocked' && m.key === 'w')).toMatchObject({ ok: true });
    // Contrast: lockSync() on b's main thread does block it.
    expect(await a.call('lock', { key: 'h2', name, opts: { timeout: 5000 } })).toMatchObject({ granted: true });
    const blocked = b.call('lockSync', { key: 'm', name, opts: { timeout: 5000 } }, 10_000);
    await sleep(50);
    let answered = false;
    const pinged = b.call('ping', {}, 10_000).then((m) => ((answered = true), m));
    await sleep(300);
    expect(answered, 'b answered a ping while its main thread was in lockSync()').toBe(false);
    const release2 = await a.call('unlock', { key: 'h2' });
    const [bg, bp] = await Promise.all([blocked, pinged]);
    expect(bg).toMatchObject({ granted: true });
    expect(bp.at).toBeGreaterThan(release2.t0);
    expect(await b.call('unlock', { key: 'm' })).toMatchObject({ ok: true });
  }, 30_000);

  test('8 threads of one process holding 20 cluster locks each use at most 2 connections', async () => {
    const prefix = fresh('conns');
    const pg = await pgClient();
    const countAll = async () => Number((await pg.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name LIKE 'latchkey%'`)).rows[0].n);
    const before = await countAll();
    const c = await clusterChild();
    expect(portsTo(c.pid, pgPort()), 'connections before any cluster lock').toEqual([]);
    const r = await c.call('threads', { prefix, threads: 8, per: 20 }, 30_000);
    expect(r.ok, JSON.stringify(r.error)).toBe(true);
    expect(r.tokens).toHaveLength(160); // each a fresh name: its first token, 1 × 1000
    expect(new Set(r.tokens)).toEqual(new Set([1000]));
    const during = await countAll();
    // This process's own connections: its sockets to the server, as the server sees them.
    const ports = portsTo(c.pid, pgPort());
    const rows = await backendsOf(pg, c.pid);
    console.log(`[connections] child sockets to the server: ${ports.length}; its backends: ${JSON.stringify(rows.map((x) => x.application_name))}; all 'latchkey%' backends before ${before}, during ${during}`);
    expect(ports.length, 'sockets the process has open to the server').toBeLessThanOrEqual(2);
    expect(rows.length).toBe(ports.length);
    // Every connection is the process's (its application_name names the process's channel).
    expect(new Set(rows.map((x) => x.application_name)).size).toBe(1);
    expect(rows[0]!.application_name).toMatch(/^latchkey lk_[0-9a-f]{16}$/);
    // Every lock is held on the server, by the one session.
    const keys = Array.from({ length: 8 }, (_, t) => Array.from({ length: 20 }, (_, i) => keyOf(`${prefix}-${t}-${i}`))).flat();
    const held = await pg.query<{ n: string; sessions: string }>(
      `SELECT count(*) AS n, count(DISTINCT pid) AS sessions FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
         AND ((classid::bigint << 32) | objid::bigint) = ANY($1::bigint[]) AND pid = ANY($2::int[])`, [keys, rows.map((x) => x.pid)]);
    expect(held.rows[0]).toEqual({ n: '160', sessions: '1' });
    expect(await c.call('threadsRelease', {}, 20_000)).toMatchObject({ ok: true });
  }, 40_000);

  test('an unreachable server (closed port): ERR_LOCK_BACKEND within a few seconds, for every call; nothing held', async () => {
    const port = await closedPort();
    const c = await clusterChild({ LATCHKEY_PG_URL: `postgres://latchkey@127.0.0.1:${port}/latchkey` });
    const name = fresh('unreachable');
    for (const [op, opts] of [['lock', {}], ['lock', {}], ['lock', { ifAvailable: true }], ['lock', { mode: 'shared' }], ['lockSync', {}]] as const) {
      const t0 = performance.now();
      const r = await c.call(op, { key: 'x', name, opts }, 10_000);
      expect(r, `${op} ${JSON.stringify(opts)}`).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
      expect(r.error.message).toMatch(/cannot be reached/);
      expect(performance.now() - t0).toBeLessThan(5000);
    }
    expect(await c.call('request', { key: 'r', name })).toMatchObject({ queued: true });
    expect(await c.next((m) => m.ev === 'settled' && m.key === 'r', 5000)).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
    expect(c.seen((m) => m.ev === 'granted')).toBe(false);
    const q = await c.call('query', {}, 15_000);
    expect(q, 'query() of an unreachable server').toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
    // Still alive and answering.
    expect(await c.call('ping')).toMatchObject({ ok: true });
  }, 30_000);

  describe('a role the server will not let latchkey work with', () => {
    const tag = `${process.pid}_${Math.floor(Math.random() * 1e9)}`;
    const role = `lk_norights_${tag}`, db = `lk_norights_${tag}_db`;
    // On a connection of its own: afterEach closes the tests' clients.
    afterAll(async () => {
      await clusterCleanup();
      const admin = await pgClient();
      try {
        await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
        await admin.query(`DROP ROLE IF EXISTS ${role}`);
      } finally {
        await closeClients();
      }
    });

    test('a role that may not create tables (its own database, CREATE on public revoked): ERR_LOCK_BACKEND, lacking rights', async () => {
      const pg = await pgClient();
      await pg.query(`CREATE ROLE ${role} LOGIN`);
      await pg.query(`CREATE DATABASE ${db}`);
      const u = new URL(pgUrl());
      u.pathname = `/${db}`;
      const owner = await pgClient(u.toString());
      // PostgreSQL 15 already grants PUBLIC only USAGE on public; older ones granted CREATE too.
      await owner.query('REVOKE CREATE ON SCHEMA public FROM PUBLIC');
      await owner.end();
      u.username = role;
      const c = await clusterChild({ LATCHKEY_PG_URL: u.toString() });
      const name = fresh('norights');
      for (const [op, opts] of [['lock', {}], ['lock', { ifAvailable: true }], ['lockSync', {}]] as const) {
        const t0 = performance.now();
        const r = await c.call(op, { key: 'x', name, opts }, 10_000);
        expect(r, `${op} ${JSON.stringify(opts)}`).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
        expect(r.error.message).toMatch(/lacks the rights/);
        expect(performance.now() - t0).toBeLessThan(5000);
      }
      expect(await c.call('query', {}, 15_000)).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
      const tables = await pg.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [db]);
      expect(tables.rowCount).toBe(1);
    }, 30_000);

    test('a role that does not exist: ERR_LOCK_BACKEND, refused', async () => {
      const u = new URL(pgUrl());
      u.username = `${role}_missing`;
      const c = await clusterChild({ LATCHKEY_PG_URL: u.toString() });
      const r = await c.call('lock', { key: 'x', name: fresh('norole') }, 10_000);
      expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
      expect(r.error.message).toMatch(/refused the role/);
    }, 30_000);
  });
});
