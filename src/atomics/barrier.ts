/**
 * Barrier: a reusable (cyclic) barrier for `parties` threads in one slot of a
 * LockTable. The parties-th arrival releases everyone and starts the next
 * generation. A party that dies, times out or is aborted breaks the barrier
 * for the others (ERR_LOCK_BARRIER_BROKEN instead of a hang), as Java's
 * CyclicBarrier does; reset() repairs it.
 *
 * The state word (slot word S_STATE):
 * ```
 *  bit 31         21  20      15  14     12  11          0
 *     [ generation   | epoch     | broken   | arrived      ]
 * ```
 * arrived     parties counted in the current generation, 0 .. parties - 1
 * broken      0 while intact; else why the current generation broke (BROKE_*)
 * epoch       bumped by reset(); wraps at 64
 * generation  bumped by the arrival that completes a generation; wraps at 2048
 *
 * | event                                   | new state                          | then          |
 * |-----------------------------------------|------------------------------------|---------------|
 * | arrival, intact, arrived + 1 < parties  | arrived + 1                        | sleep         |
 * | arrival, intact, arrived + 1 = parties  | generation + 1, arrived 0          | notify all    |
 * | arrival, broken                         | (unchanged)                        | throw BROKEN  |
 * | tryArrive(), arrived + 1 < parties      | (unchanged)                        | return false  |
 * | a waiter times out / aborts / deadlocks | broken := reason (if still intact) | notify all    |
 * | a member thread dies (or exits)         | broken := BROKE_DIED (if intact)   | notify all    |
 * | reset(), arrived > 0 or broken          | epoch + 1, broken 0, arrived 0     | notify all    |
 *
 * A waiter remembers the generation and epoch it arrived in and sleeps on
 * the exact word it last read; every change it must see (completion,
 * break, reset) comes with a notify-all after the CAS that makes it, so no
 * wake-up is lost. Other arrivals change the word without a notify; a
 * sleeper that was about to sleep on the older value gets 'not-equal' and
 * reads again.
 *
 * Generations never mix: an arrival is one CAS on the whole word, so a fast
 * thread re-arriving for generation g + 1 is counted in g + 1 only (the
 * completing CAS already moved the word there), and a waiter of g decides
 * by the generation field, not by the count.
 *
 * What a waiter of (generation g, epoch e) concludes on waking:
 * - generation ≠ g: its generation completed. With no more threads than
 *   parties this is exact: the next generation cannot complete without it.
 * - else epoch ≠ e: reset() broke its generation; else broken ≠ 0: broken.
 * With more threads than parties and a reset() while a party of the broken
 * generation is still waking up, that party can see a later generation
 * complete and take it for its own: call reset() once the parties of a
 * broken generation have returned.
 *
 * Membership: a thread becomes a party on its first arrival, recorded in its
 * holdings (holdings.ts) as MEMBER, plus ARRIVING while it is inside
 * arrive(). Recovery of a thread that dies or exits, even normally, while a
 * member breaks the barrier (recoverHeld below): the others cannot complete
 * a generation without it. To reuse a barrier with new threads, wait for the
 * old ones' 'exit' events, then reset(). stats().holders lists the members
 * not inside arrive(): the threads the waiters wait for.
 *
 * Counters: the completing arrival adds `parties` to acquisitions and
 * parties - 1 to contended (exact while no more threads than parties use
 * the barrier); each parked waiter adds its wait time, racing with the
 * others (approximate).
 */
import type { TableCore, WatchedTable } from './core.js';
import type { LockTable } from './table.js';
import { cycleThrough } from './deadlock.js';
import { addHolding, holdingOf, removeHolding } from './holdings.js';
import { defineKind } from './kinds.js';
import {
  F_ACQUIRED, KIND_BARRIER, S_AUX, S_STATE, T_LIVE, T_WAIT_SLOT, threadBase,
} from './layout.js';
import { type LockOptions, type Wait, kNoWait, parseLockOptions } from './options.js';
import { SpinWait, recordWait, remaining, waitAsyncUntil } from './wait.js';
import {
  ERR_LOCK_BARRIER_BROKEN, ERR_LOCK_DEADLOCK, ERR_LOCK_TIMEOUT, abortErrorFor,
} from '../errors.js';

export const ARRIVED_MASK = 0xfff;
export const BROKEN_SHIFT = 12;
export const BROKEN_MASK = 0b111 << BROKEN_SHIFT;
export const EPOCH_SHIFT = 15;
export const EPOCH_MASK = 0x3f << EPOCH_SHIFT;
export const GEN_SHIFT = 21;
export const GEN_ONE = 1 << GEN_SHIFT;
export const GEN_MASK = ~0 << GEN_SHIFT;

export const BROKE_TIMEOUT = 1;
export const BROKE_ABORT = 2;
export const BROKE_DIED = 3;
export const BROKE_DEADLOCK = 4;
const REASONS = ['', 'a party timed out', 'a party was aborted', 'a party exited or died', 'a party would have deadlocked'];

/** Holdings units: a member thread holds MEMBER, plus ARRIVING while inside arrive(). */
const MEMBER = 1;
const ARRIVING = 1;

const genOf = (s: number) => s >>> GEN_SHIFT;
const epochOf = (s: number) => (s & EPOCH_MASK) >>> EPOCH_SHIFT;

const PASSED = 0;
const PARK = 1;
const BROKEN = 2;
/** giveUp(): this waiter broke the generation itself. */
const GAVE_UP = 3;

/** One waiter's view of its generation: the protocol, written once for both drivers. */
class Arrival {
  /** The word as last read: sleep on exactly this value. */
  observed: number;
  readonly gen: number;
  readonly epoch: number;
  readonly start = performance.now();

  constructor(readonly w: Int32Array, readonly st: number, arrivedIn: number) {
    this.observed = arrivedIn;
    this.gen = genOf(arrivedIn);
    this.epoch = epochOf(arrivedIn);
  }

  check(): typeof PASSED | typeof PARK | typeof BROKEN {
    const s = (this.observed = Atomics.load(this.w, this.st));
    if (genOf(s) !== this.gen) return PASSED;
    if (epochOf(s) !== this.epoch || (s & BROKEN_MASK) !== 0) return BROKEN;
    return PARK;
  }

  /** Leave early (timeout, abort, deadlock): break the generation unless it is already over. */
  giveUp(reason: number): typeof PASSED | typeof BROKEN | typeof GAVE_UP {
    for (;;) {
      const r = this.check();
      if (r !== PARK) return r;
      const s = this.observed;
      if (Atomics.compareExchange(this.w, this.st, s, s | (reason << BROKEN_SHIFT)) !== s) continue;
      Atomics.notify(this.w, this.st); // everyone: the generation cannot complete any more
      return GAVE_UP;
    }
  }

  /** Why check() said BROKEN. */
  reason(): string {
    const s = this.observed;
    return epochOf(s) !== this.epoch ? 'it was reset' : REASONS[(s & BROKEN_MASK) >>> BROKEN_SHIFT]!;
  }
}

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
      this.#waitSync(new Arrival(this.#words, this.#st, s + 1), wait);
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
    return this.#waitAsync(new Arrival(this.#words, this.#st, s + 1), wait);
  }

  /**
   * Arrive only if this arrival completes the generation (every other party
   * is already waiting): release them and return true. Otherwise count
   * nothing, break nothing, and return false. Throws
   * ERR_LOCK_BARRIER_BROKEN when the barrier is broken. Never waits.
   */
  tryArrive(): boolean {
    const added = this.#join();
    let completed = false;
    try {
      completed = this.#enter(true) !== undefined;
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
    const w = this.#words, st = this.#st;
    for (;;) {
      const s = Atomics.load(w, st);
      if ((s & (ARRIVED_MASK | BROKEN_MASK)) === 0) return;
      const next = (s & GEN_MASK) | ((s + (1 << EPOCH_SHIFT)) & EPOCH_MASK);
      if (Atomics.compareExchange(w, st, s, next) !== s) continue;
      Atomics.notify(w, st);
      return;
    }
  }

  /** Whether the barrier is broken right now (a snapshot, for diagnostics). */
  get broken(): boolean {
    return (Atomics.load(this.#words, this.#st) & BROKEN_MASK) !== 0;
  }

  /** Parties counted in the current generation (a snapshot, for diagnostics and tests). */
  get arrived(): number {
    return Atomics.load(this.#words, this.#st) & ARRIVED_MASK;
  }

  /** #join() then #enter(); a thread whose first arrival finds the barrier broken does not become a party. */
  #arrive(): number {
    const added = this.#join();
    try {
      return this.#enter(false)!;
    } catch (err) {
      removeHolding(this.#core, this.slot, added);
      throw err;
    }
  }

  /** Become a member (first arrival) and mark this thread as arriving, before the word is touched; returns the units added. */
  #join(): number {
    const core = this.#core, held = holdingOf(core, core.tid, this.slot);
    if (held > MEMBER) throw new ERR_LOCK_DEADLOCK(core.label(this.slot), 'this thread is already waiting at it');
    const add = held === 0 ? MEMBER + ARRIVING : ARRIVING;
    addHolding(core, this.slot, add); // may throw ERR_LOCK_TABLE_FULL
    return add;
  }

  /** Count this arrival in, one CAS: the word before it (undefined: `onlyLast` and not last). Throws when broken. */
  #enter(onlyLast: boolean): number | undefined {
    const w = this.#words, st = this.#st, parties = this.parties;
    for (;;) {
      const s = Atomics.load(w, st);
      if ((s & BROKEN_MASK) !== 0) {
        throw new ERR_LOCK_BARRIER_BROKEN(this.#core.label(this.slot), REASONS[(s & BROKEN_MASK) >>> BROKEN_SHIFT]!);
      }
      const last = (s & ARRIVED_MASK) + 1 === parties;
      if (onlyLast && !last) return undefined;
      // The last arrival starts the next generation in the same CAS that counts it.
      const next = last ? ((s & ~ARRIVED_MASK) + GEN_ONE) | 0 : s + 1;
      if (Atomics.compareExchange(w, st, s, next) !== s) continue;
      if (last) {
        Atomics.notify(w, st); // every waiter of the generation
        // Exact while every thread using the barrier is one of its parties: the
        // next completer's CAS comes after this thread's next arrival.
        const f = this.#core.f64;
        f[(this.#base + F_ACQUIRED) >> 1] += parties;
        recordWait(f, this.#base, 0, parties - 1); // their waits; each adds its own time
      }
      return s;
    }
  }

  #waitSync(a: Arrival, wait: Wait): void {
    const core = this.#core, w = this.#words, label = core.label(this.slot);
    // Spin first: the last party of a short phase often arrives within a few
    // µs, and a park/unpark round trip costs 30-100 µs here.
    if (wait.timeout > 0) {
      const spin = new SpinWait();
      while (a.check() === PARK && spin.spin());
    }
    const waitSlot = threadBase(core.tid) + T_WAIT_SLOT;
    let slept = false;
    Atomics.store(w, waitSlot, this.slot + 1); // recorded *before* the walk (deadlock.ts)
    try {
      for (;;) {
        const r = a.check();
        if (r === PASSED) break;
        if (r === BROKEN) throw new ERR_LOCK_BARRIER_BROKEN(label, a.reason());
        const cycle = cycleThrough(core, this.slot);
        if (cycle !== null) {
          settle(a, a.giveUp(BROKE_DEADLOCK), label, () => new ERR_LOCK_DEADLOCK(label, cycle));
          break;
        }
        const res = Atomics.wait(w, this.#st, a.observed, remaining(wait.deadline));
        if (res === 'not-equal') continue; // another arrival: read again
        slept = true;
        if (res === 'timed-out') {
          settle(a, a.giveUp(BROKE_TIMEOUT), label, () => new ERR_LOCK_TIMEOUT(label, wait.timeout));
          break;
        }
      }
    } finally {
      Atomics.store(w, waitSlot, 0);
    }
    if (slept) this.#recordWait(a.start);
  }

  async #waitAsync(a: Arrival, wait: Wait): Promise<boolean> {
    const label = this.#core.label(this.slot), { signal } = wait;
    let slept = false;
    try {
      for (;;) {
        const r = a.check();
        if (r === PASSED) break;
        if (r === BROKEN) throw new ERR_LOCK_BARRIER_BROKEN(label, a.reason());
        const res = await waitAsyncUntil(this.#words, this.#st, a.observed, wait.deadline, signal);
        if (res !== 'not-equal') slept = true;
        if (signal?.aborted) {
          settle(a, a.giveUp(BROKE_ABORT), label, () => abortErrorFor(signal));
          break;
        }
        if (res === 'timed-out') {
          settle(a, a.giveUp(BROKE_TIMEOUT), label, () => new ERR_LOCK_TIMEOUT(label, wait.timeout));
          break;
        }
      }
    } finally {
      removeHolding(this.#core, this.slot, ARRIVING);
    }
    if (slept) this.#recordWait(a.start);
    return false;
  }

  /** Wait time of a parked arrival (the completer counted it as contended). */
  #recordWait(start: number): void {
    recordWait(this.#core.f64, this.#base, (performance.now() - start) * 1e6, 0);
  }
}

/** After giveUp(): return normally if the generation completed first, else throw. */
function settle(a: Arrival, outcome: number, label: string, error: () => unknown): void {
  if (outcome === PASSED) return;
  if (outcome === BROKEN) throw new ERR_LOCK_BARRIER_BROKEN(label, a.reason()); // someone else broke it first
  throw error();
}

/**
 * A member thread died or exited: the parties still waiting, and those to
 * come, cannot complete a generation without it. Break the current one.
 */
function recoverMember(w: Int32Array, base: number): void {
  const st = base + S_STATE;
  for (;;) {
    const s = Atomics.load(w, st);
    if ((s & BROKEN_MASK) !== 0) break;
    if (Atomics.compareExchange(w, st, s, s | (BROKE_DIED << BROKEN_SHIFT)) === s) break;
  }
  Atomics.notify(w, st);
}

/**
 * The members that have not arrived in the current generation: the threads
 * its waiters wait for (for deadlock detection and stats().holders). Members
 * inside arrive() hold MEMBER + ARRIVING and are left out.
 */
function waitedFor(table: WatchedTable, _base: number, slot: number): number[] {
  const out: number[] = [];
  for (let tid = 1; tid <= table.threads; tid++) {
    if (Atomics.load(table.words, threadBase(tid) + T_LIVE) === 0) continue;
    if (holdingOf(table, tid, slot) === MEMBER) out.push(tid);
  }
  return out;
}

defineKind(KIND_BARRIER, {
  recoverHeld: (w, base) => recoverMember(w, base),
  holders: waitedFor,
});
