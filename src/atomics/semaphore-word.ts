/**
 * The semaphore's two words and everything that is not a fast path: the
 * holding records, the wait protocol shared by the blocking and async
 * acquire, and the recovery of a dead holder or heir.
 *
 * ```
 * S_STATE (the count word; the only address anybody sleeps on)
 *  bit  31       30                                 0
 *     [ PARKED | permits taken, 0 .. S_AUX (≤ 2^30)     ]
 *
 * S_BELL (the heir word; nobody sleeps on it)
 *  bit  31                  13   12          11        0
 *     [ WIDE: waiters for n > 1 | ABANDONED | heir tid  ]
 * ```
 *
 * taken      permits held by some thread; S_AUX − taken are free. 0 when the
 *            slot is new, so the table needs no per-kind initial state. A
 *            thread takes n by one CAS taken → taken + n (if that is at most
 *            S_AUX) and gives them back with one Atomics.sub.
 * PARKED     a thread may be asleep on S_STATE: whoever frees permits wakes.
 * heir       tid of a waiter that has waited FAIR_MS or more; while it is
 *            set, nobody else takes permits (see Fairness).
 * ABANDONED  permits of a dead holder were given back; the next acquisition
 *            clears the bit and is told (`guard.abandoned`).
 * WIDE       how many waiters want more than one permit (added once by each
 *            before it first sleeps, taken off when it leaves).
 *
 * | S_STATE        | S_BELL         | meaning                           | release(n) does                   |
 * |----------------|----------------|-----------------------------------|-----------------------------------|
 * | taken          | …              | nobody sleeps                     | Atomics.sub(n): the fast path     |
 * | taken │ PARKED | 0 or ABANDONED | sleepers, each wants 1 permit     | sub, clear PARKED, wake n of them |
 * | taken │ PARKED | WIDE or heir   | sleepers want different n, or     | sub, clear PARKED, wake them all: |
 * |                |                | only the heir may take            | only they can tell who fits       |
 * | …              | ABANDONED      | a dead holder's permits came back | (acquire: slow path, reports it)  |
 *
 * Who holds what is not in these words: 2^30 permits and 4095 threads do not
 * fit. Each thread records its own count in its holdings (holdings.ts: a
 * counted record, made by recordOf()), so that `release` can refuse
 * permits the thread does not hold (ERR_LOCK_NOT_OWNER) and recovery can
 * give back a dead thread's permits. Its hot paths read and write the
 * record with plain loads and stores (holdings.ts says why that is safe):
 * an Atomics.store costs ~10 ns here, a third of the whole uncontended acquire.
 *
 * Invariants:
 * - taken = Σ holdings (of live threads, and of dead ones until their
 *   recovery gives them back), outside the two statements that move
 *   permits between the word and a record: holdings.ts take() and give()
 *   do the CAS (or sub) and the record's update with no call between.
 *   worker.terminate() lands only where V8 checks for interrupts (function
 *   entries, loop back-edges), so a killed thread has done both or neither.
 *   The record (count 0) is made *before* the CAS, since making it may call.
 * - No lost wake-ups. A waiter publishes PARKED with a CAS and sleeps on
 *   exactly the value it wrote; a wide waiter counts itself in WIDE first.
 *   Whoever frees permits clears PARKED *before* it reads S_BELL, then wakes
 *   n sleepers (or all, if WIDE or a heir is set): a waiter that published
 *   PARKED before that clear is counted in the S_BELL it reads, and one that
 *   publishes it after sees the freed permits (its CAS would fail otherwise).
 * - A woken waiter that slept sets PARKED again when it takes permits or
 *   parks again: a wake of n may have left others asleep. A waiter that
 *   slept and then gives up (timeout, abort) passes one wake-up on; a
 *   thread that dies is followed by a wake of everyone (recoverHeir).
 * - The heir leaving (served, gave up, died) writes only S_BELL, then wakes
 *   every sleeper: a waiter re-reads the heir bits *after* publishing
 *   PARKED and before it sleeps, so that wake cannot come too early.
 *
 * # Fairness
 * Barging by default: permits go to whoever asks while they last, which
 * keeps the uncontended path one CAS. A waiter that has waited FAIR_MS (1 ms)
 * claims the heir bits; from then on no other acquire (fast paths and
 * tryAcquire included) takes permits, so released permits pile up until the
 * heir's n fit, and the heir takes them on the wake-up of the release that
 * completed them. One heir at a time; the next starving waiter claims the
 * bits once the first is served. So acquire(n) for a large n among a stream
 * of acquire(1) waits about 1 ms plus the time the current holders take to
 * give back n permits, however busy the stream. A fast path that read S_BELL
 * just before the heir claimed it can still take permits once: bypass is
 * bounded by the number of threads.
 */
import type { KindOps, TableCore, WatchedTable } from './core.js';
import { cycleThrough } from './deadlock.js';
import { type Pair, countOf, holdingOf, recordNames, recordOf, removeHolding, take } from './holdings.js';
import { S_BELL, S_STATE, T_LIVE, T_WAIT_SLOT, threadBase } from './layout.js';
import type { Wait } from './options.js';
import { NOT_CONTENDED, Waiter, parkAsync, parkSync } from './park.js';
import { SpinWait, recordWait } from './wait.js';
import { ERR_LOCK_DEADLOCK } from '../errors.js';

export const TAKEN = 0x7fffffff;
export const PARKED = 1 << 31;
export const HEIR_MASK = 0xfff;
export const ABANDONED = 1 << 12;
export const WIDE_ONE = 1 << 13;
export const WIDE_MASK = -WIDE_ONE; // bits 13-31
export const FAIR_MS = 1;

/**
 * After `n` permits were given back to a word that read `old` before: wake
 * whoever may now go on. Called even when another release has just cleared
 * PARKED: its wake-up was for its own permits.
 */
export function wakeAfterRelease(w: Int32Array, base: number, old: number, n: number): void {
  if ((old & PARKED) === 0) return;
  Atomics.and(w, base + S_STATE, ~PARKED); // *before* reading S_BELL (invariants)
  const wide = (Atomics.load(w, base + S_BELL) & (WIDE_MASK | HEIR_MASK)) !== 0;
  Atomics.notify(w, base + S_STATE, wide ? Infinity : n);
}

/** Wake every sleeper if any may sleep; each re-checks, and those that still cannot go on set PARKED again. */
export function wakeAll(w: Int32Array, st: number): void {
  if ((Atomics.and(w, st, ~PARKED) & PARKED) !== 0) Atomics.notify(w, st);
}

/**
 * One thread's wait for n permits after the fast path failed, as park.ts
 * drives it (blocking or async): take them when they fit and no other heir
 * waits; else publish PARKED (and WIDE, for n > 1) and sleep on S_STATE;
 * past FAIR_MS, claim the heir bits.
 */
class SemaphoreWaiter extends Waiter {
  heir = false;
  /** Slept at least once: may have taken a wake-up meant for another (see leave). */
  slept = false;
  /** Counted in WIDE (n > 1 and has decided to sleep). */
  wide = false;
  abandoned = false;
  /** S_BELL and S_STATE as check() last saw them. */
  #b = 0;
  #s = 0;
  /** The backoff before the first park (blocking waits); null once spent. */
  #spin: SpinWait | null;
  readonly #w: Int32Array;
  readonly #st: number;
  readonly #bell: number;

  constructor(core: TableCore, slot: number, base: number, readonly n: number, readonly permits: number, wait: Wait,
    blocking: boolean, /** Blocking waits: this thread's own permits of the slot (deadlock detection). */ readonly own: number,
    /** This thread's record of its permits (holdings.ts), made before the CAS that fills it. */ public rec: Pair) {
    super(core, slot, wait, blocking);
    this.#w = core.words;
    this.#st = base + S_STATE;
    this.#bell = base + S_BELL;
    this.#spin = blocking ? new SpinWait() : null;
  }

  check(): boolean {
    const w = this.#w, st = this.#st, bell = this.#bell, n = this.n, most = this.permits - n;
    for (;;) {
      const b = (this.#b = Atomics.load(w, bell));
      const s = (this.#s = Atomics.load(w, st));
      if (((b & HEIR_MASK) !== 0 && !this.heir) || (s & TAKEN) > most) return false;
      const rec = (this.rec = recordOf(this.core, this.slot, this.rec)); // may throw: before the CAS
      // Having slept, set PARKED again: a wake of n may have left others asleep.
      if (!take(w, st, s, (s + n) | (this.slept ? PARKED : 0), w, rec, this.slot, n)) continue;
      this.abandoned = (b & ABANDONED) !== 0 && claimAbandoned(w, bell);
      this.#leave();
      return true;
    }
  }

  override spin(): boolean {
    // Spin briefly, backing off, before the first park: a short hold on the
    // other core ends sooner than a park/unpark round trip. Never past
    // sleepers, a heir or news of a dead holder: they are ahead, or need the slow way.
    if (this.#spin !== null && (this.#b & (HEIR_MASK | ABANDONED)) === 0 && (this.#s & PARKED) === 0 && this.#spin.spin()) return true;
    this.#spin = null;
    return false;
  }

  publish(now: number): boolean {
    const w = this.#w, st = this.#st, bell = this.#bell, b = this.#b, heir = b & HEIR_MASK;
    let s = this.#s;
    if (!this.heir && heir === 0 && now - this.start >= FAIR_MS) {
      if (Atomics.compareExchange(w, bell, b, b | this.core.tid) === b) this.heir = true;
      return false;
    }
    if (this.n > 1 && !this.wide) {
      // Count ourselves in WIDE *before* publishing PARKED: a release that
      // sees our PARKED then sees WIDE too, and wakes everyone, us included.
      Atomics.add(w, bell, WIDE_ONE);
      this.wide = true;
      return false;
    }
    if ((s & PARKED) === 0) {
      // Publish PARKED *before* sleeping, else a release may skip the wake-up.
      if (Atomics.compareExchange(w, st, s, s | PARKED) !== s) return false;
      s |= PARKED;
    }
    // A heir leaving writes only S_BELL, then wakes PARKED sleepers: read
    // it *after* publishing PARKED, or its wake-up may come too early.
    if ((Atomics.load(w, bell) & HEIR_MASK) !== heir) return false;
    this.index = st;
    this.value = s;
    this.slept = true;
    // Wake at FAIR_MS, still waiting, to claim the heir bits.
    this.until = heir === 0 && now - this.start < FAIR_MS ? this.start + FAIR_MS : Infinity;
    return true;
  }

  /**
   * Leave without permits (timeout, abort, deadlock, a full holdings
   * entry): give up the heir bits, WIDE and an unused record, and pass on a
   * wake-up this waiter may have taken and not used.
   */
  override leave(): boolean {
    this.#leave();
    removeHolding(this.core, this.slot, 0); // frees the record only if it counts 0
    if (this.slept) Atomics.notify(this.#w, this.#st, 1);
    return false;
  }

  /**
   * Deadlock detection for a blocking wait, before each park. The table's
   * walk (deadlock.ts) treats a wait as waiting for *every* holder, which is
   * exact for one holder; with several, any one of them may give back
   * enough, and a cycle through one of them is no proof. So the wait is
   * recorded (T_WAIT_SLOT) and walked only while exactly one other thread
   * holds permits; and not walked from here if this thread holds some (the
   * walk would find this thread among the holders at once), only recorded
   * for the others' walks. Holders can change while it sleeps: advisory.
   */
  override cycle(): string | null {
    const core = this.core, slot = this.slot, exact = soleOtherHolder(core, slot, this.#st, this.own) !== 0;
    Atomics.store(core.words, threadBase(core.tid) + T_WAIT_SLOT, exact ? slot + 1 : 0); // before the walk (deadlock.ts)
    return exact && this.own === 0 ? cycleThrough(core, slot) : null;
  }

  /** Stop counting in WIDE; give up the heir bits (ours: nobody else writes them while they name us) and let the others in. */
  #leave(): void {
    if (this.wide) Atomics.sub(this.#w, this.#bell, WIDE_ONE);
    this.wide = false;
    if (!this.heir) return;
    this.heir = false;
    Atomics.and(this.#w, this.#bell, ~HEIR_MASK);
    wakeAll(this.#w, this.#st);
  }
}

/** Clear ABANDONED; true for the one thread that cleared it. */
export function claimAbandoned(w: Int32Array, bell: number): boolean {
  return (Atomics.and(w, bell, ~ABANDONED) & ABANDONED) !== 0;
}

/** What a slow acquire hands back to the Semaphore: the record it used, and `abandoned`. */
export interface Taken { rec: Pair; abandoned: boolean }

/**
 * A blocking wait would never end: this thread holds `own` permits and asks
 * for n more than the others could ever give back. Checked before parking;
 * an async acquire is not refused, since another task of its thread may
 * release.
 */
function selfDeadlock(core: TableCore, slot: number, n: number, permits: number, hint: Pair): number {
  const own = recordNames(core.words, hint, slot) ? countOf(core.words, hint) : holdingOf(core, core.tid, slot);
  if (own + n > permits) {
    throw new ERR_LOCK_DEADLOCK(core.label(slot), `this thread holds ${own} of its ${permits} permits and waits for ${n} more`);
  }
  return own;
}

/** Blocking acquire after the fast path failed. */
export function acquireSlowSync(core: TableCore, slot: number, base: number, n: number, permits: number, wait: Wait, hint: Pair): Taken {
  const own = selfDeadlock(core, slot, n, permits, hint);
  const waiter = new SemaphoreWaiter(core, slot, base, n, permits, wait, true, own, hint);
  const ns = parkSync(waiter);
  if (ns !== NOT_CONTENDED) recordWait(core.f64, base, ns); // holders race here: approximate
  return { rec: waiter.rec, abandoned: waiter.abandoned };
}

/** Async acquire after the fast path failed. Not recorded for deadlock detection (see park.ts). */
export async function acquireSlowAsync(
  core: TableCore, slot: number, base: number, n: number, permits: number, wait: Wait, hint: Pair,
): Promise<Taken> {
  const waiter = new SemaphoreWaiter(core, slot, base, n, permits, wait, false, 0, hint);
  const ns = await parkAsync(waiter);
  if (ns !== NOT_CONTENDED) recordWait(core.f64, base, ns);
  return { rec: waiter.rec, abandoned: waiter.abandoned };
}

/**
 * One attempt after the fast path's checks failed: ABANDONED set, sleepers
 * present, or too few permits. Never past a heir. Returns the record used,
 * negated when the permits came from a dead holder, or 0 when there are too few.
 */
export function tryAcquireSlow(core: TableCore, slot: number, base: number, n: number, permits: number, hint: Pair): number {
  const w = core.words, st = base + S_STATE, bell = base + S_BELL, most = permits - n;
  for (;;) {
    const b = Atomics.load(w, bell), s = Atomics.load(w, st);
    if ((b & HEIR_MASK) !== 0 || (s & TAKEN) > most) {
      removeHolding(core, slot, 0); // frees a record made for nothing (only if it counts 0)
      return 0;
    }
    const rec = (hint = recordOf(core, slot, hint)); // may throw: before the CAS
    if (!take(w, st, s, s + n, w, rec, slot, n)) continue;
    return (b & ABANDONED) !== 0 && claimAbandoned(w, bell) ? -rec : rec;
  }
}

/**
 * Any thread died: if it was the heir, clear the bits so the next starving
 * waiter can claim them. Either way wake every sleeper once: the dead
 * thread may have been woken by a release's wake of n and taken that
 * wake-up with it. (If it was counted in WIDE, it stays counted: releases
 * then wake everyone, which costs time, never a wake-up.)
 */
function recoverHeir(w: Int32Array, base: number, dead: number): boolean {
  // Nobody else writes the heir bits while they name `dead`, and `dead` has stopped.
  if ((Atomics.load(w, base + S_BELL) & HEIR_MASK) === dead) Atomics.and(w, base + S_BELL, ~HEIR_MASK);
  Atomics.notify(w, base + S_STATE);
  return false; // a heir holds no permits: nothing was released
}

/** Give back the `count` permits the dead thread held, marked abandoned for the next acquirer. */
function recoverPermits(w: Int32Array, base: number, _dead: number, count: number): void {
  if (count === 0) return; // a record made for an acquire that never took anything
  Atomics.or(w, base + S_BELL, ABANDONED); // before the permits, so whoever takes them is told
  wakeAfterRelease(w, base, Atomics.sub(w, base + S_STATE, count), count);
}

/**
 * The one thread other than this one that holds permits of `slot`, or 0 if
 * none, several, or some permits are on their way to a record. Stops as
 * soon as the holders it found account for every permit taken.
 */
function soleOtherHolder(core: TableCore, slot: number, st: number, own: number): number {
  const w = core.words;
  let left = (Atomics.load(w, st) & TAKEN) - own, found = 0;
  for (let tid = 1; tid <= core.threads && left > 0; tid++) {
    if (tid === core.tid || Atomics.load(w, threadBase(tid) + T_LIVE) <= 0) continue;
    const held = holdingOf(core, tid, slot);
    if (held === 0) continue;
    if (found !== 0) return 0;
    found = tid;
    left -= held;
  }
  return left === 0 ? found : 0;
}

/** Live threads that hold permits of `slot` (stats, deadlock walk). */
export function permitHolders(table: WatchedTable, _base: number, slot: number): number[] {
  const out: number[] = [];
  for (let tid = 1; tid <= table.threads; tid++) {
    if (Atomics.load(table.words, threadBase(tid) + T_LIVE) > 0 && holdingOf(table, tid, slot) > 0) out.push(tid);
  }
  return out;
}

/** What recovery and deadlock detection need of a semaphore (kinds.ts, KIND_SEMAPHORE). */
export const semaphoreKind: KindOps = { recoverOwned: recoverHeir, recoverHeld: recoverPermits, holders: permitHolders };
