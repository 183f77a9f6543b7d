// The guard API of the front door: locks.lock() / locks.lockSync(), and the
// `timeout` option (of request() too).
import { afterEach, describe, expect, test, vi } from 'vitest';
import type { Worker } from 'node:worker_threads';
import { LockGuard, locks } from '../src/index.js';
import type { LockRequestOptions } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';
import { available, hold, namer, pendingOf } from './locks-helpers.js';

// A lock that is never granted should fail a test in seconds, not after the global minute.
vi.setConfig({ testTimeout: 10_000 });

const uniqueName = namer('locks-guard');

const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
});

/** A worker holding `name` (locks-roles 'hold') until its word 2 is set. */
async function workerHolding(name: string) {
  const ctl = control(8);
  const w = start('locks-roles', { role: 'hold', name, control: ctl.buffer });
  workers.push(w);
  const report = result<{ events: string[] }>(w);
  await until(ctl, 1, 1);
  return { ctl, report, release: () => signalWord(ctl, 2) };
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('did not throw');
}

describe('locks.lock() and locks.lockSync()', () => {
  test('locks.lockSync(): returns a guard holding the lock; unlock() releases it', async () => {
    const name = uniqueName();
    const g = locks.lockSync(name);
    expect(g).toBeInstanceOf(LockGuard);
    expect(g!.name).toBe(name);
    expect(g!.mode).toBe('exclusive');
    expect(g!.held).toBe(true);
    expect(await available(name)).toBe(false);
    g!.unlock();
    expect(g!.held).toBe(false);
    expect(await available(name)).toBe(true);
  });

  test('locks.lock(): resolves to a guard holding the lock; unlock() releases it', async () => {
    const name = uniqueName();
    const g = await locks.lock(name, { mode: 'shared' });
    expect(g).toBeInstanceOf(LockGuard);
    expect(g!.mode).toBe('shared');
    expect(await available(name)).toBe(false);
    g!.unlock();
    expect(await available(name)).toBe(true);
  });

  test('locks.lock(): waits for a request() holder and is granted after its release', async () => {
    const name = uniqueName();
    const h = await hold(name);
    let granted = false;
    const p = locks.lock(name).then((g) => {
      granted = true;
      return g;
    });
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    expect(granted).toBe(false);
    h.release();
    const g = await p;
    expect(g!.held).toBe(true);
    g!.unlock();
  });

  test('locks.lock(): rejects (never throws) on bad input', async () => {
    const bad = locks.lock as unknown as (...args: unknown[]) => Promise<unknown>;
    let p: Promise<unknown> | undefined;
    expect(() => {
      p = bad(uniqueName(), { mode: 'nope' });
    }).not.toThrow();
    await expect(p).rejects.toBeInstanceOf(TypeError);
  });

  test('unlock() twice throws ERR_LOCK_NOT_LOCKED', () => {
    const g = locks.lockSync(uniqueName())!;
    g.unlock();
    expect(thrown(() => g.unlock())).toMatchObject({ code: 'ERR_LOCK_NOT_LOCKED' });
  });

  test('locks.lockSync() with ifAvailable: null when held', async () => {
    const name = uniqueName();
    const h = await hold(name);
    expect(locks.lockSync(name, { ifAvailable: true })).toBeNull();
    expect(await pendingOf(name)).toEqual([]);
    h.release();
    await h.done;
  });

  test('locks.lock() with ifAvailable: null when held', async () => {
    const name = uniqueName();
    const g = locks.lockSync(name)!;
    expect(await locks.lock(name, { ifAvailable: true })).toBeNull();
    expect(await pendingOf(name)).toEqual([]);
    g.unlock();
    const g2 = await locks.lock(name, { ifAvailable: true });
    expect(g2).not.toBeNull();
    g2!.unlock();
  });

  test('locks.lockSync(): `using` disposes the guard at the end of the block', async () => {
    const name = uniqueName();
    {
      using g = locks.lockSync(name);
      expect(g!.held).toBe(true);
      expect(await available(name)).toBe(false);
    }
    expect(await available(name)).toBe(true);
  });

  test('locks.lock(): `using` disposes the guard when the block throws', async () => {
    const name = uniqueName();
    await expect((async () => {
      using g = await locks.lock(name);
      expect(g!.held).toBe(true);
      throw new Error('inside');
    })()).rejects.toThrow('inside');
    expect(await available(name)).toBe(true);
  });

  test('locks.lockSync() with ifAvailable: `using` accepts the null guard', async () => {
    const name = uniqueName();
    const h = await hold(name);
    {
      using g = locks.lockSync(name, { ifAvailable: true });
      expect(g).toBeNull();
    }
    h.release();
    await h.done;
  });

  test('locks.lockSync() on a name this thread holds (request()): throws ERR_LOCK_DEADLOCK, nothing left queued', async () => {
    const name = uniqueName();
    const h = await hold(name);
    expect(thrown(() => locks.lockSync(name))).toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    expect(await pendingOf(name)).toEqual([]);
    expect((await locks.query()).held.filter((l) => l.name === name)).toHaveLength(1);
    h.release();
    await h.done;
    expect(await available(name)).toBe(true);
  });

  test('locks.lockSync() on a name this thread holds (lockSync()): throws ERR_LOCK_DEADLOCK', () => {
    const name = uniqueName();
    const g = locks.lockSync(name)!;
    expect(thrown(() => locks.lockSync(name, { timeout: 5_000 }))).toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    g.unlock();
    locks.lockSync(name)!.unlock();
  });

  test('locks.lockSync() shared on a name this thread holds shared is granted (no wait, no deadlock)', () => {
    const name = uniqueName();
    const a = locks.lockSync(name, { mode: 'shared' })!;
    const b = locks.lockSync(name, { mode: 'shared' })!;
    expect(b.held).toBe(true);
    a.unlock();
    b.unlock();
  });

  test('locks.lockSync() behind this thread\'s own pending request(): throws ERR_LOCK_DEADLOCK', async () => {
    const name = uniqueName();
    const other = await workerHolding(name);
    const mine = locks.request(name, () => 'mine');
    expect(thrown(() => locks.lockSync(name, { timeout: 5_000 }))).toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    expect((await pendingOf(name)).length).toBe(1); // only the request() is left
    other.release();
    expect(await mine).toBe('mine');
    await other.report;
  });

  test('locks.lockSync() with timeout: throws ERR_LOCK_TIMEOUT and the request leaves the queue', async () => {
    const name = uniqueName();
    const other = await workerHolding(name);
    const t0 = performance.now();
    const err = thrown(() => locks.lockSync(name, { timeout: 50 }));
    expect(err).toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(45);
    expect(await pendingOf(name)).toEqual([]);
    other.release();
    await other.report;
    const g = locks.lockSync(name, { ifAvailable: true });
    expect(g).not.toBeNull();
    g!.unlock();
  });

  test('locks.lockSync() with timeout 0: fails at once with ERR_LOCK_TIMEOUT when held', async () => {
    const name = uniqueName();
    const other = await workerHolding(name);
    expect(thrown(() => locks.lockSync(name, { timeout: 0 }))).toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(await pendingOf(name)).toEqual([]);
    other.release();
    await other.report;
  });

  test('locks.lock() with timeout: rejects with ERR_LOCK_TIMEOUT and the request leaves the queue', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const timedOut = locks.lock(name, { timeout: 20 });
    const after = locks.request(name, () => 'after');
    await expect(timedOut).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    const pending = await pendingOf(name);
    expect(pending).toHaveLength(1); // only `after`
    h.release();
    expect(await after).toBe('after'); // not stuck behind the timed-out request
    expect(await available(name)).toBe(true);
  });

  test('locks.lock() with timeout: a timed-out exclusive request lets the shared one behind it join the shared holder', async () => {
    const name = uniqueName();
    const h = await hold(name, { mode: 'shared' });
    const timedOut = locks.lock(name, { timeout: 20 });
    let sharedGranted = false;
    const shared = locks.request(name, { mode: 'shared' }, () => {
      sharedGranted = true;
    });
    await expect(timedOut).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    await shared; // while the first shared holder still holds
    expect(sharedGranted).toBe(true);
    h.release();
    await h.done;
  });

  test('locks.lock() with an already aborted signal: rejects with the signal\'s reason', async () => {
    const controller = new AbortController();
    const reason = new Error('before');
    controller.abort(reason);
    await expect(locks.lock(uniqueName(), { signal: controller.signal })).rejects.toBe(reason);
  });

  test('locks.lock() with signal: an abort while pending rejects with the signal\'s reason and leaves the queue', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const controller = new AbortController();
    const reason = new Error('while pending');
    const p = locks.lock(name, { signal: controller.signal }).then(() => 'resolved', (e: unknown) => e);
    await new Promise((r) => setImmediate(r));
    controller.abort(reason);
    expect(await p).toBe(reason);
    expect(await pendingOf(name)).toEqual([]);
    h.release();
    await h.done;
  });

  test('locks.lockSync() with steal: takes a lock held by another guard, which is no longer held', async () => {
    const name = uniqueName();
    const victim = await locks.lock(name);
    const g = locks.lockSync(name, { steal: true })!;
    expect(g.held).toBe(true);
    expect(victim!.held).toBe(false);
    expect(victim!.signal.aborted).toBe(true);
    // A lost lock is never released silently.
    expect(thrown(() => victim!.unlock())).toMatchObject({ reason: 'stolen' });
    expect(await available(name)).toBe(false); // the victim's unlock() did not release the stealer
    g.unlock();
    expect(await available(name)).toBe(true);
  });

  test('locks.request() with timeout: rejects with ERR_LOCK_TIMEOUT, callback not called, request leaves the queue', async () => {
    const name = uniqueName();
    const h = await hold(name);
    let called = false;
    const timedOut = locks.request(name, { timeout: 20 }, () => {
      called = true;
    });
    await expect(timedOut).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(called).toBe(false);
    expect(await pendingOf(name)).toEqual([]);
    h.release();
    await h.done;
    expect(await available(name)).toBe(true);
    expect(called).toBe(false);
  });

  test('locks.request() with timeout: a free lock is granted and the timeout does not cut the callback short', async () => {
    const name = uniqueName();
    expect(await locks.request(name, { timeout: 5 }, async (l) => {
      await new Promise((r) => setTimeout(r, 20));
      return l !== null;
    })).toBe(true);
  });

  test('locks.request() with an invalid timeout: rejects (never throws)', async () => {
    for (const timeout of [-1, 'soon', Number.NaN]) {
      let p: Promise<unknown> | undefined;
      expect(() => {
        p = locks.request(uniqueName(), { timeout } as unknown as LockRequestOptions, () => {});
      }).not.toThrow();
      await expect(p).rejects.toBeInstanceOf(Error);
    }
  });

  test('locks.lockSync() blocks while a worker holds the lock and is granted when it releases', async () => {
    const name = uniqueName();
    const ctl = control(8);
    // The worker lets go once query() shows this thread's request waiting.
    const w = start('locks-roles', { role: 'hold', name, releaseWhenPending: true, control: ctl.buffer });
    workers.push(w);
    const report = result<{ events: string[] }>(w);
    await until(ctl, 1, 1);
    const g = locks.lockSync(name, { timeout: 10_000 });
    expect(g!.held).toBe(true);
    expect(Atomics.load(ctl, 4)).toBe(1); // the worker's callback had ended
    g!.unlock();
    expect((await report).events).toEqual(['granted', 'callback-end', 'resolved:value']);
  });
});
