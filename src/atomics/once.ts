/**
 * Once: a run-once cell in one slot of a LockTable. `run(fn)` runs `fn`
 * exactly once across every thread of the table; callers that come while it
 * runs wait for it, and callers that come after return at once. An `fn` that
 * throws (or rejects) leaves the cell not run, so the next caller runs its
 * own `fn`; a thread that dies running it (worker.terminate(), exit) leaves
 * the cell not run too, and the next runner is told (`abandoned`).
 *
 * This file holds the public class; the state word, the wait for a running
 * initialiser and recovery live in once-word.ts.
 */
import type { TableCore } from './core.js';
import type { LockTable } from './table.js';
import { F_ACQUIRED, S_STATE } from './layout.js';
import { ABANDONED, DONE, endRun, takeTurn, takeTurnSync } from './once-word.js';
import { type LockOptions, type Wait, kNoWait, parseLockOptions } from './options.js';
import { ERR_INVALID_ARG_TYPE } from '../errors.js';

/** What an initialiser is told when it runs. */
export interface OnceRun {
  /**
   * True when an earlier runner died inside its initialiser (its thread was
   * terminated or exited): anything it wrote may be half-done, and this run
   * should start by undoing or checking it.
   */
  readonly abandoned: boolean;
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
    const turn = takeTurn(this.#core, this.slot, this.#base, wait);
    return turn instanceof Promise ? turn.then((abandoned) => this.#runTurn(fn, abandoned)) : this.#runTurn(fn, turn);
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
    const abandoned = takeTurnSync(this.#core, this.slot, this.#base, wait);
    if (abandoned === undefined) return false;
    this.#started();
    try {
      fn({ abandoned });
    } catch (err) {
      endRun(this.#words, this.#st, abandoned ? ABANDONED : 0);
      throw err;
    }
    endRun(this.#words, this.#st, DONE);
    return true;
  }

  /** This call's turn, taken: run `fn` (from here to its first await, inside run()), unless another call ran it. */
  async #runTurn(fn: (run: OnceRun) => unknown, abandoned: boolean | undefined): Promise<boolean> {
    if (abandoned === undefined) return false;
    this.#started();
    try {
      await fn({ abandoned });
    } catch (err) {
      endRun(this.#words, this.#st, abandoned ? ABANDONED : 0);
      throw err;
    }
    endRun(this.#words, this.#st, DONE);
    return true;
  }

  #started(): void {
    this.#core.f64[(this.#base + F_ACQUIRED) >> 1] += 1; // by the runner alone: exact
  }
}
