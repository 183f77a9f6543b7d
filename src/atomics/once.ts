/**
 * Once: a run-once cell in one slot of a LockTable. `run(fn)` runs `fn`
 * exactly once across every thread of the table; callers that come while it
 * runs wait for it, and callers that come after return at once. An `fn` that
 * throws (or rejects) leaves the cell not run, so the next caller runs its
 * own `fn`; a thread that dies running it (worker.terminate(), exit) leaves
 * the cell not run too, and the next runner is told (`abandoned`).
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
import type { TableCore, WatchedTable } from './core.js';
import type { LockTable } from './table.js';
import { cycleThrough } from './deadlock.js';
import { defineKind } from './kinds.js';
import { F_ACQUIRED, KIND_ONCE, S_STATE, T_WAIT_SLOT, threadBase } from './layout.js';
import { type LockOptions, type Wait, kNoWait, parseLockOptions } from './options.js';
import { recordWait, remaining, waitAsyncUntil } from './wait.js';
import { ERR_INVALID_ARG_TYPE, ERR_LOCK_DEADLOCK, ERR_LOCK_TIMEOUT, abortErrorFor } from '../errors.js';

export const RUNNER_MASK = 0xfff;
export const PARKED = 1 << 24;
export const ABANDONED = 1 << 25;
export const DONE = 1 << 26;

/** What an initialiser is told when it runs. */
export interface OnceRun {
  /**
   * True when an earlier runner died inside its initialiser (its thread was
   * terminated or exited): anything it wrote may be half-done, and this run
   * should start by undoing or checking it.
   */
  readonly abandoned: boolean;
}

const RUN = 0;
const FINISHED = 1;
const PARK = 2;
const TIMED_OUT = 3;
const DEADLOCK = 4;

/** One call's way to the cell: run fn, find it done, or wait. Written once for both drivers. */
class OnceCaller {
  abandoned = false;
  slept = false;
  value = 0;
  cycle: string | null = null;
  readonly start = performance.now();
  readonly #core: TableCore;
  readonly #st: number;

  constructor(core: TableCore, readonly slot: number, base: number, readonly deadline: number, readonly sync: boolean) {
    this.#core = core;
    this.#st = base + S_STATE;
  }

  step(): typeof RUN | typeof FINISHED | typeof PARK | typeof TIMED_OUT | typeof DEADLOCK {
    const w = this.#core.words, st = this.#st, tid = this.#core.tid;
    for (;;) {
      let s = Atomics.load(w, st);
      if (s === DONE) return FINISHED;
      const runner = s & RUNNER_MASK;
      if (runner === 0) {
        // Not run (maybe abandoned): take it. Nobody sleeps on a free cell.
        if (Atomics.compareExchange(w, st, s, tid | (s & ABANDONED)) !== s) continue;
        this.abandoned = (s & ABANDONED) !== 0;
        return RUN;
      }
      if (this.sync && runner === tid) {
        this.cycle = 'this thread is running its initialiser';
        return DEADLOCK;
      }
      if (performance.now() >= this.deadline) return TIMED_OUT;
      if (this.sync && (this.cycle = cycleThrough(this.#core, this.slot)) !== null) return DEADLOCK;
      if ((s & PARKED) === 0) {
        // Publish PARKED *before* sleeping, else the runner may leave without a wake-up.
        if (Atomics.compareExchange(w, st, s, s | PARKED) !== s) continue;
        s |= PARKED;
      }
      this.value = s;
      this.slept = true;
      return PARK;
    }
  }

  /** Counters of a call that waited. Waiters are woken together, so these racy float64 updates are approximate. */
  recordWait(base: number): void {
    if (this.slept) recordWait(this.#core.f64, base, (performance.now() - this.start) * 1e6);
  }
}

export class Once {
  readonly #core: TableCore;
  readonly #words: Int32Array;
  readonly #st: number;
  readonly #base: number;
  /** The table this lives in: pass `table.buffer` to another thread, or send this handle (workers/transfer.ts). */
  get table(): LockTable {
    return this.#core.table as LockTable;
  }

  /** The slot this cell lives in. */
  readonly slot: number;
  /** The name it was reached by, or its slot index. */
  readonly name: string | number;

  /** @internal Use `table.once(name)`. */
  constructor(core: TableCore, slot: number, base: number, name: string | number) {
    this.#core = core;
    this.#words = core.words;
    this.#st = base + S_STATE;
    this.#base = base;
    this.slot = slot;
    this.name = name;
  }

  /** Whether some call's initialiser has returned (one load; once true, true forever). */
  get done(): boolean {
    return Atomics.load(this.#words, this.#st) === DONE;
  }

  /**
   * Run `fn` unless it has run: resolves true when this call ran it to the
   * end, false when another call (of any thread) had. While another call
   * runs it, waits for it without blocking the event loop; if that call's
   * `fn` throws or its thread dies, this call runs its own `fn`. `fn` may
   * return a promise: the cell is done when it resolves. Its value is not
   * kept (no other thread could read it): initialise shared memory, files,
   * or state of this thread in `fn`.
   *
   * Rejects with `fn`'s error when this call ran it and it threw; with
   * ERR_LOCK_TIMEOUT or an AbortError when `options.timeout` / `signal` end
   * the wait for another runner (they never interrupt a running `fn`).
   * Awaiting `run` on the same cell from inside `fn` waits for itself:
   * only its timeout ends it.
   */
  run(fn: (run: OnceRun) => unknown, options?: LockOptions): Promise<boolean> {
    let wait: Wait;
    try {
      if (typeof fn !== 'function') throw new ERR_INVALID_ARG_TYPE('fn', 'a function', fn);
      wait = options === undefined ? kNoWait : parseLockOptions(options);
    } catch (err) {
      return Promise.reject(err);
    }
    if (Atomics.load(this.#words, this.#st) === DONE) return Promise.resolve(false);
    return this.#runAsync(fn, wait);
  }

  /**
   * Run `fn` unless it has run, blocking this thread (Atomics.wait) while
   * another thread runs it: true when this call ran it, false when another
   * had. `fn` must be synchronous: if it returns a promise, the cell is done
   * when `fn` returns (use `run` for async initialisers). Throws `fn`'s
   * error, ERR_LOCK_TIMEOUT, an AbortError for an already-aborted signal,
   * and ERR_LOCK_DEADLOCK when this thread is itself running the
   * initialiser (a nested call, or a pending `run` of this thread).
   */
  runSync(fn: (run: OnceRun) => unknown, options?: LockOptions): boolean {
    if (typeof fn !== 'function') throw new ERR_INVALID_ARG_TYPE('fn', 'a function', fn);
    const wait = options === undefined ? kNoWait : parseLockOptions(options);
    if (Atomics.load(this.#words, this.#st) === DONE) return false;
    const core = this.#core, w = this.#words, slot = this.slot;
    const caller = new OnceCaller(core, slot, this.#base, wait.deadline, true);
    const waitSlot = threadBase(core.tid) + T_WAIT_SLOT;
    let step;
    Atomics.store(w, waitSlot, slot + 1);
    try {
      while ((step = caller.step()) === PARK) {
        switch (Atomics.wait(w, this.#st, caller.value, remaining(wait.deadline))) {
          case 'ok': case 'not-equal': case 'timed-out': continue; // step() re-reads the word in every case
        }
      }
    } finally {
      Atomics.store(w, waitSlot, 0);
    }
    caller.recordWait(this.#base);
    if (step === FINISHED) return false;
    if (step === TIMED_OUT) throw new ERR_LOCK_TIMEOUT(core.label(slot), wait.timeout);
    if (step === DEADLOCK) throw new ERR_LOCK_DEADLOCK(core.label(slot), caller.cycle!);
    this.#started();
    try {
      fn({ abandoned: caller.abandoned });
    } catch (err) {
      this.#leave(caller.abandoned ? ABANDONED : 0);
      throw err;
    }
    this.#leave(DONE);
    return true;
  }

  async #runAsync(fn: (run: OnceRun) => unknown, wait: Wait): Promise<boolean> {
    const core = this.#core, slot = this.slot, { signal } = wait;
    const caller = new OnceCaller(core, slot, this.#base, wait.deadline, false);
    let step;
    while ((step = caller.step()) === PARK) {
      await waitAsyncUntil(this.#words, this.#st, caller.value, wait.deadline, signal);
      // Nothing to undo: a waiter holds nothing, and a wake-up it took went to every sleeper.
      if (signal?.aborted) throw abortErrorFor(signal);
    }
    caller.recordWait(this.#base);
    if (step === FINISHED) return false;
    if (step === TIMED_OUT) throw new ERR_LOCK_TIMEOUT(core.label(slot), wait.timeout);
    this.#started();
    try {
      await fn({ abandoned: caller.abandoned });
    } catch (err) {
      this.#leave(caller.abandoned ? ABANDONED : 0);
      throw err;
    }
    this.#leave(DONE);
    return true;
  }

  #started(): void {
    this.#core.f64[(this.#base + F_ACQUIRED) >> 1] += 1; // by the runner alone: exact
  }

  /** End this thread's run: DONE, or back to not run. One exchange, so PARKED cannot be missed. */
  #leave(next: number): void {
    if ((Atomics.exchange(this.#words, this.#st, next) & PARKED) !== 0) Atomics.notify(this.#words, this.#st);
  }
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

defineKind(KIND_ONCE, { recoverOwned: recoverRunner, holders: runnerOf });
