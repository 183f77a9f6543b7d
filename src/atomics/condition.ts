/**
 * Condition: a futex condition variable in one slot of a LockTable, used with
 * a Mutex (of this table or any other), as pthread_cond_t is used with a
 * pthread mutex. A sequence word that every notify bumps, and a waiter count
 * so that a notify with nobody waiting costs one load (the futex condvar of
 * glibc before 2.25 and of Rust's std).
 *
 * ```
 *  S_STATE  sequence   bumped by each notify that finds a waiter; waiters sleep on it
 *  S_BELL   waiters    threads inside wait(): from before they read the sequence
 *                      until they hold the mutex again
 * ```
 *
 * | step of wait()            | why this order                                               |
 * |---------------------------|--------------------------------------------------------------|
 * | 1. waiters += 1           | before reading the sequence: a notify that reads waiters     |
 * |                           | after step 2 sees us and bumps                               |
 * | 2. seq0 := sequence       | before releasing the mutex: a notify issued after the        |
 * |                           | release bumps the sequence past seq0                         |
 * | 3. release the mutex      | the commit point                                             |
 * | 4. sleep while seq = seq0 | Atomics.wait compares and enqueues atomically: a bump before |
 * |                           | it returns 'not-equal', one after it is followed by a notify |
 * | 5. re-take the mutex      | also on timeout and abort, as pthread_cond_timedwait does    |
 * | 6. waiters -= 1           |                                                              |
 *
 * notify(n): if waiters = 0, return (one load); else sequence += 1, then
 * Atomics.notify(sequence, n).
 *
 * No lost notification: a notify whose load of `waiters` comes after a
 * waiter's step 3 sees that waiter's step 1 (seq-cst), so it bumps the
 * sequence after the waiter read seq0, and then wakes the oldest sleepers
 * (V8's waiter list is FIFO): a sleeper that committed before the bump if
 * any sleeps; one that has not slept yet finds the sequence changed.
 *
 * Spurious wake-ups happen (every committed waiter that is not yet asleep
 * returns on any notify): always wait in a predicate loop. A wake-up that
 * leaves the sequence unchanged (an abort or a recovery waking every sleeper
 * on the word) is not one: that waiter sleeps again.
 *
 * Dead waiters: each waiter holds one unit of the slot in its thread's
 * holdings (holdings.ts) from step 1 to step 6. A thread that dies in
 * between, even one that a notify(1) had already woken, is recovered by
 * recoverHeld below: its count is taken back and every sleeper is woken, so
 * the wake-up it took with it reaches a live waiter.
 */
import type { TableCore } from './core.js';
import type { LockTable } from './table.js';
import { addHolding, removeHolding } from './holdings.js';
import { defineKind } from './kinds.js';
import {
  F_ACQUIRED, KIND_CONDITION, S_BELL, S_STATE, T_WAIT_SLOT, threadBase,
} from './layout.js';
import { Mutex, MutexGuard } from './mutex.js';
import { type LockOptions, type Wait, checkInteger, kNoWait, parseLockOptions } from './options.js';
import { recordWait, remaining, waitAsyncUntil } from './wait.js';
import { ERR_INVALID_ARG_TYPE, ERR_LOCK_NOT_LOCKED, ERR_LOCK_TIMEOUT, abortErrorFor } from '../errors.js';

/** The most waiters one notify(n) can name (Atomics.notify's own limit is +Infinity: use notifyAll). */
export const MAX_NOTIFY = 0x7fffffff;

const WOKEN = 0;
const TIMED_OUT = 1;
const ABORTED = 2;
type Outcome = typeof WOKEN | typeof TIMED_OUT | typeof ABORTED;

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
    const start = performance.now();
    let outcome: Outcome = TIMED_OUT, slept = false;
    const w = this.#words, waitSlot = threadBase(this.#core.tid) + T_WAIT_SLOT;
    try {
      // Recorded for diagnostics; a condition has no holder, so no cycle runs through it.
      Atomics.store(w, waitSlot, this.slot + 1);
      for (;;) {
        const r = Atomics.wait(w, this.#seq, seq0, remaining(wait.deadline));
        if (r !== 'not-equal') slept = true;
        // A notify that lands with the timeout wins: the wait returns normally.
        if (Atomics.load(w, this.#seq) !== seq0) {
          outcome = WOKEN;
          break;
        }
        if (r === 'timed-out') break;
        // 'ok' with the sequence unchanged: a wake-all meant for others (an abort, a recovery). Sleep again.
      }
      Atomics.store(w, waitSlot, 0);
      adopt(guard, guard.mutex.lockSync());
    } finally {
      Atomics.store(w, waitSlot, 0);
      this.#leave();
    }
    this.#count(outcome, slept, start);
    if (outcome === TIMED_OUT) throw new ERR_LOCK_TIMEOUT(this.#core.label(this.slot), wait.timeout);
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
    const start = performance.now(), { signal } = wait, w = this.#words;
    let outcome: Outcome = TIMED_OUT, slept = false;
    try {
      for (;;) {
        const r = await waitAsyncUntil(w, this.#seq, seq0, wait.deadline, signal);
        if (r !== 'not-equal') slept = true;
        if (Atomics.load(w, this.#seq) !== seq0) {
          outcome = WOKEN;
          break;
        }
        // Checked before waiting again: a listener added to an aborted signal never fires.
        if (signal?.aborted) {
          outcome = ABORTED;
          break;
        }
        if (r === 'timed-out') break;
      }
      adopt(guard, await guard.mutex.lock());
    } finally {
      this.#leave();
    }
    this.#count(outcome, slept, start);
    if (outcome === ABORTED) throw abortErrorFor(signal!);
    if (outcome === TIMED_OUT) throw new ERR_LOCK_TIMEOUT(this.#core.label(this.slot), wait.timeout);
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
    const w = this.#words;
    // Nobody between step 1 and step 6: nobody to wake. A waiter counts
    // itself before it reads the sequence, so a 0 here means any waiter
    // still to come will read the sequence after this call.
    if (Atomics.load(w, this.#waiters) === 0) return;
    // Bump *before* waking: a waiter between its commit and its sleep then
    // finds the value changed instead of sleeping through this notify.
    Atomics.add(w, this.#seq, 1);
    Atomics.notify(w, this.#seq, n);
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
      Mutex.release(guard.mutex, 0);
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
   * Counters, written holding the mutex again: race-free as long as the
   * condition is always used with one mutex (the pthread rule). acquisitions
   * = waits that were woken; contended = those of them that slept.
   */
  #count(outcome: Outcome, slept: boolean, start: number): void {
    if (outcome !== WOKEN) return;
    const f = this.#core.f64, base = this.#base;
    f[(base + F_ACQUIRED) >> 1] += 1;
    if (slept) recordWait(f, base, (performance.now() - start) * 1e6);
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

/**
 * A thread died inside wait() on this condition (`count` waits of it): take
 * its count back, and wake every sleeper, since it may have taken a
 * notify(1)'s wake-up with it. The bump makes sleepers see a change (they
 * return: a spurious wake-up) and stops those not yet asleep from sleeping.
 */
function recoverWaiter(w: Int32Array, base: number, _dead: number, count: number): void {
  Atomics.sub(w, base + S_BELL, count);
  Atomics.add(w, base + S_STATE, 1);
  Atomics.notify(w, base + S_STATE);
}

defineKind(KIND_CONDITION, {
  recoverHeld: recoverWaiter,
  // A condition is held by nobody: waiting on it never closes a cycle.
  holders: () => [],
});
