/**
 * A thread's holdings: what it holds that no state word can name, because
 * many threads hold it at once (rwlock read shares, semaphore permits,
 * barrier membership). HOLDS_MAX pairs of words in the thread's registry
 * entry (layout.ts, T_HOLDS): slot + 1, then count.
 *
 * Only the thread itself writes its pairs, so updates need no CAS; stores
 * are atomic so that recovery (after the thread has stopped) and deadlock
 * detection (racy, advisory) read whole values.
 */
import type { TableCore, WatchedTable } from './core.js';
import { HOLDS_MAX, T_HOLDS, threadBase } from './layout.js';
import { ERR_LOCK_TABLE_FULL } from '../errors.js';

/** Add `n` to this thread's holding of `slot`. Throws ERR_LOCK_TABLE_FULL past HOLDS_MAX distinct slots. */
export function addHolding(core: TableCore, slot: number, n: number): void {
  const w = core.words, at = threadBase(core.tid) + T_HOLDS;
  let free = -1;
  for (let i = 0; i < HOLDS_MAX; i++) {
    const s = Atomics.load(w, at + 2 * i);
    if (s === slot + 1) {
      Atomics.store(w, at + 2 * i + 1, Atomics.load(w, at + 2 * i + 1) + n);
      return;
    }
    if (s === 0 && free < 0) free = i;
  }
  if (free < 0) throw new ERR_LOCK_TABLE_FULL(`a shared hold on ${core.label(slot)} for this thread`, HOLDS_MAX);
  Atomics.store(w, at + 2 * free + 1, n);
  Atomics.store(w, at + 2 * free, slot + 1);
}

/**
 * Take `n` off this thread's holding of `slot`. Returns false, changing
 * nothing, when the thread holds fewer than `n`.
 */
export function removeHolding(core: TableCore, slot: number, n: number): boolean {
  const w = core.words, at = threadBase(core.tid) + T_HOLDS;
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
  const w = table.words, at = threadBase(tid) + T_HOLDS;
  for (let i = 0; i < HOLDS_MAX; i++) {
    if (Atomics.load(w, at + 2 * i) === slot + 1) return Atomics.load(w, at + 2 * i + 1);
  }
  return 0;
}

/** Every (slot, count) thread `tid` holds; cleared as it is read (for recovery of a dead thread). */
export function takeHoldings(table: WatchedTable, tid: number): Array<[slot: number, count: number]> {
  const w = table.words, at = threadBase(tid) + T_HOLDS, out: Array<[number, number]> = [];
  for (let i = 0; i < HOLDS_MAX; i++) {
    const s = Atomics.load(w, at + 2 * i);
    if (s === 0) continue;
    out.push([s - 1, Atomics.load(w, at + 2 * i + 1)]);
    Atomics.store(w, at + 2 * i, 0);
    Atomics.store(w, at + 2 * i + 1, 0);
  }
  return out;
}
