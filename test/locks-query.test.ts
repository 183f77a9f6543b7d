// locks.query() on one thread, after the web-platform-tests
// web-locks/query.https.any.js (the cross-thread cases are in locks-workers.test.ts).
import { describe, expect, test, vi } from 'vitest';
import { threadId } from 'node:worker_threads';
import { locks } from '../src/index.js';
import type { LockInfo } from '../src/index.js';
import { deferred, hold, namer } from './locks-helpers.js';

// A lock that is never granted should fail a test in seconds, not after the global minute.
vi.setConfig({ testTimeout: 10_000 });

const uniqueName = namer('locks-query');

const named = (list: LockInfo[], names: string[]) => list.filter((l) => names.includes(l.name));
const myClientId = `${process.pid}:${threadId}`;

describe('locks.query()', () => {
  test('locks.query(): returns a promise of { held, pending } arrays', async () => {
    const p = locks.query();
    expect(p).toBeInstanceOf(Promise);
    const state = await p;
    expect(Array.isArray(state.held)).toBe(true);
    expect(Array.isArray(state.pending)).toBe(true);
  });

  test('locks.query(): entries have name, mode and clientId', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const entries = named((await locks.query()).held, [name]);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toEqual({ name, mode: 'exclusive', clientId: expect.any(String) });
    h.release();
    await h.done;
  });

  test('locks.query(): reports individual held locks', async () => {
    const a = uniqueName('a'), b = uniqueName('b');
    const ha = await hold(a), hb = await hold(b, { mode: 'shared' });
    const held = named((await locks.query()).held, [a, b]);
    expect(held.map(({ name, mode }) => ({ name, mode }))).toEqual(expect.arrayContaining([
      { name: a, mode: 'exclusive' }, { name: b, mode: 'shared' },
    ]));
    expect(held).toHaveLength(2);
    ha.release();
    hb.release();
    await Promise.all([ha.done, hb.done]);
  });

  test('locks.query(): reports held and pending requests in request order', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const modes = ['shared', 'exclusive', 'shared', 'shared', 'exclusive'] as const;
    const ps = modes.map((mode) => locks.request(name, { mode }, () => {}));
    const { held, pending } = await locks.query();
    expect(named(held, [name]).map((l) => l.mode)).toEqual(['exclusive']);
    expect(named(pending, [name]).map((l) => l.mode)).toEqual([...modes]);
    h.release();
    await Promise.all(ps);
  });

  test('locks.query(): pending requests of several names each keep their own order', async () => {
    const a = uniqueName('a'), b = uniqueName('b');
    const ha = await hold(a), hb = await hold(b);
    const ps = [
      locks.request(a, { mode: 'shared' }, () => {}),
      locks.request(b, () => {}),
      locks.request(a, () => {}),
      locks.request(b, { mode: 'shared' }, () => {}),
    ];
    const { pending } = await locks.query();
    expect(named(pending, [a]).map((l) => l.mode)).toEqual(['shared', 'exclusive']);
    expect(named(pending, [b]).map((l) => l.mode)).toEqual(['exclusive', 'shared']);
    ha.release();
    hb.release();
    await Promise.all([...ps, ha.done, hb.done]);
  });

  test('locks.query(): every shared holder of a name is listed', async () => {
    const name = uniqueName();
    const hs = [await hold(name, { mode: 'shared' }), await hold(name, { mode: 'shared' }), await hold(name, { mode: 'shared' })];
    const held = named((await locks.query()).held, [name]);
    expect(held).toEqual([1, 2, 3].map(() => ({ name, mode: 'shared', clientId: myClientId })));
    for (const h of hs) h.release();
    await Promise.all(hs.map((h) => h.done));
  });

  test('locks.query(): clientId is present and the same for every request of one thread', async () => {
    const a = uniqueName('a'), b = uniqueName('b');
    const ha = await hold(a), hb = await hold(b, { mode: 'shared' });
    const p = locks.request(a, { mode: 'shared' }, () => {});
    const { held, pending } = await locks.query();
    const ids = [...named(held, [a, b]), ...named(pending, [a, b])].map((l) => l.clientId);
    expect(ids).toHaveLength(3);
    expect(new Set(ids)).toEqual(new Set([myClientId]));
    ha.release();
    hb.release();
    await Promise.all([p, ha.done, hb.done]);
  });

  test('locks.query(): clientId is `${process.pid}:${threadId}` of the requesting thread', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const [entry] = named((await locks.query()).held, [name]);
    expect(entry.clientId).toBe(`${process.pid}:${threadId}`);
    h.release();
    await h.done;
  });

  test('locks.query(): a released lock is no longer listed', async () => {
    const name = uniqueName();
    await locks.request(name, () => {});
    const { held, pending } = await locks.query();
    expect(named([...held, ...pending], [name])).toEqual([]);
  });

  test('locks.query(): a granted pending request moves from pending to held', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const next = deferred<void>(), until = deferred<void>();
    const p = locks.request(name, { mode: 'shared' }, () => {
      next.resolve();
      return until.promise;
    });
    expect(named((await locks.query()).pending, [name])).toHaveLength(1);
    h.release();
    await next.promise;
    const { held, pending } = await locks.query();
    expect(named(held, [name]).map((l) => l.mode)).toEqual(['shared']);
    expect(named(pending, [name])).toEqual([]);
    until.resolve();
    await Promise.all([p, h.done]);
  });

  test('locks.query(): a lock taken with lockSync() is listed as held', async () => {
    const name = uniqueName();
    const g = locks.lockSync(name, { mode: 'shared' })!;
    expect(named((await locks.query()).held, [name])).toEqual([{ name, mode: 'shared', clientId: myClientId }]);
    g.unlock();
    expect(named((await locks.query()).held, [name])).toEqual([]);
  });

  test('locks.query(): names with lone surrogates and the empty string are reported as given', async () => {
    const names = ['', '\uD800', 'x\uDFFF'];
    const hs = await Promise.all(names.map((n) => hold(n)));
    const held = named((await locks.query()).held, names);
    expect(held.map((l) => l.name).sort()).toEqual([...names].sort());
    for (const h of hs) h.release();
    await Promise.all(hs.map((h) => h.done));
  });

  test('locks.query(): the returned snapshot does not change afterwards', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const state = await locks.query();
    h.release();
    await h.done;
    expect(named(state.held, [name])).toHaveLength(1);
  });
});
