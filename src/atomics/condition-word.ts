/**
 * The condition variable's two words and everything that is not the public
 * class: the wait for a notification (a park.ts waiter), the wake-up, and
 * the recovery of a thread that died waiting. A sequence word that every
 * notify bumps, and a waiter count so that a notify with nobody waiting
 * costs one load (the futex condvar of glibc before 2.25 and of Rust's std).
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
import type { KindOps, TableCore } from './core.js';
import { S_BELL, S_STATE } from './layout.js';
import type { Wait } from './options.js';
import { Waiter, parkAsync, parkSync } from './park.js';

/**
 * Step 4 of wait(), as park.ts drives it: done once the sequence has moved
 * past seq0; sleep while it still reads seq0 (Atomics.wait compares and
 * enqueues atomically, so no flag needs publishing). A notification that
 * arrives before a timeout or an abort wins over it.
 */
class NotifyWaiter extends Waiter {
  readonly #seq: number;

  constructor(core: TableCore, slot: number, base: number, wait: Wait, blocking: boolean, readonly seq0: number) {
    super(core, slot, wait, blocking);
    this.#seq = base + S_STATE;
  }

  check(): boolean {
    return Atomics.load(this.core.words, this.#seq) !== this.seq0;
  }

  publish(): boolean {
    this.index = this.#seq;
    this.value = this.seq0;
    return true;
  }

  override leave(): boolean {
    return this.check();
  }
}

/**
 * Step 4, blocking: until the sequence moves past `seq0`. Throws
 * ERR_LOCK_TIMEOUT; returns park.ts's time slept (NOT_CONTENDED: it had
 * moved already). Spurious wake-ups return too (see above).
 */
export function awaitNotifySync(core: TableCore, slot: number, base: number, wait: Wait, seq0: number): number {
  return parkSync(new NotifyWaiter(core, slot, base, wait, true, seq0));
}

/** As awaitNotifySync, without blocking the event loop; rejects also with an AbortError. */
export function awaitNotify(core: TableCore, slot: number, base: number, wait: Wait, seq0: number): Promise<number> {
  return parkAsync(new NotifyWaiter(core, slot, base, wait, false, seq0));
}

/** notify(n): wake up to `n` waiters (Infinity: all). */
export function wake(w: Int32Array, base: number, n: number): void {
  // Nobody between step 1 and step 6: nobody to wake. A waiter counts
  // itself before it reads the sequence, so a 0 here means any waiter
  // still to come will read the sequence after this call.
  if (Atomics.load(w, base + S_BELL) === 0) return;
  // Bump *before* waking: a waiter between its commit and its sleep then
  // finds the value changed instead of sleeping through this notify.
  Atomics.add(w, base + S_STATE, 1);
  Atomics.notify(w, base + S_STATE, n);
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

/** What recovery and deadlock detection need of a condition (kinds.ts, KIND_CONDITION). */
export const conditionKind: KindOps = {
  recoverHeld: recoverWaiter,
  // A condition is held by nobody: waiting on it never closes a cycle.
  holders: () => [],
};
