/**
 * Semaphore: a counting semaphore in one slot of a LockTable, with a fixed
 * number of permits (S_AUX) shared by every thread. This file holds the
 * public class and the fast paths; the state words, the wait protocol, the
 * fairness policy and recovery live in semaphore-word.ts.
 *
 * Permits are owned by the thread that took them, as a Mutex is: each
 * thread's count is recorded in the table (holdings.ts), `release(n)` by a
 * thread holding fewer than n throws ERR_LOCK_NOT_OWNER (so the count can
 * never grow past `permits`), and the permits of a thread that dies are given
 * back, the next acquisition being told (`guard.abandoned`). One thread may
 * hold several permits, taken by one call or by several (its async tasks,
 * say); any of them may give them back, in any split.
 */
import { type TableCore, slotViews } from './core.js';
import type { LockTable } from './table.js';
import {
  NO_PAIR, type Pair, countOf, findRecord, firstOwnPair, give, lastPairsOf, recordNames, recordOf, recordServes, take,
} from './holdings.js';
import { F_ACQUIRED, F_HOLD_MAX_NS, S_AUX, S_BELL, S_STATE } from './layout.js';
import { type LockOptions, type Wait, checkInteger, kNoWait, parseLockOptions } from './options.js';
import {
  ABANDONED, HEIR_MASK, PARKED, TAKEN, acquireSlowAsync, acquireSlowSync, permitHolders, tryAcquireSlow, wakeAfterRelease,
} from './semaphore-word.js';
import { ERR_LOCK_NOT_LOCKED, ERR_LOCK_NOT_OWNER } from '../errors.js';

/*
 * Module-local copies of the constants the fast paths use: an imported
 * binding costs a load and a hole check at each use in a caller's loop.
 */
const NONE = NO_PAIR;
const STATE = S_STATE, BELL = S_BELL, ACQUIRED = F_ACQUIRED >> 1, HOLD_MAX = F_HOLD_MAX_NS >> 1;
const BLOCKED = HEIR_MASK | ABANDONED; // a heir waits, or news of a dead holder: the slow path
const COUNT = TAKEN;
const SLEEPERS = PARKED;

/** The most permits a semaphore can have: the taken count is 31 bits of its state word, beside PARKED. */
export const MAX_PERMITS = 2 ** 30;

/**
 * One acquisition in HOLD_SAMPLE is timed (F_HOLD_MAX_NS), as for Mutex: a
 * clock read costs more than the acquire. Chosen by the slot's acquisition
 * count (approximate for a semaphore, so the choice is too); one timed hold
 * at a time per handle, its start on the handle, its guard marked.
 */
const HOLD_SAMPLE = 64;

export class Semaphore {
  // The fast paths read only these fields: no hop through the core.
  /** The table's words (this thread's holdings live there), and views of this slot alone (core.ts, slotViews). */
  readonly #words: Int32Array;
  readonly #slot: Int32Array;
  readonly #f64: Float64Array;
  readonly #permits: number;
  readonly #core: TableCore;
  readonly #base: number;
  /** This thread's record of its permits (holdings.ts), as last used; checked before each use. */
  #rec: Pair = NONE;
  /** What recordServes() checks #rec against: this thread's first pair, and its last-pair cache for this table. */
  readonly #first: Pair;
  readonly #last: Uint8Array;
  /** When the timed hold taken through this handle began; 0 when none is out. */
  #since = 0;
  /** The table this lives in: pass `table.buffer` to another thread, or send this handle (workers/transfer.ts). */
  get table(): LockTable {
    return this.#core.table as LockTable;
  }

  /** The slot this semaphore lives in. */
  readonly slot: number;
  /** The name it was reached by, or its slot index. */
  readonly name: string | number;

  /** @internal Use `table.semaphore(name, permits)`. */
  constructor(core: TableCore, slot: number, base: number, name: string | number) {
    this.#core = core;
    const views = slotViews(core, slot, base);
    this.#words = core.words;
    this.#slot = views.words;
    this.#f64 = views.f64;
    this.#base = base;
    this.#permits = Atomics.load(core.words, base + S_AUX); // fixed when the slot took its kind
    this.#first = firstOwnPair(core);
    this.#last = lastPairsOf(core);
    this.slot = slot;
    this.name = name;
  }

  /** The fixed number of permits, as the first `table.semaphore(name, permits)` set it. */
  get permits(): number {
    return this.#permits;
  }

  /** Permits nobody holds right now (a snapshot, for diagnostics: it may change before you read it). */
  get available(): number {
    return this.#permits - (Atomics.load(this.#slot, STATE) & TAKEN);
  }

  /**
   * Take `n` permits (an integer from 1 to `permits`), blocking this thread
   * (Atomics.wait) until they are free. Throws ERR_LOCK_TIMEOUT after
   * `options.timeout` ms, an AbortError if `options.signal` is already
   * aborted, and ERR_LOCK_DEADLOCK if this thread would wait forever (it holds
   * so many that n more can never come, or the wait closes a cycle of
   * blocked threads).
   */
  acquireSync(n = 1, options?: LockOptions): SemaphoreGuard {
    // Arguments are checked before the words are touched; options take the other way in.
    if (n !== 1) checkInteger(n, 'n', 1, this.#permits);
    if (options !== undefined) return this.#acquireSyncWith(n, parseLockOptions(options));
    return this.#take(n) ? this.#granted(n, false) : this.#acquireSlowSync(n, kNoWait);
  }

  #acquireSyncWith(n: number, wait: Wait): SemaphoreGuard {
    return this.#take(n) ? this.#granted(n, false) : this.#acquireSlowSync(n, wait);
  }

  #acquireSlowSync(n: number, wait: Wait): SemaphoreGuard {
    const taken = acquireSlowSync(this.#core, this.slot, this.#base, n, this.#permits, wait, this.#rec);
    this.#rec = taken.rec;
    return this.#granted(n, taken.abandoned);
  }

  /**
   * Take `n` permits without blocking the event loop (Atomics.waitAsync).
   * The thread stays alive while it waits. Rejects as acquireSync throws
   * (but never for holding too many: another task of this thread may give
   * them back), and with an AbortError (cause: the signal's reason) when
   * `options.signal` aborts while it waits; an aborted waiter leaves nothing
   * behind. Many tasks of one thread may wait at once.
   */
  acquire(n = 1, options?: LockOptions): Promise<SemaphoreGuard> {
    let wait: Wait;
    try {
      if (n !== 1) checkInteger(n, 'n', 1, this.#permits);
      wait = options === undefined ? kNoWait : parseLockOptions(options);
      if (this.#take(n)) return Promise.resolve(this.#granted(n, false));
    } catch (err) {
      return Promise.reject(err);
    }
    return acquireSlowAsync(this.#core, this.slot, this.#base, n, this.#permits, wait, this.#rec).then((taken) => {
      this.#rec = taken.rec;
      return this.#granted(n, taken.abandoned);
    });
  }

  /**
   * Take `n` permits if they are free right now and no starving waiter has
   * claimed the next ones: a guard, or null. Never waits.
   */
  tryAcquire(n = 1): SemaphoreGuard | null {
    if (n !== 1) checkInteger(n, 'n', 1, this.#permits);
    return this.#take(n) ? this.#granted(n, false) : this.#tryAcquireSlow(n);
  }

  #tryAcquireSlow(n: number): SemaphoreGuard | null {
    const rec = tryAcquireSlow(this.#core, this.slot, this.#base, n, this.#permits, this.#rec);
    if (rec === 0) return null;
    this.#rec = Math.abs(rec) as Pair;
    return this.#granted(n, rec < 0);
  }

  /**
   * Give back `n` permits this thread holds, without a guard. Throws
   * ERR_LOCK_NOT_OWNER, changing nothing, when this thread holds fewer than
   * n (permits taken by another thread are theirs to give back).
   */
  release(n = 1): void {
    if (n !== 1) checkInteger(n, 'n', 1, this.#permits);
    Semaphore.#give(this, n);
  }

  /**
   * The fast path: one CAS. False, having taken nothing, when a heir waits,
   * news of a dead holder waits, too few permits are free, or the CAS lost a
   * race (the slow path retries).
   */
  #take(n: number): boolean {
    const w = this.#words, words = this.#slot, slot = this.slot;
    // A heir, or news of a dead holder: slow path. A plain read: a stale value
    // only lets this one acquire past a heir that has just claimed (the
    // bounded bypass of semaphore-word.ts), or sends it to the slow path.
    if ((words[BELL] & BLOCKED) !== 0) return false;
    let rec = this.#rec;
    if (!recordServes(w, rec, slot, this.#first, this.#last)) {
      rec = this.#rec = recordOf(this.#core, slot, NONE); // makes a record counting 0; may throw, so before the CAS
    }
    // A plain read too: the CAS checks it, and a stale value only fails it.
    const s = words[STATE];
    // The CAS and the record's credit in one step (holdings.ts take()).
    return (s & COUNT) <= this.#permits - n && take(words, STATE, s, s + n, w, rec, slot, n);
  }

  #granted(n: number, abandoned: boolean): SemaphoreGuard {
    // Racy between holders (see recordWait in semaphore-word.ts): approximate.
    const count = ++this.#f64[ACQUIRED];
    return new SemaphoreGuard(this, n, abandoned, (count & (HOLD_SAMPLE - 1)) === 0 && Semaphore.#startTiming(this));
  }

  static #startTiming(sem: Semaphore): boolean {
    if (sem.#since !== 0) return false; // a timed hold of this handle is still out
    sem.#since = performance.now();
    return true;
  }

  /** @internal Called by release() and SemaphoreGuard.release(); `timed`: the guard's hold is the timed one. */
  static give(sem: Semaphore, n: number, timed: boolean): void {
    if (timed) {
      const ns = (performance.now() - sem.#since) * 1e6;
      sem.#since = 0;
      if (ns > sem.#f64[HOLD_MAX]) sem.#f64[HOLD_MAX] = ns;
    }
    Semaphore.#give(sem, n);
  }

  static #give(sem: Semaphore, n: number): void {
    const w = sem.#words;
    let rec = sem.#rec;
    if (!recordNames(w, rec, sem.slot)) rec = sem.#rec = findRecord(sem.#core, sem.slot);
    const held = rec === NONE ? 0 : countOf(w, rec);
    if (held < n) Semaphore.#notOwner(sem, n, held);
    // Off the record, then back to the word, in one step (holdings.ts give()).
    const old = give(w, rec, held, n, sem.#slot, STATE);
    if ((old & SLEEPERS) !== 0) wakeAfterRelease(w, sem.#base, old, n);
  }

  static #notOwner(sem: Semaphore, n: number, held: number): never {
    const core = sem.#core;
    const holders = permitHolders(core, sem.#base, sem.slot).filter((t) => t !== core.tid);
    throw new ERR_LOCK_NOT_OWNER(`${core.label(sem.slot)} (release(${n}) by a thread holding ${held} of its permits)`,
      holders[0] ?? 0, core.tid);
  }
}

/**
 * Proof of holding `permits` permits of a Semaphore, in this thread.
 * `using guard = s.acquireSync(2)` gives them back at scope end.
 */
export class SemaphoreGuard {
  readonly #sem: Semaphore;
  readonly #timed: boolean;
  #held = true;
  /** How many permits this guard holds. */
  readonly permits: number;
  /**
   * True when a thread died holding permits of this semaphore and this is
   * the first acquisition since they were given back: whatever the dead
   * thread was doing with them may be half-done.
   */
  readonly abandoned: boolean;

  /** @internal */
  constructor(sem: Semaphore, permits: number, abandoned: boolean, timed: boolean) {
    this.#sem = sem;
    this.permits = permits;
    this.abandoned = abandoned;
    this.#timed = timed;
  }

  /** False once this guard has given its permits back. */
  get held(): boolean {
    return this.#held;
  }

  /** The semaphore this guard holds permits of. */
  get semaphore(): Semaphore {
    return this.#sem;
  }

  /**
   * Give the permits back. A second release through the same guard throws
   * ERR_LOCK_NOT_LOCKED; ERR_LOCK_NOT_OWNER if this thread has already
   * given them back by `semaphore.release(n)`.
   */
  release(): void {
    if (!this.#held) alreadyReleased(this.#sem);
    this.#held = false;
    Semaphore.give(this.#sem, this.permits, this.#timed);
  }

  [Symbol.dispose](): void {
    if (this.#held) this.release();
  }
}

/** Out of line: the message's code would count against what V8 inlines into a caller's loop. */
function alreadyReleased(s: Semaphore): never {
  throw new ERR_LOCK_NOT_LOCKED(`${typeof s.name === 'string' ? JSON.stringify(s.name) : `#${s.name}`} (this guard already released its permits)`);
}
