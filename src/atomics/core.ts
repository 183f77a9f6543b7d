/**
 * What a primitive needs of its table, as seen from one thread: the shared
 * views, the table's geometry, and this thread's id in the table's registry.
 * One `TableCore` exists per (thread, table); primitives keep a reference.
 */
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
}
