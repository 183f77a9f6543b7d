// locks.request() on one thread, after the web-platform-tests web-locks/
// suites: acquire, held, resource-names, mode-exclusive, mode-shared,
// mode-mixed, ifAvailable, lock-attributes.
import { describe, expect, test, vi } from 'vitest';
import { AsyncLocalStorage } from 'node:async_hooks';
import { Lock, locks } from '../src/index.js';
import { available, deferred, hold, namer, turns } from './locks-helpers.js';

// A lock that is never granted should fail a test in seconds, not after the global minute.
vi.setConfig({ testTimeout: 10_000 });

const uniqueName = namer('locks-request');

/** Call fn, which must return a promise (never throw), and return what it rejects with. */
async function rejection(fn: () => unknown): Promise<unknown> {
  let p: unknown;
  try {
    p = fn();
  } catch (err) {
    throw new Error(`threw synchronously instead of returning a rejected promise: ${String(err)}`);
  }
  expect(p).toBeInstanceOf(Promise);
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('resolved instead of rejecting');
}

const isDOMException = (err: unknown, name: string) => err instanceof DOMException && err.name === name;

// The API is typed; these tests call it as JavaScript would.
const untyped = locks.request as unknown as (...args: unknown[]) => Promise<unknown>;

describe('locks.request() validation: rejected promises, never sync throws', () => {
  test('locks.request() without a callback: rejects with TypeError', async () => {
    expect(await rejection(() => untyped(uniqueName()))).toBeInstanceOf(TypeError);
    expect(await rejection(() => untyped(uniqueName(), {}))).toBeInstanceOf(TypeError);
    expect(await rejection(() => untyped(uniqueName(), { mode: 'shared' }, 'not a function'))).toBeInstanceOf(TypeError);
    expect(await rejection(() => untyped(uniqueName(), {}, undefined))).toBeInstanceOf(TypeError);
  });

  test('locks.request() with an invalid mode: rejects with TypeError, callback not called', async () => {
    for (const mode of ['foo', '', 'EXCLUSIVE', 'Shared', null, 1]) {
      const cb = vi.fn();
      expect(await rejection(() => untyped(uniqueName(), { mode }, cb))).toBeInstanceOf(TypeError);
      expect(cb).not.toHaveBeenCalled();
    }
  });

  test('locks.request() with options that are not an object: rejects with TypeError', async () => {
    const cb = vi.fn();
    expect(await rejection(() => untyped(uniqueName(), 'exclusive', cb))).toBeInstanceOf(TypeError);
    expect(cb).not.toHaveBeenCalled();
  });

  test('locks.request() with a name starting with "-": rejects with NotSupportedError', async () => {
    for (const name of ['-', '-foo', '---', '-\uD800']) {
      const cb = vi.fn();
      const err = await rejection(() => locks.request(name, cb));
      expect(isDOMException(err, 'NotSupportedError'), String(err)).toBe(true);
      const err2 = await rejection(() => locks.request(name, { mode: 'shared' }, cb));
      expect(isDOMException(err2, 'NotSupportedError'), String(err2)).toBe(true);
      expect(cb).not.toHaveBeenCalled();
    }
  });

  test('locks.request() with steal and ifAvailable: rejects with NotSupportedError', async () => {
    const cb = vi.fn();
    const err = await rejection(() => locks.request(uniqueName(), { steal: true, ifAvailable: true }, cb));
    expect(isDOMException(err, 'NotSupportedError'), String(err)).toBe(true);
    expect(cb).not.toHaveBeenCalled();
  });

  test('locks.request() with steal and mode shared: rejects with NotSupportedError', async () => {
    const cb = vi.fn();
    const err = await rejection(() => locks.request(uniqueName(), { steal: true, mode: 'shared' }, cb));
    expect(isDOMException(err, 'NotSupportedError'), String(err)).toBe(true);
    expect(cb).not.toHaveBeenCalled();
  });

  test('locks.request() with signal and steal: rejects with NotSupportedError', async () => {
    const cb = vi.fn();
    const err = await rejection(() => locks.request(uniqueName(), { signal: new AbortController().signal, steal: true }, cb));
    expect(isDOMException(err, 'NotSupportedError'), String(err)).toBe(true);
    expect(cb).not.toHaveBeenCalled();
  });

  test('locks.request() with signal and ifAvailable: rejects with NotSupportedError', async () => {
    const cb = vi.fn();
    const err = await rejection(() => locks.request(uniqueName(), { signal: new AbortController().signal, ifAvailable: true }, cb));
    expect(isDOMException(err, 'NotSupportedError'), String(err)).toBe(true);
    expect(cb).not.toHaveBeenCalled();
  });

  test('locks.request() with a signal that is not an AbortSignal: rejects with TypeError', async () => {
    for (const signal of ['string', 12.34, false, {}, Symbol('s'), () => {}, null, globalThis, new AbortController()]) {
      const cb = vi.fn();
      const err = await rejection(() => untyped(uniqueName(), { signal }, cb));
      expect(err, String(signal?.toString?.())).toBeInstanceOf(TypeError);
      // web-platform-tests (promise_rejects_js) require TypeError itself, not a subclass; the code is latchkey's.
      expect((err as Error).constructor).toBe(TypeError);
      expect(err).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', argument: 'options.signal' });
      expect(cb).not.toHaveBeenCalled();
    }
  });

  test('locks.request() with an already aborted signal: rejects with the signal\'s reason (AbortError)', async () => {
    const controller = new AbortController();
    controller.abort();
    const cb = vi.fn();
    const err = await rejection(() => locks.request(uniqueName(), { signal: controller.signal }, cb));
    expect(isDOMException(err, 'AbortError'), String(err)).toBe(true);
    expect(err).toBe(controller.signal.reason);
    expect(cb).not.toHaveBeenCalled();
  });

  test('locks.request() with an already aborted signal: rejects with its custom reason', async () => {
    for (const reason of [new Error('custom'), 'a string reason', 42, { why: 'object' }]) {
      const controller = new AbortController();
      controller.abort(reason);
      const cb = vi.fn();
      expect(await rejection(() => locks.request(uniqueName(), { signal: controller.signal }, cb))).toBe(reason);
      expect(cb).not.toHaveBeenCalled();
    }
  });

  test('locks.request() with an already aborted signal leaves the lock free', async () => {
    const name = uniqueName();
    const controller = new AbortController();
    controller.abort();
    await rejection(() => locks.request(name, { signal: controller.signal }, () => {}));
    expect(await available(name)).toBe(true);
    const { pending, held } = await locks.query();
    expect([...pending, ...held].filter((l) => l.name === name)).toEqual([]);
  });

  test('locks.request() validation order: an invalid mode is a TypeError even with a "-" name', async () => {
    expect(await rejection(() => untyped('-x', { mode: 'bogus' }, () => {}))).toBeInstanceOf(TypeError);
  });

  test('locks.request() validation order: a "-" name is checked before an aborted signal', async () => {
    const controller = new AbortController();
    controller.abort(new Error('not this one'));
    const err = await rejection(() => locks.request('-x', { signal: controller.signal }, () => {}));
    expect(isDOMException(err, 'NotSupportedError'), String(err)).toBe(true);
  });

  test('locks.request() with explicit default options is granted', async () => {
    const name = uniqueName();
    expect(await locks.request(name, { mode: 'exclusive', ifAvailable: false, steal: false }, (l) => l?.mode)).toBe('exclusive');
    expect(await untyped(name, undefined, (l: Lock | null) => l !== null)).toBe(true);
    expect(await untyped(name, null, (l: Lock | null) => l !== null)).toBe(true);
  });
});

describe('locks.request() callback and returned promise (acquire, held)', () => {
  test('locks.request(): the callback is never invoked synchronously inside request()', async () => {
    const name = uniqueName();
    let called = false;
    const p = locks.request(name, () => {
      called = true;
    });
    expect(called).toBe(false);
    await p;
    expect(called).toBe(true);
  });

  test('locks.request() with ifAvailable: the null callback is not invoked synchronously either', async () => {
    const name = uniqueName();
    const h = await hold(name);
    let called = false;
    const p = locks.request(name, { ifAvailable: true }, () => {
      called = true;
    });
    expect(called).toBe(false);
    await p;
    expect(called).toBe(true);
    h.release();
    await h.done;
  });

  test('locks.request(): resolves to the callback\'s return value', async () => {
    const name = uniqueName();
    expect(await locks.request(name, () => 42)).toBe(42);
    expect(await locks.request(name, () => undefined)).toBeUndefined();
    const obj = { a: 1 };
    expect(await locks.request(name, () => obj)).toBe(obj);
  });

  test('locks.request(): resolves to the resolved value of the callback\'s promise', async () => {
    const name = uniqueName();
    expect(await locks.request(name, async () => 'async value')).toBe('async value');
    const thenable = { then: (r: (v: string) => void) => r('thenable') } as unknown as PromiseLike<string>;
    expect(await locks.request(name, () => thenable)).toBe('thenable');
  });

  test('locks.request(): rejects with what the callback throws synchronously, and releases the lock', async () => {
    const name = uniqueName();
    const boom = new Error('sync throw');
    expect(await rejection(() => locks.request(name, () => {
      throw boom;
    }))).toBe(boom);
    expect(await available(name)).toBe(true);
  });

  test('locks.request(): rejects with the callback\'s promise rejection, and releases the lock', async () => {
    const name = uniqueName();
    const boom = new Error('async rejection');
    expect(await rejection(() => locks.request(name, async () => {
      await turns(1);
      throw boom;
    }))).toBe(boom);
    expect(await available(name)).toBe(true);
  });

  test('locks.request(): the lock is released once the callback returns a value', async () => {
    const name = uniqueName();
    await locks.request(name, () => 1);
    expect(await available(name)).toBe(true);
  });

  test('locks.request(): the lock is released once the callback\'s promise resolves', async () => {
    const name = uniqueName();
    await locks.request(name, async () => {
      await turns(1);
    });
    expect(await available(name)).toBe(true);
  });

  test('locks.request(): a following request gets the lock after a throwing callback', async () => {
    const name = uniqueName();
    const first = locks.request(name, () => {
      throw new Error('x');
    });
    const second = locks.request(name, (l) => l !== null);
    await expect(first).rejects.toThrow('x');
    expect(await second).toBe(true);
  });

  test('locks.request(): the lock is held until the callback\'s promise settles', async () => {
    const name = uniqueName();
    const h = await hold(name);
    let secondGranted = false;
    const second = locks.request(name, () => {
      secondGranted = true;
    });
    await turns();
    expect(secondGranted).toBe(false);
    expect(await available(name)).toBe(false);
    h.release('first');
    expect(await h.done).toBe('first');
    await second;
    expect(secondGranted).toBe(true);
  });

  test('locks.request(): the lock is held until the callback\'s promise rejects', async () => {
    const name = uniqueName();
    const until = deferred<void>();
    let secondGranted = false;
    const first = locks.request(name, () => until.promise);
    const second = locks.request(name, () => {
      secondGranted = true;
    });
    await turns();
    expect(secondGranted).toBe(false);
    until.reject(new Error('later'));
    await expect(first).rejects.toThrow('later');
    await second;
    expect(secondGranted).toBe(true);
  });

  test('locks.request(): the returned promise settles after the lock is released', async () => {
    const name = uniqueName();
    const after = await locks.request(name, () => 'v').then(() => available(name));
    expect(after).toBe(true);
  });

  test('locks.request(): a held lock makes a second request from the same thread wait (not reentrant)', async () => {
    const name = uniqueName();
    let innerGranted = false, innerWhileHeld = true;
    let inner: Promise<string> | undefined;
    await locks.request(name, async () => {
      inner = locks.request(name, () => {
        innerGranted = true;
        return 'inner';
      });
      await turns();
      innerWhileHeld = innerGranted;
    });
    expect(innerWhileHeld).toBe(false);
    expect(await inner).toBe('inner');
    expect(innerGranted).toBe(true);
  });

  test('locks.request(): requests for one name are granted in FIFO order', async () => {
    const name = uniqueName();
    const order: number[] = [];
    const h = await hold(name);
    const ps = [1, 2, 3, 4, 5, 6].map((i) => locks.request(name, async () => {
      order.push(i);
      await turns(1);
    }));
    h.release();
    await Promise.all(ps);
    expect(order).toEqual([1, 2, 3, 4, 5, 6]);
  });

  test('locks.request(): requests for different names are independent', async () => {
    const a = uniqueName('a'), b = uniqueName('b');
    const h = await hold(a);
    let bGranted = false;
    await locks.request(b, () => {
      bGranted = true;
    });
    expect(bGranted).toBe(true);
    expect(await available(a)).toBe(false);
    h.release();
    await h.done;
  });

  test('locks.request(): the callback gets a Lock with the requested name and mode (exclusive)', async () => {
    const name = uniqueName();
    const lock = await locks.request(name, (l) => l);
    expect(lock).toBeInstanceOf(Lock);
    expect(lock!.name).toBe(name);
    expect(lock!.mode).toBe('exclusive');
  });

  test('locks.request(): the callback gets a Lock with the requested name and mode (shared)', async () => {
    const name = uniqueName();
    const lock = await locks.request(name, { mode: 'shared' }, (l) => l);
    expect(lock!.name).toBe(name);
    expect(lock!.mode).toBe('shared');
  });

  test('locks.request(): lock.token is a number, lock.abandoned is false, lock.signal is not aborted', async () => {
    const name = uniqueName();
    const seen = await locks.request(name, (l) => ({ token: l!.token, abandoned: l!.abandoned, signal: l!.signal }));
    expect(typeof seen.token).toBe('number');
    expect(seen.abandoned).toBe(false);
    expect(seen.signal).toBeInstanceOf(AbortSignal);
    expect(seen.signal.aborted).toBe(false);
  });

  test('locks.request(): lock.token strictly increases across grants of one name', async () => {
    const name = uniqueName();
    const tokens: number[] = [];
    for (let i = 0; i < 5; i++) tokens.push(await locks.request(name, (l) => l!.token));
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]);
  });

  test('locks.request(): a shared grant\'s token is above the earlier exclusive one\'s and below the later one\'s', async () => {
    const name = uniqueName();
    const e1 = await locks.request(name, (l) => l!.token);
    const [s1, s2] = await Promise.all([
      locks.request(name, { mode: 'shared' }, async (l) => {
        await turns(1);
        return l!.token;
      }),
      locks.request(name, { mode: 'shared' }, async (l) => {
        await turns(1);
        return l!.token;
      }),
    ]);
    const e2 = await locks.request(name, (l) => l!.token);
    for (const s of [s1, s2]) {
      expect(s).toBeGreaterThan(e1);
      expect(s).toBeLessThan(e2);
    }
  });
});

describe('locks.request() names (resource-names)', () => {
  test('locks.request(): names are not normalized (\'\\u00C5\' and \'A\\u030A\' are different locks)', async () => {
    const composed = '\u00C5', decomposed = 'A\u030A';
    expect(composed.normalize('NFC')).toBe(decomposed.normalize('NFC'));
    const h = await hold(composed);
    expect(await locks.request(decomposed, { ifAvailable: true }, (l) => l?.name)).toBe(decomposed);
    const { held } = await locks.query();
    expect(held.filter((l) => l.name === composed)).toHaveLength(1);
    h.release();
    await h.done;
  });

  test('locks.request(): the empty string is a valid name', async () => {
    const lock = await locks.request('', (l) => l);
    expect(lock).not.toBeNull();
    expect(lock!.name).toBe('');
  });

  test('locks.request(): a name with a lone surrogate (\'\\uD800\') is distinct from \'\\uFFFD\'', async () => {
    const h = await hold('\uD800');
    expect(h.lock!.name).toBe('\uD800');
    expect(await locks.request('\uFFFD', { ifAvailable: true }, (l) => l?.name)).toBe('\uFFFD');
    expect(await available('\uD800')).toBe(false);
    h.release();
    await h.done;
  });

  test('locks.request(): lone surrogates are not mangled (query() reports the name as given)', async () => {
    const names = ['\uD800', '\uDC00', 'a\uD800b', '\uDC00\uD800'];
    const holds = await Promise.all(names.map((n) => hold(n)));
    const { held } = await locks.query();
    for (const n of names) expect(held.filter((l) => l.name === n), JSON.stringify(n)).toHaveLength(1);
    expect(held.some((l) => l.name === '\uFFFD')).toBe(false);
    for (const h of holds) h.release();
    await Promise.all(holds.map((h) => h.done));
  });

  test('locks.request(): various strings are valid names and come back unchanged', async () => {
    const names = ['a', '\x00', 'a\x00c', 'a\nb', '\uFFFF', '\uD83D\uDE00', ' ', 'fo\u0300o', 'x'.repeat(64), '日本語'];
    for (const n of names) expect(await locks.request(n, (l) => l!.name), JSON.stringify(n)).toBe(n);
  });

  test('locks.request(): a name of 128 UTF-8 bytes is valid, a longer one rejects with ERR_OUT_OF_RANGE', async () => {
    const name = `long:${'n'.repeat(123)}`;
    expect(await locks.request(name, (l) => l?.name)).toBe(name);
    const err = await rejection(() => locks.request(`${name}n`, () => {}));
    expect((err as { code?: string }).code).toBe('ERR_OUT_OF_RANGE');
  });

  test('locks.request(): names are converted to strings (DOMString)', async () => {
    expect(await untyped(12345, (l: Lock | null) => l?.name)).toBe('12345');
    expect(await untyped({ toString: () => 'from-toString' }, (l: Lock | null) => l?.name)).toBe('from-toString');
    expect(await rejection(() => untyped(Symbol('s'), () => {}))).toBeInstanceOf(TypeError);
    const err = await rejection(() => untyped(-1, () => {})); // '-1' starts with '-'
    expect(isDOMException(err, 'NotSupportedError'), String(err)).toBe(true);
  });
});

describe('locks.request() modes (mode-exclusive, mode-shared, mode-mixed)', () => {
  test('locks.request() exclusive: requests for the same name are serialized', async () => {
    const name = uniqueName();
    let inside = 0, maxInside = 0;
    await Promise.all(Array.from({ length: 5 }, () => locks.request(name, async () => {
      maxInside = Math.max(maxInside, ++inside);
      await turns(2);
      inside--;
    })));
    expect(maxInside).toBe(1);
  });

  test('locks.request() shared: shared locks are not exclusive (all held at once)', async () => {
    const name = uniqueName();
    const all = deferred<void>();
    let inside = 0;
    const ps = Array.from({ length: 4 }, () => locks.request(name, { mode: 'shared' }, async () => {
      if (++inside === 4) all.resolve();
      await all.promise;
    }));
    await Promise.all(ps);
    expect(inside).toBe(4);
  });

  test('locks.request() shared: shared requests are granted in order', async () => {
    const name = uniqueName();
    const order: number[] = [];
    await Promise.all([1, 2, 3, 4].map((i) => locks.request(name, { mode: 'shared' }, () => {
      order.push(i);
    })));
    expect(order).toEqual([1, 2, 3, 4]);
  });

  test('locks.request() mixed: requests are granted in order (shared ×3, exclusive, shared ×2)', async () => {
    const name = uniqueName();
    const granted: number[] = [];
    const log = (n: number) => () => {
      granted.push(n);
    };
    await Promise.all([
      locks.request(name, { mode: 'shared' }, log(1)),
      locks.request(name, { mode: 'shared' }, log(2)),
      locks.request(name, { mode: 'shared' }, log(3)),
      locks.request(name, { mode: 'exclusive' }, log(4)),
      locks.request(name, { mode: 'shared' }, log(5)),
      locks.request(name, { mode: 'shared' }, log(6)),
    ]);
    expect(granted).toEqual([1, 2, 3, 4, 5, 6]);
  });

  test('locks.request() mixed: a shared request after an exclusive held one waits for its release', async () => {
    const name = uniqueName();
    const h = await hold(name);
    let sharedGranted = false;
    const s = locks.request(name, { mode: 'shared' }, () => {
      sharedGranted = true;
    });
    await turns();
    expect(sharedGranted).toBe(false);
    h.release();
    await s;
    expect(sharedGranted).toBe(true);
  });

  test('locks.request() mixed: an exclusive request after a shared held one waits for its release', async () => {
    const name = uniqueName();
    const h = await hold(name, { mode: 'shared' });
    let exclusiveGranted = false;
    const e = locks.request(name, () => {
      exclusiveGranted = true;
    });
    await turns();
    expect(exclusiveGranted).toBe(false);
    h.release();
    await e;
    expect(exclusiveGranted).toBe(true);
  });

  test('locks.request() mixed: a shared request queues behind a pending exclusive one, even while shared is held', async () => {
    const name = uniqueName();
    const h = await hold(name, { mode: 'shared' });
    const events: string[] = [];
    const exclusiveUntil = deferred<void>();
    const e = locks.request(name, async () => {
      events.push('exclusive');
      await exclusiveUntil.promise;
    });
    const s = locks.request(name, { mode: 'shared' }, () => {
      events.push('shared');
    });
    await turns();
    expect(events).toEqual([]);
    h.release();
    await turns();
    expect(events).toEqual(['exclusive']);
    exclusiveUntil.resolve();
    await Promise.all([e, s]);
    expect(events).toEqual(['exclusive', 'shared']);
  });

  test('locks.request() mixed: releasing an exclusive lock grants the consecutive shared requests together', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const both = deferred<void>();
    let shared = 0, exclusiveGranted = false;
    const s = [1, 2].map(() => locks.request(name, { mode: 'shared' }, async () => {
      if (++shared === 2) both.resolve();
      await both.promise; // each waits for the other: both must be held at once
    }));
    const e = locks.request(name, () => {
      exclusiveGranted = true;
      expect(shared).toBe(2);
    });
    h.release();
    await Promise.all([...s, e]);
    expect(exclusiveGranted).toBe(true);
  });
});

describe('locks.request() with ifAvailable', () => {
  test('locks.request() with ifAvailable: callback gets a lock when available', async () => {
    const name = uniqueName();
    const lock = await locks.request(name, { ifAvailable: true }, (l) => l);
    expect(lock).not.toBeNull();
    expect(lock!.name).toBe(name);
  });

  test('locks.request() with ifAvailable: callback gets null when held', async () => {
    const name = uniqueName();
    const h = await hold(name);
    let arg: unknown = 'not called';
    await locks.request(name, { ifAvailable: true }, (l) => {
      arg = l;
    });
    expect(arg).toBeNull();
    h.release();
    await h.done;
  });

  test('locks.request() with ifAvailable: a null answer leaves no request in the queue', async () => {
    const name = uniqueName();
    const h = await hold(name);
    await locks.request(name, { ifAvailable: true }, () => {});
    const { pending } = await locks.query();
    expect(pending.filter((l) => l.name === name)).toEqual([]);
    h.release();
    await h.done;
    expect(await available(name)).toBe(true);
  });

  test('locks.request() with ifAvailable: callback gets a lock when only an unrelated lock is held', async () => {
    const h = await hold(uniqueName('other'));
    expect(await available(uniqueName())).toBe(true);
    h.release();
    await h.done;
  });

  test('locks.request() with ifAvailable: shared request is granted while shared is held', async () => {
    const name = uniqueName();
    const h = await hold(name, { mode: 'shared' });
    expect(await locks.request(name, { mode: 'shared', ifAvailable: true }, (l) => l?.mode)).toBe('shared');
    h.release();
    await h.done;
  });

  test('locks.request() with ifAvailable: shared request gets null while exclusive is held', async () => {
    const name = uniqueName();
    const h = await hold(name);
    expect(await available(name, 'shared')).toBe(false);
    h.release();
    await h.done;
  });

  test('locks.request() with ifAvailable: exclusive request gets null while shared is held', async () => {
    const name = uniqueName();
    const h = await hold(name, { mode: 'shared' });
    expect(await available(name, 'exclusive')).toBe(false);
    h.release();
    await h.done;
  });

  test('locks.request() with ifAvailable: shared request gets null while shared is held and an exclusive one is pending', async () => {
    const name = uniqueName();
    const h = await hold(name, { mode: 'shared' });
    let exclusiveGranted = false;
    const e = locks.request(name, () => {
      exclusiveGranted = true;
    });
    expect(await available(name, 'shared')).toBe(false);
    expect(exclusiveGranted).toBe(false);
    h.release();
    await e;
    expect(exclusiveGranted).toBe(true);
  });

  test('locks.request() with ifAvailable: exclusive request gets null while held, with another request pending', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const pending = locks.request(name, () => 'pending');
    expect(await available(name)).toBe(false);
    h.release();
    expect(await pending).toBe('pending');
  });

  test('locks.request() with ifAvailable: a callback throwing with null rejects the promise with that error', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const boom = new Error('null and throw');
    let arg: unknown = 'not called';
    expect(await rejection(() => locks.request(name, { ifAvailable: true }, (l) => {
      arg = l;
      throw boom;
    }))).toBe(boom);
    expect(arg).toBeNull();
    h.release();
    await h.done;
  });

  test('locks.request() with ifAvailable: a callback throwing with a lock rejects and releases it', async () => {
    const name = uniqueName();
    const boom = new Error('granted and throw');
    expect(await rejection(() => locks.request(name, { ifAvailable: true }, () => {
      throw boom;
    }))).toBe(boom);
    expect(await available(name)).toBe(true);
  });

  test('locks.request() with ifAvailable: the lock is available once the previous release is processed', async () => {
    const name = uniqueName();
    await locks.request(name, async () => {});
    expect(await available(name)).toBe(true);
  });

  test('locks.request() with ifAvailable: nested request for the held name from its own callback gets null', async () => {
    const name = uniqueName();
    expect(await locks.request(name, () => available(name))).toBe(false);
  });
});

describe('locks.request() and AsyncLocalStorage', () => {
  test('locks.request(): the AsyncLocalStorage store active at request() is visible inside the callback (free lock)', async () => {
    const als = new AsyncLocalStorage<string>();
    const name = uniqueName();
    expect(await als.run('at-request', () => locks.request(name, () => als.getStore()))).toBe('at-request');
  });

  test('locks.request(): the AsyncLocalStorage store active at request() is visible inside the callback (after waiting)', async () => {
    const als = new AsyncLocalStorage<string>();
    const name = uniqueName();
    const h = await als.run('holder', () => hold(name));
    const waiting = als.run('waiter', () => locks.request(name, () => als.getStore()));
    await turns();
    als.run('releaser', () => h.release());
    expect(await waiting).toBe('waiter');
  });

  test('locks.request() with ifAvailable: the AsyncLocalStorage store is visible in the null callback', async () => {
    const als = new AsyncLocalStorage<string>();
    const name = uniqueName();
    const h = await hold(name);
    expect(await als.run('if-available', () => locks.request(name, { ifAvailable: true }, (l) => [l, als.getStore()])))
      .toEqual([null, 'if-available']);
    h.release();
    await h.done;
  });
});
