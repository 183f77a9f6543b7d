// locks.request() with `steal` and with `signal`, after the
// web-platform-tests web-locks/steal.https.any.js and signal.tentative.https.any.js.
import { describe, expect, test, vi } from 'vitest';
import { locks } from '../src/index.js';
import type { Lock } from '../src/index.js';
import { available, deferred, hold, namer, pendingOf, turns } from './locks-helpers.js';

// A lock that is never granted should fail a test in seconds, not after the global minute.
vi.setConfig({ testTimeout: 10_000 });

const uniqueName = namer('locks-steal-signal');

const isAbortError = (err: unknown) => err instanceof DOMException && err.name === 'AbortError';

describe('locks.request() with steal', () => {
  test('locks.request() with steal: granted when the lock is free', async () => {
    const name = uniqueName();
    const lock = await locks.request(name, { steal: true }, (l) => l);
    expect(lock).not.toBeNull();
    expect(lock!.mode).toBe('exclusive');
    expect(lock!.name).toBe(name);
  });

  test('locks.request() with steal: granted at once while the lock is held', async () => {
    const name = uniqueName();
    const victim = await hold(name);
    const value = await locks.request(name, { steal: true }, (l) => {
      expect(victim.events).toEqual([]); // the holder's callback has not finished
      return l !== null;
    });
    expect(value).toBe(true);
    victim.release();
    await victim.settled;
  });

  test('locks.request() with steal: the previous holder\'s request() promise rejects with an AbortError DOMException', async () => {
    const name = uniqueName();
    const victim = await hold(name);
    await locks.request(name, { steal: true }, () => {});
    await victim.settled;
    const { error } = victim.outcome() as { error: unknown };
    expect(isAbortError(error), String(error)).toBe(true);
    victim.release();
  });

  test('locks.request() with steal: the previous holder\'s promise rejects while its callback keeps running', async () => {
    const name = uniqueName();
    const victim = await hold(name);
    const stealer = await hold(name, { steal: true });
    await victim.settled; // rejected already, the stealer still holding
    expect(isAbortError((victim.outcome() as { error: unknown }).error)).toBe(true);
    expect(victim.events).toEqual([]);
    victim.release('late value');
    await turns();
    expect(victim.events).toEqual(['callback-end']); // it ran on to its end
    expect(isAbortError((victim.outcome() as { error: unknown }).error)).toBe(true); // and stays rejected
    stealer.release();
    await stealer.done;
  });

  test('locks.request() with steal: the previous holder\'s lock.signal aborts with the AbortError', async () => {
    const name = uniqueName();
    const victim = await hold(name);
    const onAbort = vi.fn();
    victim.lock!.signal.addEventListener('abort', onAbort);
    expect(victim.lock!.signal.aborted).toBe(false);
    const [stealerSignal, stealerToken] = await locks.request(name, { steal: true }, (l) => [l!.signal, l!.token] as const);
    expect(stealerToken).toBeGreaterThan(victim.lock!.token);
    expect(victim.lock!.signal.aborted).toBe(true);
    expect(onAbort).toHaveBeenCalledTimes(1);
    expect(isAbortError(victim.lock!.signal.reason)).toBe(true);
    await victim.settled;
    expect((victim.outcome() as { error: unknown }).error).toBe(victim.lock!.signal.reason);
    expect(stealerSignal.aborted).toBe(false);
    victim.release();
  });

  test('locks.request() with steal: onCompromised is called once with reason \'stolen\'', async () => {
    const name = uniqueName();
    const onCompromised = vi.fn();
    const victim = await hold(name, { onCompromised });
    await locks.request(name, { steal: true }, () => {});
    expect(onCompromised).toHaveBeenCalledTimes(1);
    expect(onCompromised.mock.calls[0][0]).toMatchObject({ reason: 'stolen' });
    victim.release();
    await victim.settled;
  });

  test('locks.request() with steal: pending requests stay queued behind the stealer', async () => {
    const name = uniqueName();
    const victim = await hold(name);
    let pendingGranted = false;
    const pending = locks.request(name, () => {
      pendingGranted = true;
    });
    const stealer = await hold(name, { steal: true });
    await turns();
    expect(pendingGranted).toBe(false);
    expect(await pendingOf(name)).toHaveLength(1);
    // The stolen holder's callback ending does not hand the lock on: the stealer holds it.
    victim.release();
    await turns();
    expect(pendingGranted).toBe(false);
    expect(await available(name)).toBe(false);
    stealer.release();
    await pending;
    expect(pendingGranted).toBe(true);
    await victim.settled;
  });

  test('locks.request() with steal: the stealer is granted ahead of the queue', async () => {
    const name = uniqueName();
    const victim = await hold(name);
    const order: string[] = [];
    const queued = locks.request(name, () => {
      order.push('queued');
    });
    const stolen = locks.request(name, { steal: true }, () => {
      order.push('stealer');
    });
    await Promise.all([queued, stolen]);
    expect(order).toEqual(['stealer', 'queued']);
    victim.release();
    await victim.settled;
  });

  test('locks.request() with steal: the last stealer wins', async () => {
    const name = uniqueName();
    const victim = await hold(name);
    const first = await hold(name, { steal: true });
    const second = await hold(name, { steal: true });
    await first.settled;
    expect(isAbortError((first.outcome() as { error: unknown }).error)).toBe(true);
    expect(first.lock!.signal.aborted).toBe(true);
    expect(second.lock!.signal.aborted).toBe(false);
    expect(second.outcome()).toBe('pending');
    const { held } = await locks.query();
    expect(held.filter((l) => l.name === name)).toHaveLength(1);
    for (const h of [victim, first]) h.release();
    await turns();
    expect(await available(name)).toBe(false);
    second.release('winner');
    expect(await second.done).toBe('winner');
    await victim.settled;
  });

  test('locks.request() with steal: every shared holder loses the lock', async () => {
    const name = uniqueName();
    const a = await hold(name, { mode: 'shared' });
    const b = await hold(name, { mode: 'shared' });
    await locks.request(name, { steal: true }, async () => {
      await Promise.all([a.settled, b.settled]);
    });
    for (const h of [a, b]) {
      expect(isAbortError((h.outcome() as { error: unknown }).error)).toBe(true);
      expect(h.lock!.signal.aborted).toBe(true);
      h.release();
    }
    expect(await available(name)).toBe(true);
  });

  test('locks.request() with steal: the lock is free once the stealer and the stolen holder are done', async () => {
    const name = uniqueName();
    const victim = await hold(name);
    await locks.request(name, { steal: true }, () => {});
    victim.release();
    await victim.settled;
    await turns();
    expect(await available(name)).toBe(true);
    expect((await locks.query()).held.filter((l) => l.name === name)).toEqual([]);
  });
});

describe('locks.request() with signal', () => {
  test('locks.request() with signal: abort while pending rejects with AbortError, callback not called', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const controller = new AbortController();
    const cb = vi.fn();
    const p = locks.request(name, { signal: controller.signal }, cb);
    const { held, pending } = await locks.query();
    expect(held.filter((l) => l.name === name)).toHaveLength(1);
    expect(pending.filter((l) => l.name === name)).toHaveLength(1);
    const rejected = p.then(() => 'resolved', (e: unknown) => e);
    controller.abort();
    const err = await rejected;
    expect(isAbortError(err), String(err)).toBe(true);
    expect(err).toBe(controller.signal.reason);
    expect(cb).not.toHaveBeenCalled();
    expect(await pendingOf(name)).toEqual([]);
    h.release();
    await h.done;
    expect(cb).not.toHaveBeenCalled();
  });

  test('locks.request() with signal: abort while pending rejects with the custom reason', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const controller = new AbortController();
    const reason = new Error('my reason');
    const p = locks.request(name, { signal: controller.signal }, () => {});
    const rejected = p.then(() => 'resolved', (e: unknown) => e);
    await turns(1);
    controller.abort(reason);
    expect(await rejected).toBe(reason);
    h.release();
    await h.done;
  });

  test('locks.request() with signal: after an abort while pending, the next pending request proceeds', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const controller = new AbortController();
    const aborted = locks.request(name, { signal: controller.signal }, () => 'aborted one ran').catch((e: unknown) => e);
    const next = locks.request(name, () => 'next');
    await turns(1);
    controller.abort();
    expect(isAbortError(await aborted)).toBe(true);
    h.release();
    expect(await next).toBe('next');
    expect(await available(name)).toBe(true);
  });

  test('locks.request() with signal: abort after a timeout rejects with AbortError', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const controller = new AbortController();
    const p = locks.request(name, { signal: controller.signal }, () => {});
    const rejected = p.then(() => 'resolved', (e: unknown) => e);
    let timerFired = false;
    setTimeout(() => {
      timerFired = true;
      controller.abort();
    }, 10);
    expect(isAbortError(await rejected)).toBe(true);
    expect(timerFired).toBe(true);
    h.release();
    await h.done;
  });

  test('locks.request() with signal: a signal that is never aborted changes nothing', async () => {
    const name = uniqueName();
    expect(await locks.request(name, { signal: new AbortController().signal }, async (l) => l !== null)).toBe(true);
  });

  test('locks.request() with signal: an abort right after request() returns wins even though the lock was free', async () => {
    const name = uniqueName();
    const controller = new AbortController();
    let gotLock = false;
    const p = locks.request(name, { signal: controller.signal }, () => {
      gotLock = true;
    });
    controller.abort(); // synchronously, before the callback could run
    const err = await p.then(() => 'resolved', (e: unknown) => e);
    expect(isAbortError(err), String(err)).toBe(true);
    expect(gotLock).toBe(false);
    // The lock was given back.
    await locks.request(name, () => {
      gotLock = true;
    });
    expect(gotLock).toBe(true);
  });

  test('locks.request() with signal: a synchronous abort of a free request rejects with the custom reason', async () => {
    const name = uniqueName();
    const controller = new AbortController();
    const cb = vi.fn();
    const p = locks.request(name, { signal: controller.signal }, cb);
    controller.abort('sync reason');
    expect(await p.then(() => 'resolved', (e: unknown) => e)).toBe('sync reason');
    expect(cb).not.toHaveBeenCalled();
  });

  test('locks.request() with signal: an abort processes the next pending lock request', async () => {
    const name = uniqueName();
    const controller = new AbortController();
    const first = locks.request(name, { signal: controller.signal }, () => new Promise(() => {}));
    const next = locks.request(name, () => 'resolved');
    controller.abort();
    expect(isAbortError(await first.then(() => 'resolved', (e: unknown) => e))).toBe(true);
    expect(await next).toBe('resolved');
  });

  test('locks.request() with signal: an abort after the lock is granted has no effect', async () => {
    const name = uniqueName();
    const controller = new AbortController();
    const acquired = deferred<Lock | null>(), release = deferred<string>();
    const p = locks.request(name, { signal: controller.signal }, (lock) => {
      acquired.resolve(lock);
      return release.promise;
    });
    const lock = await acquired.promise;
    controller.abort();
    await turns();
    expect(await available(name)).toBe(false); // still held
    expect(lock!.signal.aborted).toBe(false); // lock.signal is about losing the lock, not the request's signal
    release.resolve('resolved ok');
    expect(await p).toBe('resolved ok');
  });

  test('locks.request() with signal: an abort after the lock is released has no effect', async () => {
    const name = uniqueName();
    const controller = new AbortController();
    const acquired = deferred<void>(), release = deferred<string>();
    const p = locks.request(name, { signal: controller.signal }, () => {
      acquired.resolve();
      return release.promise;
    });
    await acquired.promise;
    release.resolve('resolved ok');
    controller.abort();
    expect(await p).toBe('resolved ok');
  });

  test('locks.request() with signal: aborting a pending exclusive request grants the shared one behind it at once', async () => {
    const name = uniqueName();
    const h = await hold(name, { mode: 'shared' });
    const controller = new AbortController();
    const exclusive = locks.request(name, { signal: controller.signal }, () => 'exclusive ran').catch((e: unknown) => e);
    let sharedGranted = false;
    const shared = locks.request(name, { mode: 'shared' }, () => {
      sharedGranted = true;
    });
    await turns();
    expect(sharedGranted).toBe(false); // queued behind the exclusive request
    controller.abort();
    expect(isAbortError(await exclusive)).toBe(true);
    await shared; // granted alongside the shared holder, which still holds
    expect(sharedGranted).toBe(true);
    expect((await locks.query()).held.filter((l) => l.name === name)).toHaveLength(1);
    h.release();
    await h.done;
  });

  test('locks.request() with signal: AbortSignal.timeout() rejects a pending request with its TimeoutError', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const signal = AbortSignal.timeout(10);
    const err = await locks.request(name, { signal }, () => {}).then(() => 'resolved', (e: unknown) => e);
    expect(err instanceof DOMException && err.name === 'TimeoutError', String(err)).toBe(true);
    expect(err).toBe(signal.reason);
    expect(await pendingOf(name)).toEqual([]);
    h.release();
    await h.done;
  });

  test('locks.request() with signal: a shared pending request can be aborted too', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const controller = new AbortController();
    const p = locks.request(name, { mode: 'shared', signal: controller.signal }, () => {});
    const rejected = p.then(() => 'resolved', (e: unknown) => e);
    controller.abort();
    expect(isAbortError(await rejected)).toBe(true);
    expect(await pendingOf(name)).toEqual([]);
    h.release();
    await h.done;
  });
});
