/**
 * A thread's holdings: what it holds that no state word can name, because
 * many threads hold it at once (rwlock read shares, semaphore permits,
 * barrier membership, condition waits). This module is the only one that
 * knows where they live and how a record is written; the primitives say
 * only what a count means.
 *
 * ```
 * registry entry of thread tid (layout.ts, threadBase(tid))
 *   … T_HOLDS: HOLDS_MAX pairs, each two Int32 words
 *   ┌──────────┬─────────┐
 *   │ slot + 1 │ count   │   slot + 1 = 0: the pair is free
 *   └──────────┴─────────┘
 * ```
 *
 * Only the thread itself writes its pairs, so updates need no CAS. Writers
 * store the count before the slot (a pair that names a slot always has
 * the count meant for it), and free a pair by clearing the slot. Readers:
 * - the thread itself, on its hot paths: plain loads (it sees its own
 *   latest writes; an Atomics.load costs ~10 ns a word here, and a scan of
 *   HOLDS_MAX pairs with it cost more than a whole read lock);
 * - recovery, after the thread has stopped, and deadlock detection
 *   (racy, advisory): Atomics.load, whole values (aligned Int32 accesses
 *   never tear).
 *
 * A pair is named by a `Pair`: the word index of its slot word, whose
 * count word is the next one. 0 (`NO_PAIR`) names none: word 0 is the
 * table's magic, never a pair.
 */
import type { TableCore, WatchedTable } from './core.js';
import { HOLDS_MAX, T_HOLDS, threadBase } from './layout.js';
import { ERR_LOCK_TABLE_FULL } from '../errors.js';

declare const pairBrand: unique symbol;
/** A holdings pair of this thread: the word index of its slot word. */
export type Pair = number & { readonly [pairBrand]: true };
/** Module-local: an exported binding costs a cell load and a hole check at each use in a hot loop. */
const NONE = 0 as Pair;
export const NO_PAIR = NONE;

const firstPair = (tid: number) => (threadBase(tid) + T_HOLDS) as Pair;

// --- any thread's holdings, through Atomics --------------------------------

/** Add `n` to this thread's holding of `slot`. Throws ERR_LOCK_TABLE_FULL past HOLDS_MAX distinct slots. */
export function addHolding(core: TableCore, slot: number, n: number): void {
  const w = core.words, at = firstPair(core.tid);
  let free = -1;
  for (let i = 0; i < HOLDS_MAX; i++) {
    const s = Atomics.load(w, at + 2 * i);
    if (s === slot + 1) {
      Atomics.store(w, at + 2 * i + 1, Atomics.load(w, at + 2 * i + 1) + n);
      return;
    }
    if (s === 0 && free < 0) free = i;
  }
  if (free < 0) tableFull(core, slot);
  Atomics.store(w, at + 2 * free + 1, n);
  Atomics.store(w, at + 2 * free, slot + 1);
}

/**
 * Take `n` off this thread's holding of `slot`. Returns false, changing
 * nothing, when the thread holds fewer than `n`.
 */
export function removeHolding(core: TableCore, slot: number, n: number): boolean {
  const w = core.words, at = firstPair(core.tid);
  for (let i = 0; i < HOLDS_MAX; i++) {
    if (Atomics.load(w, at + 2 * i) !== slot + 1) continue;
    const left = Atomics.load(w, at + 2 * i + 1) - n;
    if (left < 0) return false;
    if (left === 0) Atomics.store(w, at + 2 * i, 0);
    Atomics.store(w, at + 2 * i + 1, left);
    return true;
  }
  return n === 0;
}

/** How much of `slot` thread `tid` holds. */
export function holdingOf(table: WatchedTable, tid: number, slot: number): number {
  const w = table.words, at = firstPair(tid);
  for (let i = 0; i < HOLDS_MAX; i++) {
    if (Atomics.load(w, at + 2 * i) === slot + 1) return Atomics.load(w, at + 2 * i + 1);
  }
  return 0;
}

/** Every (slot, count) thread `tid` holds; cleared as it is read (for recovery of a dead thread). */
export function takeHoldings(table: WatchedTable, tid: number): Array<[slot: number, count: number]> {
  const w = table.words, at = firstPair(tid), out: Array<[number, number]> = [];
  for (let i = 0; i < HOLDS_MAX; i++) {
    const s = Atomics.load(w, at + 2 * i);
    if (s === 0) continue;
    out.push([s - 1, Atomics.load(w, at + 2 * i + 1)]);
    Atomics.store(w, at + 2 * i, 0);
    Atomics.store(w, at + 2 * i + 1, 0);
  }
  return out;
}

function tableFull(core: TableCore, slot: number): never {
  throw new ERR_LOCK_TABLE_FULL(`a shared hold on ${core.label(slot)} for this thread`, HOLDS_MAX);
}

// --- this thread's own pairs, on its hot paths -----------------------------

/** What the last ownHolding() scan found: the slot's pair, and the first free pair (each NO_PAIR if none). */
let found = NONE, vacant = NONE;
export const foundPair = (): Pair => found;
export const vacantPair = (): Pair => vacant;

/** This thread's count for `slot` (0 if it has no pair), by plain loads; sets foundPair() and vacantPair(). */
export function ownHolding(core: TableCore, slot: number): number {
  const w = core.words, key = slot + 1;
  found = vacant = NONE;
  for (let i: number = firstPair(core.tid), end = i + 2 * HOLDS_MAX; i < end; i += 2) {
    const k = w[i];
    if (k === key) {
      found = i as Pair;
      return w[i + 1]!;
    }
    if (k === 0 && vacant === NONE) vacant = i as Pair;
  }
  return 0;
}

/**
 * The pair the last ownHolding() scan of `slot` offers for a new hold: the
 * slot's own, else a free one. ERR_LOCK_TABLE_FULL if none, before anything changes.
 */
export function pairToHold(core: TableCore, slot: number): Pair {
  if (found !== NONE) return found;
  if (vacant === NONE) tableFull(core, slot);
  return vacant;
}

/** The count of one of this thread's pairs (a plain load). */
export const countOf = (w: Int32Array, pair: Pair): number => w[pair + 1]!;

/** Set the count of a pair that names its slot already (or is about to be named by nameSlot()). */
export function setCount(w: Int32Array, pair: Pair, count: number): void {
  Atomics.store(w, pair + 1, count);
}

/** Make a free pair name `slot`, with `count`: the count first, then the slot. */
export function holdIn(w: Int32Array, pair: Pair, slot: number, count: number): void {
  Atomics.store(w, pair + 1, count);
  Atomics.store(w, pair, slot + 1);
}

/** Free a pair (its count is never read again until holdIn() writes a new one). */
export function freePair(w: Int32Array, pair: Pair): void {
  Atomics.store(w, pair, 0);
}

// --- counted records: units taken from a shared count word -----------------
//
// A semaphore's permits live in two places: the shared `taken` count and
// the holder's record. worker.terminate() lands only where V8 checks for
// interrupts (function entries, loop back-edges), so the CAS (or sub) on
// the shared word and the update of the record follow each other in one
// function with no call between: a killed thread has done both or neither.
// Plain stores here, as on every own-pair hot path above.

const lastPairs = new WeakMap<TableCore, Uint8Array>();

/**
 * Per (thread, table), one byte per slot: 1 + the index of the pair that
 * last recorded this thread's units of the slot. Every counted record is
 * made through recordOf(), so a live record of the slot is always at that
 * pair: when the pair is free, the slot has no record and the pair can be
 * taken back without a scan. A give() that brings the count to 0 frees the
 * pair (as removeHolding does), and the next take() takes it back at the
 * cost of one store.
 */
export function lastPairsOf(core: TableCore): Uint8Array {
  let last = lastPairs.get(core);
  if (last === undefined) lastPairs.set(core, (last = new Uint8Array(core.slots)));
  return last;
}

/** This thread's record of `slot` (Atomics loads), or NO_PAIR. */
export function findRecord(core: TableCore, slot: number): Pair {
  const w = core.words, at = firstPair(core.tid);
  for (let i = 0; i < HOLDS_MAX; i++) if (Atomics.load(w, at + 2 * i) === slot + 1) return (at + 2 * i) as Pair;
  return NONE;
}

/**
 * Whether `pair` (the record this thread last used for `slot`, or NONE)
 * can take units of `slot` without a scan: it names the slot, or it was
 * freed by the last give() and is still the slot's (`last`, lastPairsOf()).
 */
export function recordServes(w: Int32Array, pair: Pair, slot: number, first: Pair, last: Uint8Array): boolean {
  if (pair === NONE) return false;
  const key = w[pair];
  return key === slot + 1 || (key === 0 && last[slot] === ((pair - first) >> 1) + 1);
}

/** Whether `pair` (or NONE) is a live record of `slot`. */
export function recordNames(w: Int32Array, pair: Pair, slot: number): boolean {
  return pair !== NONE && w[pair] === slot + 1;
}

/** The first pair of this thread's entry: what recordServes() measures pairs from. */
export const firstOwnPair = (core: TableCore): Pair => firstPair(core.tid);

/**
 * This thread's record of `slot`, made with count 0 if there is none.
 * `hint` is the pair this returned last time (or NONE). May throw
 * ERR_LOCK_TABLE_FULL: call it before the CAS, never between the CAS and take().
 */
export function recordOf(core: TableCore, slot: number, hint: Pair): Pair {
  const w = core.words, first = firstPair(core.tid), last = lastPairsOf(core);
  if (hint !== NONE && w[hint] === slot + 1) return hint;
  if (last[slot] !== 0) {
    const pair = (first + 2 * (last[slot] - 1)) as Pair;
    if (w[pair] === slot + 1) return pair;
    if (w[pair] === 0) {
      holdIn(w, pair, slot, 0);
      return pair;
    }
  }
  let pair = findRecord(core, slot);
  if (pair === NONE) {
    addHolding(core, slot, 0);
    pair = findRecord(core, slot);
  }
  last[slot] = ((pair - first) >> 1) + 1;
  return pair;
}

/**
 * Take `n` units: CAS `count[at]` (the shared count word) from `s` to `next`
 * and, straight after it, credit them to `pair` of this thread's entry in `w`
 * (the record of `slot` that recordServes() or recordOf() approved). False,
 * changing nothing, if the CAS lost.
 */
export function take(count: Int32Array, at: number, s: number, next: number, w: Int32Array, pair: Pair, slot: number, n: number): boolean {
  if (Atomics.compareExchange(count, at, s, next) !== s) return false;
  if (w[pair] === slot + 1) w[pair + 1] += n;
  else { // freed by the last give(), still ours: the count first, then the slot
    w[pair + 1] = n;
    w[pair] = slot + 1;
  }
  return true;
}

/**
 * Give back `n` of the `held` units recorded in `pair` (of `w`): off the
 * record first (freed at 0), then Atomics.sub(count[at], n), with no call
 * between. Returns the count word before the sub.
 */
export function give(w: Int32Array, pair: Pair, held: number, n: number, count: Int32Array, at: number): number {
  if (held === n) w[pair] = 0;
  else w[pair + 1] = held - n;
  return Atomics.sub(count, at, n);
}
