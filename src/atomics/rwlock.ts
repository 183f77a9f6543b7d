/**
 * RWLock: a reader-writer lock in one slot of a LockTable. Many threads may
 * hold it shared (read) at once, or one thread exclusively (write). This file
 * holds the public class, the guards and the fast paths (one CAS each; a
 * read also records the share in the thread's holdings, see
 * tryFirstShare()); the state word, the fairness policy (phase-fair: neither
 * readers nor writers starve), the wait protocols and recovery live in
 * rwlock-word.ts.
 *
 * Cost (bench/rwlock.ts, this 2-vCPU machine): a write lock+unlock costs
 * about what a Mutex does; a read lock+unlock about 4× (the holdings record,
 * marked around the CAS so a killed reader is recovered exactly). A
 * reader-writer lock pays off when read sections are long enough to run in
 * parallel; for sections of a few hundred ns a Mutex is faster.
 *
 * Ownership is per thread, as for the Mutex:
 * - the write lock belongs to the thread that took it: writeUnlock() from
 *   another thread is ERR_LOCK_NOT_OWNER, and any further read or write
 *   acquire from the writing thread is ERR_LOCK_DEADLOCK (downgrade() goes
 *   from writing to reading without letting another writer in);
 * - read shares are counted per thread: a thread that holds one may take
 *   more at once, even while a writer waits (it is in already; making it
 *   wait behind a writer that waits for it would deadlock). Asking for the
 *   write lock while holding a share is ERR_LOCK_DEADLOCK; tryUpgrade() is
 *   the way that cannot deadlock.
 */
import type { TableCore } from './core.js';
import type { LockTable } from './table.js';
import { ownHolding } from './holdings.js';
import { F_ACQUIRED, F_HOLD_MAX_NS, S_AUX, S_STATE } from './layout.js';
import { type LockOptions, type Wait, kNoWait, parseLockOptions } from './options.js';
import {
  OWNER_MASK, READERS_MASK, SHARES_MASK, acquireAsync, acquireSync, downgrade, readUnlock, readersOf,
  tryFirstShare, tryReadSlow, tryUpgrade, tryWriteSlow, writeUnlockSlow,
} from './rwlock-word.js';
import { ERR_INVALID_ARG_TYPE, ERR_LOCK_NOT_LOCKED } from '../errors.js';

/** One acquisition in HOLD_SAMPLE reads the clock at lock and unlock (see mutex.ts). */
const HOLD_SAMPLE = 64;

export class RWLock {
  // The fast paths read only these fields: no hop through the core.
  readonly #words: Int32Array;
  readonly #f64: Float64Array;
  readonly #st: number;
  readonly #aux: number;
  readonly #acquired: number;
  readonly #tid: number;
  readonly #core: TableCore;
  readonly #base: number;
  #sampleTick = 0;
  /** The table this lives in: pass `table.buffer` to another thread, or send this handle (workers/transfer.ts). */
  get table(): LockTable {
    return this.#core.table as LockTable;
  }

  /** The slot this lock lives in. */
  readonly slot: number;
  /** The name it was reached by, or its slot index. */
  readonly name: string | number;

  /** @internal Use `table.rwlock(name)`. */
  constructor(core: TableCore, slot: number, base: number, name: string | number) {
    this.#core = core;
    this.#words = core.words;
    this.#f64 = core.f64;
    this.#tid = core.tid;
    this.#base = base;
    this.#st = base + S_STATE;
    this.#aux = base + S_AUX;
    this.#acquired = (base + F_ACQUIRED) >> 1;
    this.slot = slot;
    this.name = name;
  }

  /**
   * Take a read share, blocking this thread (Atomics.wait) while a writer
   * is in or has announced itself. Throws ERR_LOCK_TIMEOUT after
   * `options.timeout` ms, ERR_LOCK_DEADLOCK if this thread holds (or waits
   * for) the write lock or the wait would close a cycle, an AbortError if
   * `options.signal` is already aborted.
   */
  readLockSync(options?: LockOptions): RWLockReadGuard {
    // Options are checked before the words are touched; the common call has none to check.
    const wait = options === undefined ? kNoWait : parseLockOptions(options);
    return tryFirstShare(this.#core, this.slot, this.#base) ? this.#read(false) : this.#readSlowSync(wait);
  }

  #readSlowSync(wait: Wait): RWLockReadGuard {
    const abandoned = tryReadSlow(this.#core, this.slot, this.#base);
    return this.#read(abandoned ?? acquireSync(this.#core, this.slot, this.#base, wait, false));
  }

  /**
   * Take a read share without blocking the event loop (Atomics.waitAsync).
   * Rejects as readLockSync throws, and with an AbortError (cause: the
   * signal's reason) when `options.signal` aborts while it waits.
   */
  readLock(options?: LockOptions): Promise<RWLockReadGuard> {
    let wait: Wait, abandoned: boolean | undefined;
    try {
      wait = options === undefined ? kNoWait : parseLockOptions(options);
      if (tryFirstShare(this.#core, this.slot, this.#base)) return Promise.resolve(this.#read(false));
      abandoned = tryReadSlow(this.#core, this.slot, this.#base);
    } catch (err) {
      return Promise.reject(err);
    }
    if (abandoned !== undefined) return Promise.resolve(this.#read(abandoned));
    return acquireAsync(this.#core, this.slot, this.#base, wait, false).then((a) => this.#read(a));
  }

  /** Take a read share if no writer is in or announced right now: a guard, or null. Never waits. */
  tryReadLock(): RWLockReadGuard | null {
    if (tryFirstShare(this.#core, this.slot, this.#base)) return this.#read(false);
    const abandoned = tryReadSlow(this.#core, this.slot, this.#base);
    return abandoned === undefined ? null : this.#read(abandoned);
  }

  /**
   * Take the write lock, blocking this thread until it is the only holder.
   * Throws ERR_LOCK_TIMEOUT, ERR_LOCK_DEADLOCK (this thread holds it, holds a
   * read share, or the wait would close a cycle) and AbortError as
   * readLockSync does.
   */
  writeLockSync(options?: LockOptions): RWLockWriteGuard {
    const wait = options === undefined ? kNoWait : parseLockOptions(options);
    if (Atomics.load(this.#words, this.#aux) === 0 && Atomics.compareExchange(this.#words, this.#st, 0, this.#tid) === 0) {
      return this.#write(false);
    }
    return this.#write(acquireSync(this.#core, this.slot, this.#base, wait, true));
  }

  /** Take the write lock without blocking the event loop. Rejects as writeLockSync throws, and on abort. */
  writeLock(options?: LockOptions): Promise<RWLockWriteGuard> {
    let wait: Wait;
    try {
      wait = options === undefined ? kNoWait : parseLockOptions(options);
    } catch (err) {
      return Promise.reject(err);
    }
    if (Atomics.load(this.#words, this.#aux) === 0 && Atomics.compareExchange(this.#words, this.#st, 0, this.#tid) === 0) {
      return Promise.resolve(this.#write(false));
    }
    return acquireAsync(this.#core, this.slot, this.#base, wait, true).then((a) => this.#write(a));
  }

  /** Take the write lock if nobody holds, waits for or is queued on the lock right now: a guard, or null. */
  tryWriteLock(): RWLockWriteGuard | null {
    if (Atomics.load(this.#words, this.#aux) === 0 && Atomics.compareExchange(this.#words, this.#st, 0, this.#tid) === 0) {
      return this.#write(false);
    }
    const abandoned = tryWriteSlow(this.#core, this.#base);
    return abandoned === undefined ? null : this.#write(abandoned);
  }

  /**
   * Give back one read share of this thread, without a guard. Throws
   * ERR_LOCK_NOT_LOCKED when this thread holds none.
   */
  readUnlock(): void {
    RWLock.#readUnlock(this);
  }

  /**
   * Release the write lock this thread holds, without a guard. Throws
   * ERR_LOCK_NOT_OWNER when another thread holds it and ERR_LOCK_NOT_LOCKED
   * when nobody does (or this thread's own writeLock() has not resolved yet).
   */
  writeUnlock(): void {
    if (this.#core.acquiring[this.slot] === 1) {
      throw new ERR_LOCK_NOT_LOCKED(`${labelOf(this)} (this thread is still waiting for it)`);
    }
    if (Atomics.compareExchange(this.#words, this.#st, this.#tid, 0) !== this.#tid) {
      writeUnlockSlow(this.#core, this.slot, this.#base);
    }
  }

  /** Run `fn` holding a read share; released when its promise settles, also on throw. */
  async withReadLock<T>(fn: () => T | PromiseLike<T>, options?: LockOptions): Promise<Awaited<T>> {
    checkFunction(fn);
    const guard = await this.readLock(options);
    try {
      return await fn();
    } finally {
      guard.unlock();
    }
  }

  /** Run `fn` holding a read share, blocking to take it; released when `fn` returns or throws. */
  withReadLockSync<T>(fn: () => T, options?: LockOptions): T {
    checkFunction(fn);
    const guard = this.readLockSync(options);
    try {
      return fn();
    } finally {
      guard.unlock();
    }
  }

  /** Run `fn` holding the write lock; released when its promise settles, also on throw. */
  async withWriteLock<T>(fn: () => T | PromiseLike<T>, options?: LockOptions): Promise<Awaited<T>> {
    checkFunction(fn);
    const guard = await this.writeLock(options);
    try {
      return await fn();
    } finally {
      guard.unlock();
    }
  }

  /** Run `fn` holding the write lock, blocking to take it; released when `fn` returns or throws. */
  withWriteLockSync<T>(fn: () => T, options?: LockOptions): T {
    checkFunction(fn);
    const guard = this.writeLockSync(options);
    try {
      return fn();
    } finally {
      guard.unlock();
    }
  }

  /** Whether a writer holds the lock right now (a snapshot, for diagnostics). */
  get writeLocked(): boolean {
    const s = Atomics.load(this.#words, this.#st);
    return (s & OWNER_MASK) !== 0 && (s & READERS_MASK) === 0;
  }

  /** How many threads hold read shares right now (a snapshot, for diagnostics). */
  get readers(): number {
    return readersOf(Atomics.load(this.#words, this.#st));
  }

  /** How many read shares this thread holds. */
  get readSharesHeld(): number {
    return ownHolding(this.#core, this.slot) & SHARES_MASK;
  }

  #read(abandoned: boolean): RWLockReadGuard {
    // Shared mode: concurrent readers race on this store, so read counts are approximate.
    this.#f64[this.#acquired] += 1;
    return new RWLockReadGuard(this, abandoned, (++this.#sampleTick & (HOLD_SAMPLE - 1)) === 0 ? performance.now() : 0);
  }

  #write(abandoned: boolean): RWLockWriteGuard {
    this.#f64[this.#acquired] += 1; // under the write lock: race-free
    return new RWLockWriteGuard(this, abandoned, (++this.#sampleTick & (HOLD_SAMPLE - 1)) === 0 ? performance.now() : 0);
  }

  static #readUnlock(rw: RWLock): void {
    if (!readUnlock(rw.#core, rw.slot, rw.#base)) notLocked(rw, 'this thread holds no read share');
  }

  static #recordHold(rw: RWLock, heldSince: number): void {
    // Racy between readers (a lost maximum at worst); race-free for the writer.
    const ns = (performance.now() - heldSince) * 1e6, i = (rw.#base + F_HOLD_MAX_NS) >> 1;
    if (ns > rw.#f64[i]) rw.#f64[i] = ns;
  }

  /** @internal Called by RWLockReadGuard. */
  static releaseRead(rw: RWLock, heldSince: number): void {
    if (heldSince !== 0) RWLock.#recordHold(rw, heldSince);
    RWLock.#readUnlock(rw);
  }

  /** @internal Called by RWLockWriteGuard. */
  static releaseWrite(rw: RWLock, heldSince: number): void {
    if (heldSince !== 0) RWLock.#recordHold(rw, heldSince);
    if (Atomics.compareExchange(rw.#words, rw.#st, rw.#tid, 0) !== rw.#tid) writeUnlockSlow(rw.#core, rw.slot, rw.#base);
  }

  /** @internal Called by RWLockWriteGuard.downgrade(). */
  static downgrade(rw: RWLock, heldSince: number): RWLockReadGuard {
    if (heldSince !== 0) RWLock.#recordHold(rw, heldSince);
    downgrade(rw.#core, rw.slot, rw.#base);
    return new RWLockReadGuard(rw, false, 0);
  }

  /** @internal Called by RWLockReadGuard.tryUpgrade(). */
  static upgrade(rw: RWLock): RWLockWriteGuard | null {
    if (!tryUpgrade(rw.#core, rw.slot, rw.#base)) return null;
    rw.#f64[rw.#acquired] += 1;
    return new RWLockWriteGuard(rw, false, 0);
  }
}

/** Proof of one read share. `using guard = rw.readLockSync()` releases it at scope end. */
export class RWLockReadGuard {
  readonly #rw: RWLock;
  readonly #heldSince: number;
  #held = true;
  /** True when the last writer died holding the lock: the data it guards may be half-written. */
  readonly abandoned: boolean;

  /** @internal */
  constructor(rw: RWLock, abandoned: boolean, heldSince: number) {
    this.#rw = rw;
    this.abandoned = abandoned;
    this.#heldSince = heldSince;
  }

  get rwlock(): RWLock {
    return this.#rw;
  }

  /** Give back this share. A second unlock through the same guard throws ERR_LOCK_NOT_LOCKED. */
  unlock(): void {
    this.#check();
    this.#held = false;
    RWLock.releaseRead(this.#rw, this.#heldSince);
  }

  /**
   * Turn this share into the write lock, without waiting: a write guard (this
   * guard is then spent), or null (this guard still holds its share).
   * Succeeds only when this is the only share of the only reader thread and
   * no writer has announced itself or become heir, and no reader is queued:
   * two readers that both tried to upgrade by waiting would deadlock, so
   * this never waits.
   */
  tryUpgrade(): RWLockWriteGuard | null {
    this.#check();
    const guard = RWLock.upgrade(this.#rw);
    if (guard !== null) this.#held = false;
    return guard;
  }

  [Symbol.dispose](): void {
    if (this.#held) this.unlock();
  }

  #check(): void {
    if (!this.#held) notLocked(this.#rw, 'this guard already released its share');
  }
}

/** Proof of holding the write lock. `using guard = rw.writeLockSync()` unlocks at scope end. */
export class RWLockWriteGuard {
  readonly #rw: RWLock;
  readonly #heldSince: number;
  #held = true;
  /** True when the previous writer died holding the lock: the data it guards may be half-written. */
  readonly abandoned: boolean;

  /** @internal */
  constructor(rw: RWLock, abandoned: boolean, heldSince: number) {
    this.#rw = rw;
    this.abandoned = abandoned;
    this.#heldSince = heldSince;
  }

  get rwlock(): RWLock {
    return this.#rw;
  }

  /** Release the write lock. A second unlock through the same guard throws ERR_LOCK_NOT_LOCKED. */
  unlock(): void {
    this.#check();
    this.#held = false;
    RWLock.releaseWrite(this.#rw, this.#heldSince);
  }

  /**
   * Turn the write lock into a read share in one step: readers queued behind
   * it come in with it, and no writer gets in before this share is released.
   * This guard is then spent; the returned one holds the share.
   */
  downgrade(): RWLockReadGuard {
    this.#check();
    const guard = RWLock.downgrade(this.#rw, this.#heldSince);
    this.#held = false;
    return guard;
  }

  [Symbol.dispose](): void {
    if (this.#held) this.unlock();
  }

  #check(): void {
    if (!this.#held) notLocked(this.#rw, 'this guard already released it');
  }
}

function checkFunction(fn: unknown): void {
  if (typeof fn !== 'function') throw new ERR_INVALID_ARG_TYPE('fn', 'a function', fn);
}

/** Out of line: a message built in a fast path counts against what V8 inlines into a caller's loop. */
function notLocked(rw: RWLock, why: string): never {
  throw new ERR_LOCK_NOT_LOCKED(`${labelOf(rw)} (${why})`);
}

function labelOf(rw: RWLock): string {
  return typeof rw.name === 'string' ? JSON.stringify(rw.name) : `#${rw.name}`;
}
