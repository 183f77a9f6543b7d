/**
 * The shared-memory layout of a lock table, drawn once. Every thread (the
 * main thread and every worker) reads the buffer through these constants, so
 * this file is the only place where a word's position is decided.
 *
 * Why Int32: Atomics.wait/notify/waitAsync only work on Int32Array and
 * BigInt64Array, and 32-bit CAS is the cheapest atomic V8 emits. Counters
 * that must not wrap (acquisitions, nanoseconds) are float64 words written
 * only by the lock's holder, so plain stores are race-free; they are read
 * racily by stats(), which only needs a recent value.
 *
 * ```
 * byte 0                HEADER_WORDS × 4
 * ┌───────────────────┬──────────────────────────┬──────────────────────────┬─────────────────────────┬──────────────────────────┐
 * │ header (16 words) │ registry: threads × 40 w.│ slots: slots × 16 words  │ names: slots × NAME_MAX │ nodes: nodes × 16 words  │
 * └───────────────────┴──────────────────────────┴──────────────────────────┴─────────────────────────┴──────────────────────────┘
 * ```
 *
 * Header words:
 *   H_MAGIC        0x4C4B4559 ('LKEY'): this buffer is a latchkey table
 *   H_VERSION      LAYOUT_VERSION: bumped whenever a word below moves
 *   H_SLOTS        number of slots
 *   H_THREADS      number of registry entries (at most MAX_THREADS)
 *   H_NAME_MAX     bytes reserved for each slot's name (NAME_MAX)
 *   H_BYTES        total byte length, checked on attach
 *   H_NAMED        how many slots hold a name (stats only)
 *   H_ID, H_ID2    random identity: two SharedArrayBuffer objects with the
 *                  same id in one thread are one table (one registry entry)
 *   H_NODES        number of request nodes (0 for a table without request
 *                  queues): the first 2 × slots are the queues' anchors, two
 *                  per slot, the rest are requests (queue/word.ts draws them)
 *   H_FLAGS        TABLE_GATED: every queue of this table grants only under
 *                  an outer lock (the host tier's table, queue/word.ts)
 *   H_HELPER       a queue table's helper thread (the host tier's lease keeper,
 *                  the cluster agent: bridge/helper-threads.ts): HELPER_*
 *                  state; H_HELPER_BELL its doorbell
 *   H_NAME_LATCH   a queue table's name latch; H_TOKEN_HWM (f64) the highest
 *                  token of a slot given back (queue/names.ts)
 *
 * Registry entry words (one per thread that has touched the table; the
 * entry's index + 1 is the thread's small id, `tid`, 1..MAX_THREADS):
 *   T_LIVE         0 free; Node threadId + 1 of the live thread; T_RECOVERING
 *                  while a dead thread's locks are being released
 *   T_WAIT_SLOT    slot + 1 the thread is blocked on in a sync wait, else 0
 *   T_PARENT       Node threadId + 1 of the thread that started this one (as
 *                  far as latchkey knows), so a parent's death recovers the
 *                  workers that died with it
 *   T_OSTID        the thread's OS thread id (Linux /proc/thread-self), 0
 *                  where unknown: a thread whose task is gone from
 *                  /proc/self/task is provably dead before its 'exit' event
 *   T_RECOVERER    while T_RECOVERING: Node threadId + 1 of the thread
 *                  recovering it, and T_DEAD_MARK the T_LIVE it had; if the
 *                  recoverer dies too, its own recovery resumes this one
 *   T_HOLDS …      HOLDS_MAX pairs (slot + 1, count): what the thread holds
 *                  that no state word can name, because many threads hold it
 *                  at once (rwlock read shares, semaphore permits, barrier
 *                  membership). Written only by the thread itself; read by
 *                  recovery after its death and by deadlock detection.
 *                  holdings.ts is the only module that reads or writes them.
 *
 * Slot words (64 bytes: one cache line, so two hot locks never share one):
 *   S_STATE        the primitive's state word; bits documented in its -word
 *                  file (mutex-word.ts, rwlock-word.ts, ...). Always the wait address for ordinary waiters.
 *   S_BELL         the heir's doorbell: bumped after the lock is handed over
 *   S_USE          how the slot is reached and what lives in it (USE_* below)
 *   S_NAME_HASH    FNV-1a of the name's UTF-8 bytes, checked before the bytes
 *   S_NAME_LEN     byte length of the name; -1 for a queue slot given back
 *   S_AUX          a primitive's fixed parameter (semaphore permits, barrier
 *                  parties), written once when the slot takes its kind; a
 *                  request queue's generation (queue/names.ts)
 *   F_ACQUIRED …   float64 counters, at float64 index (slot word + n) / 2
 */

export const MAGIC = 0x4c4b4559;
export const LAYOUT_VERSION = 2;

export const H_MAGIC = 0;
export const H_VERSION = 1;
export const H_SLOTS = 2;
export const H_THREADS = 3;
export const H_NAME_MAX = 4;
export const H_BYTES = 5;
export const H_NAMED = 6;
export const H_ID = 7;
export const H_ID2 = 8;
export const H_NODES = 9;
export const H_FLAGS = 10;
export const TABLE_GATED = 1;
export const H_HELPER = 11;
export const H_HELPER_BELL = 12;
export const H_NAME_LATCH = 13;
export const H_TOKEN_HWM = 14; // f64: 14-15
/** H_HELPER: none, being started, running (bridge/helper-threads.ts moves it on). */
export const HELPER_NONE = 0;
export const HELPER_STARTING = 1;
export const HELPER_RUNNING = 2;
/** It could not start: the tier's requests fail (ERR_LOCK_BACKEND) instead of relying on it. */
export const HELPER_FAILED = 4;
/** Running, and the table's outer grants never linger (the cluster agent). */
export const HELPER_SERVING = 3;
export const HEADER_WORDS = 16;

export const T_LIVE = 0;
export const T_WAIT_SLOT = 1;
export const T_PARENT = 2;
export const T_OSTID = 3;
export const T_RECOVERER = 4;
export const T_DEAD_MARK = 5;
export const T_HOLDS = 8;
export const HOLDS_MAX = 16;
export const THREAD_WORDS = T_HOLDS + HOLDS_MAX * 2;
export const T_RECOVERING = -1;

export const S_STATE = 0;
export const S_BELL = 1;
export const S_USE = 2;
export const S_NAME_HASH = 3;
export const S_NAME_LEN = 4;
export const S_AUX = 5;
export const F_ACQUIRED = 6;
export const F_CONTENDED = 8;
export const F_WAIT_TOTAL_NS = 10;
export const F_WAIT_MAX_NS = 12;
export const F_HOLD_MAX_NS = 14;
export const SLOT_WORDS = 16;
export const SLOT_BYTES = SLOT_WORDS * 4;

/**
 * S_USE: bits 0–1 say how the slot is reached, bits 4–7 which primitive owns
 * its state word, bit 8 that the primitive is still writing S_AUX. A slot
 * is claimed once (UNUSED → CLAIMING → NAMED, or
 * UNUSED → INDEXED) and never given back: a name keeps its slot for the
 * table's life, so a name resolved once can be cached by any thread forever.
 * The exception is a table of request queues, which gives idle queues'
 * slots back when it runs short, and checks generations (queue/names.ts).
 */
export const USE_UNUSED = 0;
export const USE_CLAIMING = 1;
export const USE_NAMED = 2;
export const USE_INDEXED = 3;
export const USE_REACH_MASK = 0b11;
export const KIND_SHIFT = 4;
export const KIND_MASK = 0xf << KIND_SHIFT;
/** Set with the kind while its first user writes S_AUX; others wait for it to clear. */
export const KIND_INITIALIZING = 1 << 8;
export const KIND_NONE = 0;
export const KIND_MUTEX = 1;
export const KIND_RWLOCK = 2;
export const KIND_SEMAPHORE = 3;
export const KIND_CONDITION = 4;
export const KIND_BARRIER = 5;
export const KIND_ONCE = 6;
export const KIND_QUEUE = 7;
export const KIND_NAMES = ['none', 'mutex', 'rwlock', 'semaphore', 'condition', 'barrier', 'once', 'queue'] as const;
export type KindName = (typeof KIND_NAMES)[number];

/** Thread ids are 12 bits in the mutex state word (mutex-word.ts). */
export const MAX_THREADS = 0xfff;
export const MAX_SLOTS = 1 << 22;
export const NAME_MAX = 128;

export const kDefaultSlots = 4096;
export const kDefaultThreads = 256;

/** Words of one request node (queue/word.ts); a node is one cache line, as a slot is. */
export const NODE_WORDS = 16;
export const MAX_NODES = 1 << 20;

export function byteLengthOf(slots: number, threads: number, nodes = 0): number {
  return nodeRegionOf(slots, threads) * 4 + nodes * NODE_WORDS * 4;
}

/** Word index of the first node: names end on a 128-byte boundary, so this is exact. */
export function nodeRegionOf(slots: number, threads: number): number {
  return HEADER_WORDS + threads * THREAD_WORDS + slots * SLOT_WORDS + (slots * NAME_MAX) / 4;
}

/** A table's identity (H_ID, H_ID2) as a string: the same in every thread. */
export const identityOf = (words: Int32Array): string => `${words[H_ID]}:${words[H_ID2]}`;

/** Whether the table whose memory is `buffer` is valid (born, for a reserved one: memory.ts). */
export const isBorn = (buffer: SharedArrayBuffer): boolean => Atomics.load(new Int32Array(buffer, 0, HEADER_WORDS), H_MAGIC) === MAGIC;

/** Word index of a slot's first word. */
export function slotBase(threads: number, slot: number): number {
  return HEADER_WORDS + threads * THREAD_WORDS + slot * SLOT_WORDS;
}

/** Word index of a registry entry (tid is 1-based). */
export function threadBase(tid: number): number {
  return HEADER_WORDS + (tid - 1) * THREAD_WORDS;
}

/** Byte offset of a slot's name bytes. */
export function nameOffset(slots: number, threads: number, slot: number): number {
  return (HEADER_WORDS + threads * THREAD_WORDS + slots * SLOT_WORDS) * 4 + slot * NAME_MAX;
}
