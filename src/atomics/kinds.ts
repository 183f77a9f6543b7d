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
