/**
 * What recovery and deadlock detection need to know of each primitive, by
 * kind (layout.ts, KIND_*). Each primitive's module registers its own entry
 * when it loads, so threads.ts and deadlock.ts name no primitive.
 */
import type { WatchedTable } from './core.js';

export interface KindOps {
  /**
   * Release what the dead thread `tid` owns in the slot's state word (a
   * single-owner hold: mutex, rwlock writer, once runner); mark it
   * abandoned where the primitive has that notion. True if it owned it.
   */
  recoverOwned?(w: Int32Array, base: number, tid: number): boolean;
  /**
   * The dead thread `tid` held `count` of the slot in its holdings (read
   * shares, permits, barrier membership): give them back, or break the
   * primitive for the threads still using it.
   */
  recoverHeld?(w: Int32Array, base: number, tid: number, count: number): void;
  /** The threads that hold the slot right now, for deadlock detection. */
  holders?(table: WatchedTable, base: number, slot: number): number[];
}

export const kindOps: Array<KindOps | undefined> = [];

export function defineKind(kind: number, ops: KindOps): void {
  kindOps[kind] = ops;
}

/**
 * Recovery that needs the whole table at once (a request queue's nodes are
 * found by owner across the node pool, not slot by slot). It returns how
 * many holds it released, and `retry` when part of the work must wait (a
 * latch held by another thread, perhaps one that died too and whose own
 * recovery has not run yet): the dead thread's entry stays reserved until
 * `retry()` answers true. `self`: the dead thread is this one (its own exit
 * hook recovers it).
 */
export type TableRecovery = (table: WatchedTable, tid: number, self: boolean) => { released: number; retry?: () => boolean };
export const tableRecoveries: TableRecovery[] = [];

export function defineTableRecovery(fn: TableRecovery): void {
  tableRecoveries.push(fn);
}
