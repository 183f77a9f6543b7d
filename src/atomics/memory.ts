/**
 * A table's memory: making it, reserving it unborn, checking it, and one
 * thread's views of it (TableCore). Both kinds of table, LockTable (the
 * primitives, table.ts) and QueueTable (request queues, queue/table.ts),
 * are laid out as layout.ts draws and joined here.
 *
 * Unborn tables: the process-wide tables (src/process.ts) must reach every
 * worker started after latchkey is imported, through worker_threads
 * environment data, which is copied when a worker starts. So the main
 * thread puts them there at import; but most programs use one or two of
 * them, and a table is up to a megabyte. A process-wide table is therefore
 * reserved, not made: a growable SharedArrayBuffer of just the header
 * (64 bytes) whose maximum is the table's size, with H_MAGIC = RESERVED.
 * Whichever thread first needs it bears it (validate()): grows the buffer
 * to its full size, which every thread sharing it sees at once, then swaps
 * RESERVED for MAGIC. Birth is idempotent and needs no lock: two threads
 * that bear one table at once both grow it to the same size (the second
 * grow finds it grown) and one of them swaps the magic.
 */
import {
  H_BYTES, H_FLAGS, H_ID, H_ID2, H_MAGIC, H_NAME_MAX, H_NODES, H_SLOTS, H_THREADS, H_VERSION, HEADER_WORDS,
  LAYOUT_VERSION, MAGIC, MAX_NODES, MAX_SLOTS, MAX_THREADS, NAME_MAX, TABLE_GATED, byteLengthOf, identityOf,
} from './layout.js';
import type { KindOps, TableCore, TableRecovery } from './core.js';
import { claimThread, watchTable } from './threads.js';
import { ERR_INVALID_ARG_TYPE, ERR_LOCK_TABLE_INVALID } from '../errors.js';

/** H_MAGIC of a table reserved and not born yet ('LKRS'). */
export const RESERVED = 0x4c4b5253;

/** A table's shape: its slots, registry entries, request nodes (0: no queues), and whether its queues are gated. */
export interface Geometry {
  readonly slots: number;
  readonly threads: number;
  /** Request nodes beyond the 2 anchors per slot; 0 for a table of primitives. */
  readonly requests?: number;
  /** Every queue of the table grants only under an outer lock (the host and cluster tiers). */
  readonly gated?: boolean;
}

function writeHeader(words: Int32Array, g: Geometry, bytes: number): void {
  const nodes = (g.requests ?? 0) > 0 ? 2 * g.slots + g.requests! : 0;
  words[H_VERSION] = LAYOUT_VERSION;
  words[H_SLOTS] = g.slots;
  words[H_THREADS] = g.threads;
  words[H_NAME_MAX] = NAME_MAX;
  words[H_NODES] = nodes;
  words[H_FLAGS] = g.gated === true ? TABLE_GATED : 0;
  words[H_BYTES] = bytes;
  words[H_ID] = (Math.random() * 0x7fffffff) | 0;
  words[H_ID2] = (Math.random() * 0x7fffffff) | 0;
}

const totalBytes = (g: Geometry) => byteLengthOf(g.slots, g.threads, (g.requests ?? 0) > 0 ? 2 * g.slots + g.requests! : 0);

/** A new table, born at once. @internal Public tables come from LockTable.create(). */
export function createBuffer(g: Geometry): SharedArrayBuffer {
  const bytes = totalBytes(g), buffer = new SharedArrayBuffer(bytes);
  const words = new Int32Array(buffer, 0, HEADER_WORDS);
  writeHeader(words, g, bytes);
  Atomics.store(words, H_MAGIC, MAGIC); // last: a table is valid once its magic is there
  return buffer;
}

/** A table reserved unborn: 64 bytes now, its full size when a thread first attaches it. */
export function reserveBuffer(g: Geometry): SharedArrayBuffer {
  const bytes = totalBytes(g), buffer = new SharedArrayBuffer(HEADER_WORDS * 4, { maxByteLength: bytes });
  const words = new Int32Array(buffer, 0, HEADER_WORDS);
  writeHeader(words, g, bytes);
  Atomics.store(words, H_MAGIC, RESERVED);
  return buffer;
}


const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

/**
 * Check that `buffer` holds a table of this layout (bearing it first if it
 * is a reserved one); its words, a view of exactly the table.
 * Throws ERR_LOCK_TABLE_INVALID (ERR_INVALID_ARG_TYPE for a non-buffer).
 */
export function validate(buffer: unknown): Int32Array {
  if (!(buffer instanceof SharedArrayBuffer)) {
    throw new ERR_INVALID_ARG_TYPE('buffer', 'a SharedArrayBuffer', buffer);
  }
  if (buffer.byteLength < HEADER_WORDS * 4) {
    throw new ERR_LOCK_TABLE_INVALID(`buffer is ${buffer.byteLength} bytes, too small for a header`);
  }
  const header = new Int32Array(buffer, 0, HEADER_WORDS);
  const magic = Atomics.load(header, H_MAGIC);
  if (magic !== MAGIC && magic !== RESERVED) {
    throw new ERR_LOCK_TABLE_INVALID(`magic is ${hex(magic)} (expected ${hex(MAGIC)})`);
  }
  if (header[H_VERSION] !== LAYOUT_VERSION) {
    throw new ERR_LOCK_TABLE_INVALID(`layout version is ${header[H_VERSION]} (expected ${LAYOUT_VERSION})`);
  }
  const slots = header[H_SLOTS]!, threads = header[H_THREADS]!, nodes = header[H_NODES]!;
  if (!(slots >= 1 && slots <= MAX_SLOTS) || !(threads >= 1 && threads <= MAX_THREADS) || header[H_NAME_MAX] !== NAME_MAX
    || !(nodes === 0 || (nodes > 2 * slots && nodes <= 2 * slots + MAX_NODES))) {
    throw new ERR_LOCK_TABLE_INVALID(`header is corrupt (slots ${slots}, threads ${threads}, name bytes ${header[H_NAME_MAX]}, nodes ${nodes})`);
  }
  const expected = byteLengthOf(slots, threads, nodes);
  if (magic === RESERVED) bear(buffer, header, expected);
  if (header[H_BYTES] !== expected || buffer.byteLength !== expected) {
    throw new ERR_LOCK_TABLE_INVALID(`buffer is ${buffer.byteLength} bytes (expected ${expected} for ${slots} slots)`);
  }
  return new Int32Array(buffer, 0, expected / 4);
}

/** Grow a reserved table to its full size and make it valid (idempotent, lock-free: see the top of this file). */
function bear(buffer: SharedArrayBuffer, header: Int32Array, bytes: number): void {
  if (!buffer.growable || buffer.maxByteLength !== bytes || header[H_BYTES] !== bytes) {
    throw new ERR_LOCK_TABLE_INVALID(`a reserved table must be a growable buffer of at most ${bytes} bytes`);
  }
  if (buffer.byteLength < bytes) {
    try {
      buffer.grow(bytes);
    } catch {
      // Grown by another thread meanwhile: the length check after this says.
    }
  }
  // The memory is there (and zero) before the magic says so.
  Atomics.compareExchange(header, H_MAGIC, RESERVED, MAGIC);
}

/**
 * This thread joins the table in `buffer` (its words from validate()):
 * claims a registry entry, makes the views, and watches the table for dead
 * threads. `kinds`: what recovery and deadlock detection need of each kind
 * the table holds (kinds.ts; a queue table's own list); `recover`: a
 * table-wide recovery of its own (queue tables).
 */
export function joinTable(
  buffer: SharedArrayBuffer, words: Int32Array, table: object, label: (slot: number) => string,
  kinds: ReadonlyArray<KindOps | undefined>, recover?: TableRecovery,
): TableCore {
  const slots = words[H_SLOTS]!, threads = words[H_THREADS]!, id = identityOf(words);
  const core: TableCore = {
    buffer,
    words,
    f64: new Float64Array(buffer, 0, words.length / 2),
    bytes: new Uint8Array(buffer, 0, words.length * 4),
    slots,
    threads,
    nodes: words[H_NODES]!,
    id,
    table,
    tid: claimThread(words, threads),
    acquiring: new Uint8Array(slots),
    views: [],
    kinds,
    label,
    recover,
  };
  watchTable(id, core);
  return core;
}
