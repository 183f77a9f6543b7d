/**
 * Mutex: a futex-style lock in one slot of a LockTable. This file holds the
 * public class and the fast paths (one CAS each); the state word's bits, the
 * wait protocol and recovery live in mutex-word.ts.
 *
 * A Mutex is owned by a thread, as a pthread mutex is: the thread that locks
 * it must unlock it, and a thread that asks again for a mutex it holds (or is
 * already waiting for) gets ERR_LOCK_DEADLOCK at once instead of a hang. To
 * serialise async tasks of one thread, give each task its own turn with
 * `withLock` one after the other, or use a queueing front door.
 */
import { type SlotViews, type TableCore, slotViews } from './core.js';
import type { LockTable } from './table.js';
import { F_ACQUIRED, F_HOLD_MAX_NS, S_STATE } from './layout.js';
import { OWNER_MASK, lockSlowAsync, lockSlowSync, tryLockSlow, unlockSlow } from './mutex-word.js';
import { type LockOptions, type Wait, kNoWait, parseLockOptions } from './options.js';
import { ERR_LOCK_NOT_LOCKED } from '../errors.js';

/**
 * Hold times are sampled: one acquisition of the slot in HOLD_SAMPLE (by its
 * acquisition count, F_ACQUIRED) reads the clock at lock and at unlock.
 * performance.now() costs ~100 ns on this machine, three times a whole
 * uncontended lock+unlock, so the others read no clock at all. A sampled
 * hold released through another handle of the mutex than the one that took
 * it is not timed.
 */
const HOLD_SAMPLE = 64;

/**
 * Word indices in a slot's own views (slotViews), as this module's own
 * constants: an imported binding costs a load and a hole check at each use
 * in the caller's loop (about 1.5 ns a lock+unlock here).
 */
const STATE = S_STATE;
const ACQUIRED = F_ACQUIRED >> 1;
const HOLD_MAX = F_HOLD_MAX_NS >> 1;

/**
 * The fast path, as a caller's loop runs it (bench/uncontended.ts): one CAS
 * to lock, one to unlock, the slot's acquisition count, one test for a
 * sampled hold. The guard costs nothing when the caller drops it (V8's
 * escape analysis removes it: `m.lockSync(); m.unlock()`); one kept across
 * `guard.unlock()` is allocated, because the Atomics call inside unlock()
 * is a call V8 (Node 20) does not inline, and an object live across a call
 * is materialized.
 */
export class Mutex {
  // The fast paths read only these fields: no hop through the core.
  readonly #words: Int32Array;
  readonly #f64: Float64Array;
  readonly #tid: number;
  readonly #core: TableCore;
  readonly #base: number;
  readonly #views: SlotViews;
  /** 1 while the hold taken through this handle is a sampled one (its start is in #views). */
  #timing = 0;
  /** The table this lives in: pass `table.buffer` to another thread, or send this handle (workers/transfer.ts). */
  get table(): LockTable {
    return this.#core.table as LockTable;
  }

  /** The slot this mutex lives in. */
  readonly slot: number;
  /** The name it was reached by, or its slot index. */
  readonly name: string | number;

  /** @internal Use `table.mutex(name)`. */
  constructor(core: TableCore, slot: number, base: number, name: string | number) {
    this.#core = core;
    const views = (this.#views = slotViews(core, slot, base));
    this.#words = views.words;
    this.#f64 = views.f64;
    this.#tid = core.tid;
    this.#base = base;
    this.slot = slot;
    this.name = name;
  }

  /**
   * Take the lock, blocking this thread (Atomics.wait) until it is free.
   * Throws ERR_LOCK_TIMEOUT after `options.timeout` ms, ERR_LOCK_DEADLOCK if
   * this thread already holds it, an AbortError if `options.signal` is
   * already aborted.
   */
  lockSync(options?: LockOptions): MutexGuard {
    // Options are checked before the word is touched: a call with some takes the other way in.
    if (options !== undefined) return this.#lockSyncWith(parseLockOptions(options));
    if (Atomics.compareExchange(this.#words, STATE, 0, this.#tid) === 0) return this.#granted(false);
    return this.#granted(lockSlowSync(this.#core, this.slot, this.#base, kNoWait));
  }

  #lockSyncWith(wait: Wait): MutexGuard {
    if (Atomics.compareExchange(this.#words, STATE, 0, this.#tid) === 0) return this.#granted(false);
    return this.#granted(lockSlowSync(this.#core, this.slot, this.#base, wait));
  }

  /**
   * Take the lock without blocking the event loop (Atomics.waitAsync). The
   * thread stays alive while it waits. Rejects as lockSync throws, and with
   * an AbortError (cause: the signal's reason) when `options.signal` aborts
   * while it waits; an aborted waiter leaves nothing in the slot.
   */
  lock(options?: LockOptions): Promise<MutexGuard> {
    let wait: Wait;
    try {
      wait = options === undefined ? kNoWait : parseLockOptions(options);
    } catch (err) {
      return Promise.reject(err);
    }
    if (Atomics.compareExchange(this.#words, STATE, 0, this.#tid) === 0) {
      return Promise.resolve(this.#granted(false));
    }
    return lockSlowAsync(this.#core, this.slot, this.#base, wait).then((abandoned) => this.#granted(abandoned));
  }

  /** Take the lock if it is free right now: a guard, or null. Never waits. */
  tryLock(): MutexGuard | null {
    if (Atomics.compareExchange(this.#words, STATE, 0, this.#tid) === 0) return this.#granted(false);
    const abandoned = tryLockSlow(this.#core, this.#base);
    return abandoned === undefined ? null : this.#granted(abandoned);
  }

  /**
   * Release the lock this thread holds, without a guard. Throws
   * ERR_LOCK_NOT_OWNER when another thread holds it and ERR_LOCK_NOT_LOCKED
   * when nobody does.
   */
  unlock(): void {
    if (this.#timing !== 0) Mutex.#recordHold(this);
    if (Atomics.compareExchange(this.#words, STATE, this.#tid, 0) !== this.#tid) unlockSlow(this.#core, this.slot, this.#base);
  }

  /** Run `fn` holding the lock; released when its promise settles, also on throw. */
  async withLock<T>(fn: () => T | PromiseLike<T>, options?: LockOptions): Promise<Awaited<T>> {
    const guard = await this.lock(options);
    try {
      return await fn();
    } finally {
      guard.unlock();
    }
  }

  /** Run `fn` holding the lock, blocking to take it; released when `fn` returns or throws. */
  withLockSync<T>(fn: () => T, options?: LockOptions): T {
    const guard = this.lockSync(options);
    try {
      return fn();
    } finally {
      guard.unlock();
    }
  }

  /** Whether any thread holds the lock right now (a snapshot, for diagnostics). */
  get locked(): boolean {
    return (Atomics.load(this.#words, STATE) & OWNER_MASK) !== 0;
  }

  #granted(abandoned: boolean): MutexGuard {
    // Under the lock: a plain float64 store is race-free.
    const n = ++this.#f64[ACQUIRED];
    if ((n & (HOLD_SAMPLE - 1)) === 0) Mutex.#sample(this, n);
    return new MutexGuard(this, abandoned);
  }

  static #sample(mutex: Mutex, n: number): void {
    mutex.#timing = 1;
    mutex.#views.sampled = n;
    mutex.#views.since = performance.now();
  }

  static #recordHold(mutex: Mutex): void {
    const views = mutex.#views, f64 = mutex.#f64, ns = (performance.now() - views.since) * 1e6;
    mutex.#timing = 0;
    // Only the hold that was sampled: a hold taken through one handle may be released through
    // another, and the count tells the sampled acquisition from the one released now.
    if (f64[ACQUIRED] === views.sampled && ns > f64[HOLD_MAX]) f64[HOLD_MAX] = ns;
  }
}

/** Proof of holding a Mutex. `using guard = m.lockSync()` unlocks at scope end. */
export class MutexGuard {
  readonly #mutex: Mutex;
  #held = true;
  /** True when the previous holder died holding the lock: the data it guards may be half-written. */
  readonly abandoned: boolean;

  /** @internal */
  constructor(mutex: Mutex, abandoned: boolean) {
    this.#mutex = mutex;
    this.abandoned = abandoned;
  }

  /** The mutex this guard holds. */
  get mutex(): Mutex {
    return this.#mutex;
  }

  /** False once this guard has released its hold. */
  get held(): boolean {
    return this.#held;
  }

  /** Release the lock. A second unlock through the same guard throws ERR_LOCK_NOT_LOCKED. */
  unlock(): void {
    if (!this.#held) spent(this.#mutex);
    this.#held = false;
    this.#mutex.unlock(); // the hold is this thread's: the mutex's own unlock (an instance call: no class binding to check)
  }

  [Symbol.dispose](): void {
    if (this.#held) this.unlock();
  }
}

/** Out of line: a message built in unlock() counts against what V8 inlines into a caller's loop. */
function spent(m: Mutex): never {
  throw new ERR_LOCK_NOT_LOCKED(`${labelOf(m)} (this guard already released it)`);
}

function labelOf(m: Mutex): string {
  return typeof m.name === 'string' ? JSON.stringify(m.name) : `#${m.name}`;
}
