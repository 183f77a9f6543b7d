/**
 * The barrier's state word (slot word S_STATE) and everything that is not
 * the public class: joining, the arrival's CAS, reset, the wait for the
 * generation to complete (a park.ts waiter), recovery of a member that died.
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
import type { KindOps, TableCore, WatchedTable } from './core.js';
import { addHolding, holdingOf } from './holdings.js';
import { F_ACQUIRED, S_STATE, T_LIVE, threadBase } from './layout.js';
import type { Wait } from './options.js';
import { ABORT, FAILED, type Reason, TIMEOUT, Waiter, parkAsync, parkSync } from './park.js';
import { SpinWait, recordWait } from './wait.js';
import { ERR_LOCK_BARRIER_BROKEN, ERR_LOCK_DEADLOCK } from '../errors.js';

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
export const ARRIVING = 1;

const genOf = (s: number) => s >>> GEN_SHIFT;
const epochOf = (s: number) => (s & EPOCH_MASK) >>> EPOCH_SHIFT;

/** Become a member (first arrival) and mark this thread as arriving, before the word is touched; returns the units added. */
export function join(core: TableCore, slot: number): number {
  const held = holdingOf(core, core.tid, slot);
  if (held > MEMBER) throw new ERR_LOCK_DEADLOCK(core.label(slot), 'this thread is already waiting at it');
  const add = held === 0 ? MEMBER + ARRIVING : ARRIVING;
  addHolding(core, slot, add); // may throw ERR_LOCK_TABLE_FULL
  return add;
}

/**
 * Count this arrival in, one CAS: the word before it (undefined: `onlyLast`
 * and not last). Throws ERR_LOCK_BARRIER_BROKEN when broken.
 */
export function enter(core: TableCore, slot: number, base: number, parties: number, onlyLast: boolean): number | undefined {
  const w = core.words, st = base + S_STATE;
  for (;;) {
    const s = Atomics.load(w, st);
    if ((s & BROKEN_MASK) !== 0) throw new ERR_LOCK_BARRIER_BROKEN(core.label(slot), REASONS[(s & BROKEN_MASK) >>> BROKEN_SHIFT]!);
    const last = (s & ARRIVED_MASK) + 1 === parties;
    if (onlyLast && !last) return undefined;
    // The last arrival starts the next generation in the same CAS that counts it.
    const next = last ? ((s & ~ARRIVED_MASK) + GEN_ONE) | 0 : s + 1;
    if (Atomics.compareExchange(w, st, s, next) !== s) continue;
    if (last) {
      Atomics.notify(w, st); // every waiter of the generation
      // Exact while every thread using the barrier is one of its parties: the
      // next completer's CAS comes after this thread's next arrival.
      core.f64[(base + F_ACQUIRED) >> 1] += parties;
      recordWait(core.f64, base, 0, parties - 1); // their waits; each adds its own time
    }
    return s;
  }
}

/** A broken barrier repaired, or the current generation broken if parties wait in it; a fresh generation. */
export function resetWord(w: Int32Array, st: number): void {
  for (;;) {
    const s = Atomics.load(w, st);
    if ((s & (ARRIVED_MASK | BROKEN_MASK)) === 0) return;
    const next = (s & GEN_MASK) | ((s + (1 << EPOCH_SHIFT)) & EPOCH_MASK);
    if (Atomics.compareExchange(w, st, s, next) !== s) continue;
    Atomics.notify(w, st);
    return;
  }
}

/**
 * A party's wait for its generation, as park.ts drives it: done when the
 * generation moves on; broken (it throws) when the epoch or the broken
 * field moves. It sleeps on the exact word it last read, with no flag to
 * publish: every change it must see comes with a notify-all (see above).
 * Leaving early breaks the generation for the others, unless it completed first.
 */
class ArrivalWaiter extends Waiter {
  /** The word as check() last read it: sleep on exactly this value. */
  #s: number;
  readonly #gen: number;
  readonly #epoch: number;
  readonly #st: number;
  #spin: SpinWait | null;

  constructor(core: TableCore, slot: number, base: number, wait: Wait, blocking: boolean, arrivedIn: number) {
    super(core, slot, wait, blocking);
    this.#st = base + S_STATE;
    this.#s = arrivedIn;
    this.#gen = genOf(arrivedIn);
    this.#epoch = epochOf(arrivedIn);
    this.#spin = blocking ? new SpinWait() : null;
  }

  check(): boolean {
    const s = (this.#s = Atomics.load(this.core.words, this.#st));
    if (genOf(s) !== this.#gen) return true;
    if (epochOf(s) !== this.#epoch || (s & BROKEN_MASK) !== 0) throw this.#broken(s);
    return false;
  }

  /** Spin first: the last party of a short phase often arrives within a few µs, and a park/unpark round trip costs 30-100 µs here. */
  override spin(): boolean {
    if (this.#spin !== null && this.#spin.spin()) return true;
    this.#spin = null;
    return false;
  }

  publish(): boolean {
    this.index = this.#st;
    this.value = this.#s;
    return true;
  }

  /** Break the generation (timeout, abort, deadlock), unless it is over already: true if it completed first. */
  override leave(reason: Reason): boolean {
    if (reason === FAILED) return false; // check() found it broken: nothing to add
    const w = this.core.words, st = this.#st;
    const why = reason === TIMEOUT ? BROKE_TIMEOUT : reason === ABORT ? BROKE_ABORT : BROKE_DEADLOCK;
    for (;;) {
      if (this.check()) return true; // throws if someone else broke it first
      const s = this.#s;
      if (Atomics.compareExchange(w, st, s, s | (why << BROKEN_SHIFT)) !== s) continue;
      Atomics.notify(w, st); // everyone: the generation cannot complete any more
      return false;
    }
  }

  #broken(s: number): Error {
    const why = epochOf(s) !== this.#epoch ? 'it was reset' : REASONS[(s & BROKEN_MASK) >>> BROKEN_SHIFT]!;
    return new ERR_LOCK_BARRIER_BROKEN(this.core.label(this.slot), why);
  }
}

/** Wait time of a parked arrival (its completer counted it as contended). Many waiters write it at once: approximate. */
function counted(core: TableCore, base: number, ns: number): void {
  if (ns > 0) recordWait(core.f64, base, ns, 0);
}

/** Wait, blocking, for the generation this thread arrived in (`arrivedIn`: the word after its arrival). */
export function awaitGenerationSync(core: TableCore, slot: number, base: number, wait: Wait, arrivedIn: number): void {
  counted(core, base, parkSync(new ArrivalWaiter(core, slot, base, wait, true, arrivedIn)));
}

/** As awaitGenerationSync, without blocking the event loop. */
export async function awaitGeneration(core: TableCore, slot: number, base: number, wait: Wait, arrivedIn: number): Promise<void> {
  counted(core, base, await parkAsync(new ArrivalWaiter(core, slot, base, wait, false, arrivedIn)));
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

/** What recovery and deadlock detection need of a barrier (kinds.ts, KIND_BARRIER). */
export const barrierKind: KindOps = {
  recoverHeld: (w, base) => recoverMember(w, base),
  holders: waitedFor,
};
