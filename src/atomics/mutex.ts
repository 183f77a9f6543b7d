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
import type { TableCore } from './core.js';
import type { LockTable } from './table.js';
import { F_ACQUIRED, F_HOLD_MAX_NS, S_STATE } from './layout.js';
import { OWNER_MASK, lockSlowAsync, lockSlowSync, tryLockSlow, unlockSlow } from './mutex-word.js';
import { type LockOptions, type Wait, kNoWait, parseLockOptions } from './options.js';
import { ERR_LOCK_NOT_LOCKED } from '../errors.js';

/**
 * Hold times are sampled: one acquisition in HOLD_SAMPLE reads the clock at
 * lock and at unlock. performance.now() costs ~100 ns on this machine, three
 * times a whole uncontended lock+unlock, so the others read no clock at all.
 */
const HOLD_SAMPLE = 64;

export class Mutex {
  // The fast paths read only these fields: no hop through the core.
  readonly #words: Int32Array;
  readonly #f64: Float64Array;
  readonly #st: number;
  readonly #acquired: number;
  readonly #tid: number;
  readonly #core: TableCore;
  readonly #base: number;
  /** Per handle, not per thread: a thread taking two locks in turn would sample only one of them. */
  #sampleTick = 0;
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
    this.#words = core.words;
    this.#f64 = core.f64;
    this.#tid = core.tid;
    this.#base = base;
    this.#st = base + S_STATE;
    this.#acquired = (base + F_ACQUIRED) >> 1;
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
    const wait = options === undefined ? kNoWait : parseLockOptions(options);
    if (Atomics.compareExchange(this.#words, this.#st, 0, this.#tid) === 0) return this.#granted(false);
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
    if (Atomics.compareExchange(this.#words, this.#st, 0, this.#tid) === 0) {
      return Promise.resolve(this.#granted(false));
    }
    return lockSlowAsync(this.#core, this.slot, this.#base, wait).then((abandoned) => this.#granted(abandoned));
  }

  /** Take the lock if it is free right now: a guard, or null. Never waits. */
  tryLock(): MutexGuard | null {
    if (Atomics.compareExchange(this.#words, this.#st, 0, this.#tid) === 0) return this.#granted(false);
    const abandoned = tryLockSlow(this.#core, this.#base);
    return abandoned === undefined ? null : this.#granted(abandoned);
  }

  /**
   * Release the lock this thread holds, without a guard. Throws
   * ERR_LOCK_NOT_OWNER when another thread holds it and ERR_LOCK_NOT_LOCKED
   * when nobody does.
   */
  unlock(): void {
    if (Atomics.compareExchange(this.#words, this.#st, this.#tid, 0) !== this.#tid) {
      unlockSlow(this.#core, this.slot, this.#base);
    }
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
    return (Atomics.load(this.#words, this.#st) & OWNER_MASK) !== 0;
  }

  #granted(abandoned: boolean): MutexGuard {
    // Under the lock: a plain float64 store is race-free.
    this.#f64[this.#acquired] += 1;
    return new MutexGuard(this, abandoned, (++this.#sampleTick & (HOLD_SAMPLE - 1)) === 0 ? performance.now() : 0);
  }

  /** @internal Called by MutexGuard.unlock(). */
  static release(mutex: Mutex, heldSince: number): void {
    if (heldSince !== 0) Mutex.#recordHold(mutex, heldSince);
    if (Atomics.compareExchange(mutex.#words, mutex.#st, mutex.#tid, 0) !== mutex.#tid) {
      unlockSlow(mutex.#core, mutex.slot, mutex.#base);
    }
  }

  static #recordHold(mutex: Mutex, heldSince: number): void {
    const ns = (performance.now() - heldSince) * 1e6, i = (mutex.#base + F_HOLD_MAX_NS) >> 1;
    if (ns > mutex.#f64[i]) mutex.#f64[i] = ns;
  }
}

/** Proof of holding a Mutex. `using guard = m.lockSync()` unlocks at scope end. */
export class MutexGuard {
  readonly #mutex: Mutex;
  readonly #heldSince: number;
  #held = true;
  /** True when the previous holder died holding the lock: the data it guards may be half-written. */
  readonly abandoned: boolean;

  /** @internal */
  constructor(mutex: Mutex, abandoned: boolean, heldSince: number) {
    this.#mutex = mutex;
    this.abandoned = abandoned;
    this.#heldSince = heldSince;
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
    if (!this.#held) throw new ERR_LOCK_NOT_LOCKED(`${labelOf(this.#mutex)} (this guard already released it)`);
    this.#held = false;
    Mutex.release(this.#mutex, this.#heldSince);
  }

  [Symbol.dispose](): void {
    if (this.#held) this.unlock();
  }
}

function labelOf(m: Mutex): string {
  return typeof m.name === 'string' ? JSON.stringify(m.name) : `#${m.name}`;
}
