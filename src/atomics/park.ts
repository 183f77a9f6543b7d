/**
 * Parking: the one routine by which every primitive of the thread tier
 * waits, blocking (Atomics.wait) or async (Atomics.waitAsync). A waiter is
 * a small description of its protocol, as in parking_lot_core's
 * `park(addr, validate, before_sleep, timed_out)`; the loops, the deadline,
 * the signal, the spin, the deadlock walk and the bookkeeping live here,
 * once.
 *
 * What a waiter says (a subclass of Waiter):
 *   check()       Take what it waits for, or see that its wait is over:
 *                 true when done. It retries its own lost CAS races, and
 *                 may throw (a broken barrier, a full holdings entry).
 *   spin()        Blocking waits that may wait (timeout > 0): spin a little
 *                 more before parking? true: check again. Default: no.
 *   publish(now)  Before sleeping: publish what makes a waker wake it (a
 *                 PARKED bit, a place in a queue) or take a step that needs
 *                 the clock (claim the heir's place at FAIR_MS). false: the
 *                 word moved or a step was taken, check again. true: sleep
 *                 on `index` while it reads `value`, until `until` at the
 *                 latest. The order that prevents a lost wake-up is the
 *                 waiter's and is written at its publish().
 *   leave(reason) The wait ends without success: undo what it published.
 *                 true if it got what it waited for after all: the wait
 *                 then succeeds (a timeout that lost to a hand-over, a
 *                 barrier that completed first). On ABORT a lock must give
 *                 back what it got: abort wins there. May throw an error
 *                 that says more than the reason (a barrier broken first).
 *   cycle()       Blocking waits, before each sleep: the cycle of waiting
 *                 threads that this wait would close, or null. Default:
 *                 record the wait (T_WAIT_SLOT) and walk (deadlock.ts).
 *
 * What the driver does, each round:
 *
 *   check ──true──→ done
 *     │ false
 *   spin? (blocking, timeout > 0) ──true──→ check
 *     │ false
 *   deadline passed? ──yes──→ leave(TIMEOUT): true → done, else ERR_LOCK_TIMEOUT
 *   cycle? (blocking) ──yes──→ leave(DEADLOCK): true → done, else ERR_LOCK_DEADLOCK
 *   publish ──false──→ check
 *     │ true
 *   sleep: Atomics.wait (blocking) or waitAsync (async)
 *   aborted? (async) ──yes──→ leave(ABORT): true → done, else AbortError
 *   check ...
 *
 * Async waits neither spin nor walk for cycles: the thread keeps running,
 * and another of its tasks may release what it holds, so a cycle through
 * it is no proof of a deadlock. Everything an async wait does before its
 * first sleep runs synchronously inside the call that started it.
 *
 * Bookkeeping: a blocking wait's T_WAIT_SLOT (recorded by cycle(), cleared
 * when the wait ends); an async wait of a single-owner acquire marks
 * `core.acquiring` for its slot (the re-entry checks read it).
 *
 * Cost: nothing on a fast path (only slow paths come here); one clock read
 * per round once spinning is over.
 */
import type { TableCore } from './core.js';
import { cycleThrough } from './deadlock.js';
import { T_WAIT_SLOT, threadBase } from './layout.js';
import type { Wait } from './options.js';
import { remaining, waitAsyncUntil } from './wait.js';
import { ERR_LOCK_DEADLOCK, ERR_LOCK_TIMEOUT, abortErrorFor } from '../errors.js';

/** Why a wait ends without success (Waiter.leave). FAILED: check() or publish() threw. */
export const TIMEOUT = 0;
export const DEADLOCK = 1;
export const ABORT = 2;
export const FAILED = 3;
export type Reason = typeof TIMEOUT | typeof DEADLOCK | typeof ABORT | typeof FAILED;

/** What park returns when the first check succeeded: the acquire did not have to wait (not contended). */
export const NOT_CONTENDED = -1;

export abstract class Waiter {
  /** performance.now() at the driver's first clock read for this wait (after spinning); 0 before it. */
  start = 0;
  /** Where publish() says to sleep: the word, the value it must still read, and until when (performance.now() ms). */
  index = 0;
  value = 0;
  until = Infinity;
  /** A single-owner acquire: an async wait marks `core.acquiring[slot]` while pending. */
  protected exclusive = false;

  constructor(readonly core: TableCore, readonly slot: number, readonly wait: Wait, readonly blocking: boolean) {}

  abstract check(): boolean;

  spin(): boolean {
    return false;
  }

  abstract publish(now: number): boolean;

  leave(_reason: Reason): boolean {
    return false;
  }

  cycle(): string | null {
    const core = this.core;
    Atomics.store(core.words, threadBase(core.tid) + T_WAIT_SLOT, this.slot + 1); // before the walk: see deadlock.ts
    return cycleThrough(core, this.slot);
  }

  /** For a step that must not be taken past the deadline (a queued reader would hold a writer back). */
  protected expired(): boolean {
    const deadline = this.wait.deadline;
    return deadline !== Infinity && performance.now() >= deadline;
  }

  /** @internal For the drivers. */
  static marks(waiter: Waiter): boolean {
    return waiter.exclusive;
  }
}

/**
 * Wait, blocking this thread, until `waiter.check()` succeeds; throws
 * ERR_LOCK_TIMEOUT, ERR_LOCK_DEADLOCK or whatever the waiter throws.
 * Returns the time it slept in ns for the wait counters (recordWait): 0
 * when it never slept (won by spinning), NOT_CONTENDED when it did not
 * have to wait at all.
 */
export function parkSync(waiter: Waiter): number {
  const { core, wait } = waiter, w = core.words, spins = wait.timeout > 0;
  let contended = false, slept = false, left = false, recorded = false;
  try {
    for (;;) {
      if (waiter.check()) break;
      contended = true;
      if (spins && waiter.spin()) continue;
      const now = performance.now();
      if (waiter.start === 0) waiter.start = now;
      if (now >= wait.deadline) {
        left = true;
        if (waiter.leave(TIMEOUT)) break;
        throw new ERR_LOCK_TIMEOUT(core.label(waiter.slot), wait.timeout);
      }
      recorded = true;
      const cycle = waiter.cycle();
      if (cycle !== null) {
        left = true;
        if (waiter.leave(DEADLOCK)) break;
        throw new ERR_LOCK_DEADLOCK(core.label(waiter.slot), cycle);
      }
      if (!waiter.publish(now)) continue;
      switch (Atomics.wait(w, waiter.index, waiter.value, remaining(Math.min(waiter.until, wait.deadline)))) {
        case 'ok': case 'timed-out': slept = true; break; // woken, or `until` came: check() says which
        case 'not-equal': break; // the word moved before we slept
      }
    }
  } catch (err) {
    if (!left) waiter.leave(FAILED);
    throw err;
  } finally {
    // Only a wait that got as far as the walk recorded itself (an Atomics.store is a call here).
    if (recorded) Atomics.store(w, threadBase(core.tid) + T_WAIT_SLOT, 0);
  }
  if (!contended) return NOT_CONTENDED;
  return slept ? (performance.now() - waiter.start) * 1e6 : 0;
}

/**
 * As parkSync, without blocking the event loop (Atomics.waitAsync, the
 * thread kept alive meanwhile); rejects as parkSync throws, and with an
 * AbortError when `wait.signal` aborts while it sleeps (unless leave(ABORT)
 * says the wait succeeded first).
 */
export async function parkAsync(waiter: Waiter): Promise<number> {
  const { core, wait, slot } = waiter, { signal } = wait, marks = Waiter.marks(waiter);
  let contended = false, slept = false, left = false;
  if (marks) core.acquiring[slot] = 1;
  try {
    for (;;) {
      if (waiter.check()) break;
      contended = true;
      const now = performance.now();
      if (waiter.start === 0) waiter.start = now;
      if (now >= wait.deadline) {
        left = true;
        if (waiter.leave(TIMEOUT)) break;
        throw new ERR_LOCK_TIMEOUT(core.label(slot), wait.timeout);
      }
      if (!waiter.publish(now)) continue;
      switch (await waitAsyncUntil(core.words, waiter.index, waiter.value, Math.min(waiter.until, wait.deadline), signal)) {
        case 'ok': case 'timed-out': slept = true; break;
        case 'not-equal': break;
      }
      // Before checking or waiting again: a listener added to an aborted signal never fires.
      if (signal?.aborted) {
        left = true;
        if (waiter.leave(ABORT)) break;
        throw abortErrorFor(signal);
      }
    }
  } catch (err) {
    if (!left) waiter.leave(FAILED);
    throw err;
  } finally {
    if (marks) core.acquiring[slot] = 0;
  }
  if (!contended) return NOT_CONTENDED;
  return slept ? (performance.now() - waiter.start) * 1e6 : 0;
}
