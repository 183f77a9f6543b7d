/**
 * Barrier: a reusable (cyclic) barrier for `parties` threads in one slot of a
 * LockTable. The parties-th arrival releases everyone and starts the next
 * generation. A party that dies, times out or is aborted breaks the barrier
 * for the others (ERR_LOCK_BARRIER_BROKEN instead of a hang), as Java's
 * CyclicBarrier does; reset() repairs it.
 *
 * This file holds the public class; the state word, the arrival, the wait
 * and recovery live in barrier-word.ts.
 */

import type { TableCore } from './core.js';
import type { LockTable } from './table.js';
import {
  ARRIVED_MASK, ARRIVING, BROKEN_MASK, awaitGeneration, awaitGenerationSync, enter, join, resetWord,
} from './barrier-word.js';
import { removeHolding } from './holdings.js';
import { S_AUX, S_STATE } from './layout.js';
import { type LockOptions, type Wait, kNoWait, parseLockOptions } from './options.js';

export class Barrier {
  readonly #core: TableCore;
  readonly #words: Int32Array;
  readonly #base: number;
  readonly #st: number;
  /** The table this lives in: pass `table.buffer` to another thread, or send this handle (workers/transfer.ts). */
  get table(): LockTable {
    return this.#core.table as LockTable;
  }

  /** The slot this barrier lives in. */
  readonly slot: number;
  /** The name it was reached by, or its slot index. */
  readonly name: string | number;
  /** How many arrivals complete a generation (fixed when the slot was first used). */
  readonly parties: number;

  /** @internal Use `table.barrier(name, parties)`. */
  constructor(core: TableCore, slot: number, base: number, name: string | number) {
    this.#core = core;
    this.#words = core.words;
    this.#base = base;
    this.#st = base + S_STATE;
    this.slot = slot;
    this.name = name;
    this.parties = Atomics.load(core.words, base + S_AUX);
  }

  /**
   * Arrive and block this thread (Atomics.wait, after a brief spin) until
   * all parties have arrived. Returns true for exactly one party per
   * generation, the one whose arrival completed it (pthread's
   * PTHREAD_BARRIER_SERIAL_THREAD), false for the others.
   *
   * Throws ERR_LOCK_BARRIER_BROKEN when the barrier is broken or breaks
   * while this thread waits; ERR_LOCK_TIMEOUT after `options.timeout` ms
   * (timeout 0: fail at once unless this arrival completes the generation),
   * and ERR_LOCK_DEADLOCK when a party that has not arrived is blocked on
   * something this thread holds: both break the barrier for the others,
   * unless the generation completed first, in which case this returns
   * normally.
   */
  arriveSync(options?: LockOptions): boolean {
    const wait = options === undefined ? kNoWait : parseLockOptions(options);
    const s = this.#arrive();
    try {
      if ((s & ARRIVED_MASK) + 1 === this.parties) return true;
      awaitGenerationSync(this.#core, this.slot, this.#base, wait, s + 1);
      return false;
    } finally {
      removeHolding(this.#core, this.slot, ARRIVING);
    }
  }

  /**
   * As arriveSync, without blocking the event loop (Atomics.waitAsync); the
   * thread stays alive while it waits. An abort of `options.signal` while it
   * waits rejects with an AbortError (cause: the signal's reason) and breaks
   * the barrier, unless the generation completed first. Rejects, never throws.
   */
  arrive(options?: LockOptions): Promise<boolean> {
    let wait: Wait, s: number;
    try {
      wait = options === undefined ? kNoWait : parseLockOptions(options);
      s = this.#arrive();
    } catch (err) {
      return Promise.reject(err);
    }
    if ((s & ARRIVED_MASK) + 1 === this.parties) {
      removeHolding(this.#core, this.slot, ARRIVING);
      return Promise.resolve(true);
    }
    return this.#waitAsync(wait, s + 1);
  }

  /**
   * Arrive only if this arrival completes the generation (every other party
   * is already waiting): release them and return true. Otherwise count
   * nothing, break nothing, and return false. Throws
   * ERR_LOCK_BARRIER_BROKEN when the barrier is broken. Never waits.
   */
  tryArrive(): boolean {
    const added = join(this.#core, this.slot);
    let completed = false;
    try {
      completed = enter(this.#core, this.slot, this.#base, this.parties, true) !== undefined;
      return completed;
    } finally {
      // A thread that only tried, and did not get through, does not become a party.
      removeHolding(this.#core, this.slot, completed ? ARRIVING : added);
    }
  }

  /**
   * Repair a broken barrier, or break the current generation if parties are
   * waiting in it (they get ERR_LOCK_BARRIER_BROKEN, 'it was reset'), and
   * start a fresh generation. A barrier that is intact with nobody waiting
   * is left as it is.
   */
  reset(): void {
    resetWord(this.#words, this.#st);
  }

  /** Whether the barrier is broken right now (a snapshot, for diagnostics). */
  get broken(): boolean {
    return (Atomics.load(this.#words, this.#st) & BROKEN_MASK) !== 0;
  }

  /** Parties counted in the current generation (a snapshot, for diagnostics and tests). */
  get arrived(): number {
    return Atomics.load(this.#words, this.#st) & ARRIVED_MASK;
  }

  /** join() then enter(); a thread whose first arrival finds the barrier broken does not become a party. */
  #arrive(): number {
    const added = join(this.#core, this.slot);
    try {
      return enter(this.#core, this.slot, this.#base, this.parties, false)!;
    } catch (err) {
      removeHolding(this.#core, this.slot, added);
      throw err;
    }
  }

  async #waitAsync(wait: Wait, arrivedIn: number): Promise<boolean> {
    try {
      await awaitGeneration(this.#core, this.slot, this.#base, wait, arrivedIn);
    } finally {
      removeHolding(this.#core, this.slot, ARRIVING);
    }
    return false;
  }
}
