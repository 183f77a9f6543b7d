/**
 * What a primitive needs of its table, as seen from one thread: the shared
 * views, the table's geometry, and this thread's id in the table's registry.
 * One `TableCore` exists per (thread, table); primitives keep a reference.
 * And what the table needs of each primitive (KindOps), which the core
 * carries to recovery and deadlock detection, so that they name no primitive.
 */
import { SLOT_WORDS } from './layout.js';

/**
 * What recovery and deadlock detection need to know of a primitive. Each
 * primitive's -word file exports its own; kinds.ts lists them by kind
 * (layout.ts, KIND_*), and every core carries that list (`kinds`).
 */
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

/** What recovery needs of a table: any thread can scan one it has not joined. */
export interface WatchedTable {
  readonly words: Int32Array;
  readonly slots: number;
  readonly threads: number;
  /** Request nodes (queue/word.ts), 0 for a table without request queues. */
  readonly nodes: number;
  /** Identity (layout H_ID, H_ID2) as a string: the same in every thread. */
  readonly id: string;
  /** The same memory as float64 words (tokens, counters). */
  readonly f64: Float64Array;
  /** Each primitive's KindOps, by kind (kinds.ts). */
  readonly kinds: ReadonlyArray<KindOps | undefined>;
  /** Name of a slot for messages: its name in quotes, or `#index`. */
  label(slot: number): string;
  /**
   * Recovery that needs the whole table at once, beyond each slot's
   * primitive (a request queue table's: its nodes are found by owner across
   * the node pool). Set by whoever makes the table (queue/table.ts).
   */
  readonly recover?: TableRecovery;
}

/**
 * A table-wide recovery of the dead thread `tid`. It returns how many holds
 * it released, and `retry` when part of the work must wait (a latch held by
 * another thread, perhaps one that died too and whose own recovery has not
 * run yet): the dead thread's entry stays reserved until `retry()` answers
 * true. `self`: the dead thread is this one (its own exit hook recovers it).
 */
export type TableRecovery = (table: WatchedTable, tid: number, self: boolean) => { released: number; retry?: () => boolean };

export interface TableCore extends WatchedTable {
  readonly buffer: SharedArrayBuffer;
  /** The LockTable this core belongs to (typed there: this file imports nothing). */
  readonly table: object;
  readonly bytes: Uint8Array;
  /** This thread's id in the registry, 1..MAX_THREADS. */
  readonly tid: number;
  /**
   * Thread-local, one byte per slot: 1 while an async acquire of this thread
   * waits on the slot. A thread takes part in a slot's wait protocol at most
   * once at a time, so its small id names exactly one waiter.
   */
  readonly acquiring: Uint8Array;
  /**
   * Thread-local, by slot: typed-array views of that slot alone, made on
   * first use (mutex.ts, slotViews): a fast path indexes them with constants.
   */
  readonly views: Array<SlotViews | undefined>;
}

/**
 * Views of one slot alone, shared by every handle of it in this thread: a
 * fast path indexes them with constants. (Indexing the whole table's views
 * at a computed offset cost a third more per mutex lock+unlock in a caller's
 * loop, and varied with where the handle landed in the heap: issue 12's notes.)
 */
export function slotViews(core: TableCore, slot: number, base: number): SlotViews {
  return (core.views[slot] ??= {
    words: new Int32Array(core.buffer, base * 4, SLOT_WORDS),
    f64: new Float64Array(core.buffer, base * 4, SLOT_WORDS / 2),
    sampled: 0,
    since: 0,
  });
}

/** Views of one slot's words, shared by every handle of it in one thread. */
export interface SlotViews {
  readonly words: Int32Array;
  readonly f64: Float64Array;
  /** A mutex's sampled hold by this thread (mutex.ts): its acquisition count, and when it began. */
  sampled: number;
  since: number;
}
