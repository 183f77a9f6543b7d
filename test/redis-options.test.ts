// Cluster scope on Redis: what the front door offers, across real
// processes through a real redis-server: FIFO order, shared and exclusive
// in Web Locks order, timeout and abort of queued requests (they leave the
// queue; aborts racing the hand-over leave nothing behind), ifAvailable,
// query() from another process, steal (the evicted holder is told at
// once), lockSync() in a worker thread.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { readersThenWriter } from './fixtures/tier-util.js';
import {
  type Child, forgetRedisNames, holdersOf, keyOf, msBetween, raw, redisChild, redisCleanup, redisUrl, uniquePrefix, until, waitingPids,
} from './fixtures/redis-util.js';
import { clientIdOf } from './fixtures/cluster-util.js';

redisUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('opts');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;

afterEach(redisCleanup);
afterAll(() => forgetRedisNames(PREFIX));

/** Resolves once the server's queue for `name` lists `pids` (in that order, nobody else). */
async function queued(name: string, ...pids: number[]): Promise<void> {
  const c = await raw();
  await until(`the queue of ${name} is [${pids.join(', ')}]`, async () => JSON.stringify(await waitingPids(c, name)) === JSON.stringify(pids));
}

/** Nothing of `name` left on the server: no holder, no waiter. */
async function empty(name: string): Promise<void> {
  const c = await raw();
  await until(`nothing of ${name} left on the server`, async () => (await holdersOf(c, name)).length === 0
    && Number(await c.send(['ZCARD', keyOf(name, 'q')])) === 0 && Number(await c.send(['HLEN', keyOf(name, 'w')])) === 0, 2000);
}

describe('Redis cluster options', () => {
  test('FIFO across processes: five waiters, each queued after the one before, are granted in that order', async () => {
    const name = fresh('fifo');
    const kids = await Promise.all(Array.from({ length: 6 }, () => redisChild()));
    const [holder, ...waiters] = kids as [Child, ...Child[]];
    expect(await holder.call('lock', { key: 'h', name })).toMatchObject({ granted: true });
    for (let i = 0; i < waiters.length; i++) {
      const w = waiters[i]!;
      expect(await w.call('request', { key: 'w', name, opts: { timeout: 20_000, mode: i % 2 === 1 ? 'shared' : 'exclusive' } })).toMatchObject({ queued: true });
      await queued(name, ...waiters.slice(0, i + 1).map((x) => x.pid));
    }
    await holder.call('unlock', { key: 'h' });
    const grants: { i: number; at: bigint; token: number }[] = [];
    for (let k = 0; k < waiters.length; k++) {
      // Whoever is granted now holds it a moment, then lets go: the next in line follows.
      const g = await Promise.race(waiters.map((w, i) => w.peek((m) => m.ev === 'granted' && !grants.some((x) => x.i === i), 10_000, 'a grant')
        .then((m) => ({ i, at: m.at as bigint, token: m.token as number }))));
      grants.push(g);
      await new Promise((r) => setTimeout(r, 20));
      await waiters[g.i]!.call('release', { key: 'w' });
    }
    expect(grants.map((g) => g.i), 'grant order').toEqual([0, 1, 2, 3, 4]);
    for (let k = 1; k < grants.length; k++) expect(grants[k]!.token).toBeGreaterThan(grants[k - 1]!.token);
  }, 40_000);

  test('shared across processes: two readers in at once, a writer waits for both; a reader behind a queued writer waits too (Web Locks order)', async () => {
    const name = fresh('shared');
    const [a, b, c, d] = await Promise.all([redisChild(), redisChild(), redisChild(), redisChild()]);
    await readersThenWriter(a, b, c, name, 300);
    // A reader holds; a writer queues; a second reader comes: it waits behind the writer, it does not join.
    expect(await a.call('lock', { key: 'r1', name, opts: { mode: 'shared' } })).toMatchObject({ granted: true });
    expect(await c.call('request', { key: 'w', name, opts: { timeout: 10_000 } })).toMatchObject({ queued: true });
    await queued(name, c.pid);
    expect(await d.call('request', { key: 'r2', name, opts: { mode: 'shared', timeout: 10_000 } })).toMatchObject({ queued: true });
    await queued(name, c.pid, d.pid);
    const u = await a.call('unlock', { key: 'r1' });
    const w = await c.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the writer');
    expect(msBetween(u.t0, w.at)).toBeLessThan(1000);
    expect(d.seen((m) => m.ev === 'granted'), 'the reader got in beside the writer').toBe(false);
    await c.call('release', { key: 'w' });
    const r2 = await d.next((m) => m.ev === 'granted' && m.key === 'r2', 10_000, 'the second reader');
    expect(r2.token).toBeGreaterThan(w.token);
    await d.call('release', { key: 'r2' });
  }, 40_000);

  test('timeout: ERR_LOCK_TIMEOUT, and the request leaves the server\'s queue', async () => {
    const name = fresh('timeout');
    const [holder, waiter] = await Promise.all([redisChild(), redisChild()]);
    expect(await holder.call('lock', { key: 'h', name })).toMatchObject({ granted: true });
    const t0 = performance.now();
    const r = await waiter.call('lock', { key: 'w', name, opts: { timeout: 400 } });
    const ms = performance.now() - t0;
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    expect(ms).toBeGreaterThanOrEqual(390);
    await queued(name); // nobody
    expect(await holder.call('unlock', { key: 'h' })).toMatchObject({ ok: true });
    await empty(name);
  }, 30_000);

  test('aborts racing the hand-over (before, with, after the release), 24 times: each is granted or aborted, and nothing is left behind', async () => {
    const name = fresh('abort');
    const [holder, waiter] = await Promise.all([redisChild(), redisChild()]);
    let granted = 0, aborted = 0;
    for (let i = 0; i < 24; i++) {
      expect(await holder.call('lock', { key: 'h', name, opts: { timeout: 10_000 } })).toMatchObject({ granted: true });
      const key = `w${i}`;
      expect(await waiter.call('request', { key, name, abortable: true, opts: { timeout: 10_000 } })).toMatchObject({ queued: true });
      await queued(name, waiter.pid);
      // Two messages sent back to back to two processes: the abort and the release race in the server.
      const order = i % 3;
      if (order === 0) waiter.send({ op: 'abort', key });
      const unlocked = holder.call('unlock', { key: 'h' });
      if (order === 1) waiter.send({ op: 'abort', key });
      if (order === 2) setTimeout(() => waiter.send({ op: 'abort', key }), 1);
      await unlocked;
      const settled = await waiter.next((m) => m.ev === 'settled' || (m.ev === 'granted' && m.key === key), 10_000, 'the outcome');
      if (settled.ev === 'granted') {
        granted++;
        await waiter.call('release', { key });
        expect(await waiter.next((m) => m.ev === 'settled' && m.key === key)).toMatchObject({ ok: true });
      } else {
        expect(settled).toMatchObject({ key, ok: false, error: { name: 'AbortError' } });
        aborted++;
      }
    }
    await empty(name);
    // Free afterwards, for anyone.
    const g = await holder.call('lock', { key: 'f', name, opts: { ifAvailable: true } });
    expect(g).toMatchObject({ granted: true, abandoned: false });
    console.log(`[redis abort races] ${granted} granted first, ${aborted} aborted`);
    expect(aborted).toBeGreaterThan(0);
  }, 60_000);

  test('ifAvailable: null while another process holds it; granted once it is free; granted, abandoned, once its holder died', async () => {
    const name = fresh('ifavail');
    const [holder, other] = await Promise.all([redisChild(), redisChild()]);
    const h = await holder.call('lock', { key: 'h', name });
    expect(await other.call('lock', { key: 'o', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await other.call('lockSync', { key: 'o', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    await queued(name); // an ifAvailable request never queues
    holder.kill('SIGKILL');
    await holder.exited;
    // The holder's connection is gone: the one attempt finds it so, and takes the lock.
    const g = await other.call('lock', { key: 'o2', name, opts: { ifAvailable: true } });
    expect(g).toMatchObject({ granted: true, abandoned: true });
    expect(g.token).toBeGreaterThan(h.token);
    expect(await other.call('unlock', { key: 'o2' })).toMatchObject({ ok: true });
  }, 30_000);

  test('query() from a third process lists holders and waiters of every process, with their modes', async () => {
    const [name1, name2] = [fresh('q1'), fresh('q2')];
    const [a, b, c, d, observer] = await Promise.all(Array.from({ length: 5 }, () => redisChild()));
    expect(await a.call('lock', { key: 'x', name: name1 })).toMatchObject({ granted: true });
    expect(await b.call('request', { key: 'y', name: name1, opts: { timeout: 10_000 } })).toMatchObject({ queued: true });
    expect(await c.call('lock', { key: 's', name: name2, opts: { mode: 'shared' } })).toMatchObject({ granted: true });
    expect(await d.call('lock', { key: 's', name: name2, opts: { mode: 'shared' } })).toMatchObject({ granted: true });
    await queued(name1, b.pid);
    const r = await observer.call('query');
    expect(r.ok).toBe(true);
    const mine = (list: { name: string }[]) => list.filter((e) => e.name === name1 || e.name === name2);
    const held = mine(r.q.held), pending = mine(r.q.pending);
    expect(held).toEqual(expect.arrayContaining([
      { name: name1, mode: 'exclusive', clientId: clientIdOf(a.pid) },
      { name: name2, mode: 'shared', clientId: clientIdOf(c.pid) },
      { name: name2, mode: 'shared', clientId: clientIdOf(d.pid) },
    ]));
    expect(held).toHaveLength(3);
    expect(pending).toEqual([{ name: name1, mode: 'exclusive', clientId: clientIdOf(b.pid) }]);
  }, 30_000);

  test('steal: granted at once, ahead of the queue; the evicted holder is told at once (AbortError); the queue goes on after the stealer', async () => {
    const name = fresh('steal');
    const [holder, waiter, thief] = await Promise.all([redisChild(), redisChild(), redisChild()]);
    expect(await holder.call('request', { key: 'h', name })).toMatchObject({ queued: true });
    const h = await holder.next((m) => m.ev === 'granted' && m.key === 'h');
    expect(await waiter.call('request', { key: 'w', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await queued(name, waiter.pid);
    const t = await thief.call('lock', { key: 't', name, opts: { steal: true } });
    expect(t).toMatchObject({ granted: true });
    expect(t.token).toBeGreaterThan(h.token);
    // The evicted holder: its lock.signal aborts and its request() rejects, with the steal's AbortError, at once.
    const aborted = await holder.next((m) => m.ev === 'aborted' && m.key === 'h', 5000, 'the holder told');
    expect(aborted.error).toMatchObject({ name: 'AbortError' });
    expect(msBetween(t.at, aborted.at)).toBeLessThan(500);
    expect(await holder.next((m) => m.ev === 'settled' && m.key === 'h', 5000)).toMatchObject({ ok: false, error: { name: 'AbortError' } });
    expect(waiter.seen((m) => m.ev === 'granted'), 'the waiter got in beside the thief').toBe(false);
    // Its callback ends (it returns): that release is of a lock it no longer holds, and changes nothing.
    await holder.call('release', { key: 'h' });
    const c = await raw();
    expect((await holdersOf(c, name)).map((x) => x.pid)).toEqual([thief.pid]);
    expect(await thief.call('unlock', { key: 't' })).toMatchObject({ ok: true });
    const w = await waiter.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the waiter after the thief');
    expect(w.token).toBeGreaterThan(t.token);
    // ifAvailable and shared still refuse steal, as the spec says.
    expect(await thief.call('lock', { key: 'x', name, opts: { steal: true, ifAvailable: true } })).toMatchObject({ granted: false, error: { name: 'NotSupportedError' } });
    expect(await thief.call('lock', { key: 'x', name, opts: { steal: true, mode: 'shared' } })).toMatchObject({ granted: false, error: { name: 'NotSupportedError' } });
    console.log(`[redis steal] the evicted holder told ${msBetween(t.at, aborted.at).toFixed(1)} ms after the thief's grant`);
  }, 30_000);

  test('steal from a process whose own request already waits in the server: the steal goes out at once, ahead of it', async () => {
    const name = fresh('steal-own');
    const [holder, p] = await Promise.all([redisChild(), redisChild()]);
    expect(await holder.call('request', { key: 'h', name })).toMatchObject({ queued: true });
    const h = await holder.next((m) => m.ev === 'granted' && m.key === 'h');
    expect(await p.call('request', { key: 'w', name, opts: { timeout: 30_000 } })).toMatchObject({ queued: true });
    await queued(name, p.pid);
    // The steal queues ahead of the process's own waiting request: that one stands down (leaves the
    // server's queue) and the steal goes out, instead of waiting behind it for the holder, forever.
    const t = await p.call('lock', { key: 't', name, opts: { steal: true, timeout: 10_000 } });
    expect(t, JSON.stringify(t.error)).toMatchObject({ granted: true });
    expect(t.token).toBeGreaterThan(h.token);
    expect((await holder.next((m) => m.ev === 'aborted' && m.key === 'h', 5000, 'the holder told')).error).toMatchObject({ name: 'AbortError' });
    expect(p.seen((m) => m.ev === 'granted' && m.key === 'w'), 'the waiting request got in beside the stealer').toBe(false);
    // After the stealer, the request that stood down is granted (it waited on in its process).
    expect(await p.call('unlock', { key: 't' })).toMatchObject({ ok: true });
    const w = await p.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the waiting request after the steal');
    expect(w.token).toBeGreaterThan(t.token);
    await holder.call('release', { key: 'h' });
    await p.call('release', { key: 'w' });
    await empty(name);
  }, 40_000);

  test('lockSync() in a worker thread blocks that worker only; the main thread runs on; a thread of the same process then waits for it', async () => {
    const name = fresh('sync');
    const [p, other] = await Promise.all([redisChild(), redisChild()]);
    expect(await p.call('syncWorker', { key: 'k', name, opts: { timeout: 10_000 } })).toMatchObject({ started: true });
    const g = await p.next((m) => m.ev === 'worker-granted' && m.key === 'k', 10_000, 'the worker\'s grant');
    expect(g.token).toBeGreaterThan(0);
    const ping = await p.call('ping');
    expect(ping.ok).toBe(true);
    expect(await other.call('lock', { key: 'o', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await p.call('lock', { key: 'm', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await p.call('workerUnlock', { key: 'k' })).toMatchObject({ ok: true });
    const o = await other.call('lock', { key: 'o', name, opts: { timeout: 5000 } });
    expect(o).toMatchObject({ granted: true });
    expect(o.token).toBeGreaterThan(g.token);
  }, 30_000);
});
