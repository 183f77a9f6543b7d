/**
 * The once cell's state word (slot word S_STATE) and everything that is not
 * the public class: the wait for a running initialiser (a park.ts waiter),
 * the end of a run, and the recovery of a runner that died.
 *
 * The state word (S_STATE):
 *
 * ```
 *  bit 31      27   26     25          24       23     12  11        0
 *     [ unused    | DONE | ABANDONED | PARKED | unused    | runner tid ]
 * ```
 *
 * | state                          | meaning                                   | run() does                       |
 * |--------------------------------|-------------------------------------------|----------------------------------|
 * | 0                              | not run yet                               | CAS 0 → tid, then runs fn        |
 * | ABANDONED                      | not run: the last runner died inside fn   | CAS → tid │ ABANDONED, runs fn   |
 * | tid (│ ABANDONED) (│ PARKED)   | thread tid runs fn; sleepers may exist    | sets PARKED, sleeps on the word  |
 * | DONE                           | fn returned: final, never changes again   | returns false (one load)         |
 *
 * runner     tid of the thread running fn. Written by that thread (CAS to
 *            take the cell, one exchange to leave it) and by the recovery of
 *            that thread after it has stopped, nobody else.
 * ABANDONED  a runner died inside fn: whatever it wrote may be half-done.
 *            Kept while the next runner runs (and put back if its fn throws),
 *            so every runner until one succeeds is told; DONE clears it.
 * PARKED     a thread may sleep on the word: leaving it must wake them.
 *
 * Invariants:
 * - No lost wake-ups: a waiter sets PARKED with a CAS on a running state and
 *   sleeps on exactly the value it wrote. The runner leaves with one
 *   Atomics.exchange, which reads PARKED in the same step that ends the run,
 *   and then wakes every sleeper: they all see DONE, or all race for the
 *   free cell and the losers park again on the new runner.
 * - Everything fn wrote before it returned is visible to a thread that sees
 *   DONE: the exchange and every read of the word are sequentially consistent.
 *
 * Waiting is not fair and need not be: there is nothing to take turns at.
 */
import type { KindOps, TableCore, WatchedTable } from './core.js';
import { S_STATE } from './layout.js';
import type { Wait } from './options.js';
import { NOT_CONTENDED, Waiter, parkAsync, parkSync } from './park.js';
import { recordWait } from './wait.js';
import { ERR_LOCK_DEADLOCK } from '../errors.js';

export const RUNNER_MASK = 0xfff;
export const PARKED = 1 << 24;
export const ABANDONED = 1 << 25;
export const DONE = 1 << 26;

/**
 * One call's way to the cell, as park.ts drives it: find it done, take it
 * to run the initialiser, or publish PARKED and sleep while another thread
 * runs it. A waiter holds nothing, so leaving (timeout, abort) undoes
 * nothing: a wake-up it took went to every sleeper.
 */
class OnceWaiter extends Waiter {
  /** This call is to run the initialiser (else another call finished it). */
  run = false;
  abandoned = false;
  /** The state word as check() last saw it. */
  #s = 0;
  readonly #st: number;

  constructor(core: TableCore, slot: number, base: number, wait: Wait, blocking: boolean) {
    super(core, slot, wait, blocking);
    this.#st = base + S_STATE;
  }

  check(): boolean {
    const w = this.core.words, st = this.#st, tid = this.core.tid;
    for (;;) {
      const s = Atomics.load(w, st);
      if (s === DONE) return true;
      const runner = s & RUNNER_MASK;
      if (runner === 0) {
        // Not run (maybe abandoned): take it. Nobody sleeps on a free cell.
        if (Atomics.compareExchange(w, st, s, tid | (s & ABANDONED)) !== s) continue;
        this.run = true;
        this.abandoned = (s & ABANDONED) !== 0;
        return true;
      }
      if (this.blocking && runner === tid) {
        throw new ERR_LOCK_DEADLOCK(this.core.label(this.slot), 'this thread is running its initialiser');
      }
      this.#s = s;
      return false;
    }
  }

  publish(): boolean {
    const w = this.core.words, st = this.#st;
    let s = this.#s;
    if ((s & PARKED) === 0) {
      // Publish PARKED *before* sleeping, else the runner may leave without a wake-up.
      if (Atomics.compareExchange(w, st, s, s | PARKED) !== s) return false;
      s |= PARKED;
    }
    this.index = st;
    this.value = s;
    return true;
  }
}

/** Counters of a call that slept. Waiters are woken together, so these racy float64 updates are approximate. */
function counted(core: TableCore, base: number, ns: number): void {
  if (ns !== NOT_CONTENDED && ns > 0) recordWait(core.f64, base, ns);
}

/**
 * Wait, blocking, until the cell is done or free to run. Returns
 * `abandoned` when this call is to run the initialiser (it holds the cell
 * now), undefined when another call has run it.
 */
export function takeTurnSync(core: TableCore, slot: number, base: number, wait: Wait): boolean | undefined {
  const waiter = new OnceWaiter(core, slot, base, wait, true);
  counted(core, base, parkSync(waiter));
  return waiter.run ? waiter.abandoned : undefined;
}

/**
 * As takeTurnSync, without blocking the event loop: the answer itself when
 * it needs no wait (so that the initialiser of a free cell starts inside
 * run(), as a caller may expect), else a promise of it.
 */
export function takeTurn(core: TableCore, slot: number, base: number, wait: Wait): boolean | undefined | Promise<boolean | undefined> {
  const waiter = new OnceWaiter(core, slot, base, wait, false);
  if (waiter.check()) return waiter.run ? waiter.abandoned : undefined;
  return parkAsync(waiter).then((ns) => {
    counted(core, base, ns);
    return waiter.run ? waiter.abandoned : undefined;
  });
}

/** End this thread's run: DONE, or back to not run. One exchange, so PARKED cannot be missed. */
export function endRun(w: Int32Array, st: number, next: number): void {
  if ((Atomics.exchange(w, st, next) & PARKED) !== 0) Atomics.notify(w, st);
}

/** The dead thread `dead` was running the initialiser: the cell goes back to not run, abandoned. */
function recoverRunner(w: Int32Array, base: number, dead: number): boolean {
  const st = base + S_STATE;
  for (;;) {
    const s = Atomics.load(w, st);
    if (s === DONE || (s & RUNNER_MASK) !== dead) return false;
    if (Atomics.compareExchange(w, st, s, ABANDONED) !== s) continue; // a waiter setting PARKED
    Atomics.notify(w, st); // every sleeper: one runs next, the rest park on it
    return true;
  }
}

function runnerOf(table: WatchedTable, base: number): number[] {
  const s = Atomics.load(table.words, base + S_STATE);
  return s === DONE || (s & RUNNER_MASK) === 0 ? [] : [s & RUNNER_MASK];
}

/** What recovery and deadlock detection need of a once cell (kinds.ts, KIND_ONCE). */
export const onceKind: KindOps = { recoverOwned: recoverRunner, holders: runnerOf };
