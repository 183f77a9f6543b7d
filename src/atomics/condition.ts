/**
 * Condition: a futex condition variable in one slot of a LockTable, used with
 * a Mutex (of this table or any other), as pthread_cond_t is used with a
 * pthread mutex. This file holds the public class and the steps of wait()
 * around the sleep; the two words, the order of the steps that prevents a
 * lost notification, the sleep itself and recovery live in condition-word.ts.
 */
import type { TableCore } from './core.js';
import type { LockTable } from './table.js';
import { awaitNotify, awaitNotifySync, wake } from './condition-word.js';
import { addHolding, removeHolding } from './holdings.js';
import { F_ACQUIRED, S_BELL, S_STATE } from './layout.js';
import { MutexGuard } from './mutex.js';
import { type LockOptions, type Wait, checkInteger, kNoWait, parseLockOptions } from './options.js';
import { recordWait } from './wait.js';
import { ERR_INVALID_ARG_TYPE, ERR_LOCK_NOT_LOCKED } from '../errors.js';

/** The most waiters one notify(n) can name (Atomics.notify's own limit is +Infinity: use notifyAll). */
export const MAX_NOTIFY = 0x7fffffff;

export class Condition {
  readonly #core: TableCore;
  readonly #words: Int32Array;
  readonly #base: number;
  readonly #seq: number;
  readonly #waiters: number;
  /** The table this lives in: pass `table.buffer` to another thread, or send this handle (workers/transfer.ts). */
  get table(): LockTable {
    return this.#core.table as LockTable;
  }

  /** The slot this condition lives in. */
  readonly slot: number;
  /** The name it was reached by, or its slot index. */
  readonly name: string | number;

  /** @internal Use `table.condition(name)`. */
  constructor(core: TableCore, slot: number, base: number, name: string | number) {
    this.#core = core;
    this.#words = core.words;
    this.#base = base;
    this.#seq = base + S_STATE;
    this.#waiters = base + S_BELL;
    this.slot = slot;
    this.name = name;
  }

  /**
   * Release the mutex held through `guard`, block this thread until a
   * notify (or a spurious wake-up), and take the mutex again before
   * returning. `guard` stays valid and holds the mutex again afterwards,
   * also when this throws ERR_LOCK_TIMEOUT (after `options.timeout` ms);
   * `guard.abandoned` then says whether the mutex's last holder died
   * holding it while this thread waited. Wait in a loop on your predicate:
   * `while (!ready()) cv.waitSync(guard)`.
   *
   * The one error after which the mutex is not held is ERR_LOCK_DEADLOCK
   * from re-taking it (waiting for it would close a cycle of threads).
   */
  waitSync(guard: MutexGuard, options?: LockOptions): void {
    const wait = options === undefined ? kNoWait : parseLockOptions(options);
    checkGuard(guard);
    const seq0 = this.#commit(guard);
    let slept = 0, error: unknown = null;
    try {
      try {
        slept = awaitNotifySync(this.#core, this.slot, this.#base, wait, seq0);
      } catch (err) {
        error = err; // ERR_LOCK_TIMEOUT: thrown once the mutex is held again (step 5)
      }
      adopt(guard, guard.mutex.lockSync());
    } finally {
      this.#leave();
    }
    if (error !== null) throw error;
    this.#count(slept);
  }

  /**
   * As waitSync, without blocking the event loop (Atomics.waitAsync); the
   * thread stays alive while it waits. Rejects as waitSync throws, and with
   * an AbortError (cause: the signal's reason) when `options.signal` aborts
   * first; it re-takes the mutex before it rejects, as on timeout. A
   * notification that arrives before the abort wins. Do not unlock `guard`
   * while the wait is pending.
   */
  wait(guard: MutexGuard, options?: LockOptions): Promise<void> {
    let wait: Wait, seq0: number;
    try {
      wait = options === undefined ? kNoWait : parseLockOptions(options);
      checkGuard(guard);
      seq0 = this.#commit(guard);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#waitAsync(guard, seq0, wait);
  }

  async #waitAsync(guard: MutexGuard, seq0: number, wait: Wait): Promise<void> {
    let slept = 0, error: unknown = null;
    try {
      try {
        slept = await awaitNotify(this.#core, this.slot, this.#base, wait, seq0);
      } catch (err) {
        error = err; // ERR_LOCK_TIMEOUT or AbortError: thrown once the mutex is held again (step 5)
      }
      adopt(guard, await guard.mutex.lock());
    } finally {
      this.#leave();
    }
    if (error !== null) throw error;
    this.#count(slept);
  }

  /**
   * Wake up to `n` waiters (default 1), oldest sleepers first; waiters that
   * committed but are not asleep yet return too. Costs one load when nobody
   * waits. Change the predicate holding the mutex; the notify itself may
   * come after unlocking, which is faster: a waiter woken while the mutex is
   * still held often has to park on it and be woken a second time
   * (bench/condition.ts: about 1.4× instead of 1.7× a raw wake-up round trip).
   */
  notify(n = 1): void {
    if (n !== 1) checkInteger(n, 'n', 1, MAX_NOTIFY);
    this.#wake(n);
  }

  /** Wake every waiter. */
  notifyAll(): void {
    this.#wake(Infinity);
  }

  /**
   * Threads inside wait()/waitSync() right now, from before they release the
   * mutex until they hold it again (a snapshot, for diagnostics and tests).
   */
  get waiters(): number {
    return Atomics.load(this.#words, this.#waiters);
  }

  #wake(n: number): void {
    wake(this.#words, this.#base, n);
  }

  /** Steps 1-3 of wait(); returns seq0. Undoes itself if the guard does not hold its mutex. */
  #commit(guard: MutexGuard): number {
    const core = this.#core, w = this.#words;
    // Step 1, before reading the sequence (see the table at the top).
    Atomics.add(w, this.#waiters, 1);
    try {
      addHolding(core, this.slot, 1);
    } catch (err) {
      Atomics.sub(w, this.#waiters, 1);
      throw err;
    }
    // Step 2, *before* releasing the mutex: a notify after the release moves it past seq0.
    const seq0 = Atomics.load(w, this.#seq);
    try {
      // Step 3. Released without spending the guard, which holds the mutex again when wait returns.
      guard.mutex.unlock();
    } catch (err) {
      this.#leave(); // not held by this thread (ERR_LOCK_NOT_LOCKED / ERR_LOCK_NOT_OWNER): nothing waited
      throw err;
    }
    return seq0;
  }

  /** Step 6. Holding first: a death between the two leaves the count one too high (a wasted bump), never too low (a lost wake-up). */
  #leave(): void {
    removeHolding(this.#core, this.slot, 1);
    Atomics.sub(this.#words, this.#waiters, 1);
  }

  /**
   * Counters of a wait that was woken, written holding the mutex again:
   * race-free as long as the condition is always used with one mutex (the
   * pthread rule). acquisitions = waits that were woken; contended = those
   * of them that slept; `slept` is park.ts's time slept.
   */
  #count(slept: number): void {
    const f = this.#core.f64;
    f[(this.#base + F_ACQUIRED) >> 1] += 1;
    if (slept > 0) recordWait(f, this.#base, slept);
  }
}

function checkGuard(guard: unknown): asserts guard is MutexGuard {
  if (!(guard instanceof MutexGuard)) throw new ERR_INVALID_ARG_TYPE('guard', 'a MutexGuard', guard);
  // A spent guard must not release a hold this thread took through another guard.
  if (!guard.held) throw new ERR_LOCK_NOT_LOCKED(`${JSON.stringify(guard.mutex.name)} (this guard already released it)`);
}

/**
 * Let `guard` stand for the hold that `fresh` just took: the same mutex,
 * held by this thread again. `fresh` is dropped (it holds nothing more).
 * `abandoned` is a plain field of MutexGuard, readonly to users only.
 */
function adopt(guard: MutexGuard, fresh: MutexGuard): void {
  (guard as { abandoned: boolean }).abandoned = fresh.abandoned;
}

