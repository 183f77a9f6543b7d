/**
 * LockTable: one SharedArrayBuffer holding a header, a thread registry, an
 * array of lock slots and a name index (layout.ts draws it). Any thread that
 * has the buffer can attach and reach every lock in it by index or by name,
 * without messaging.
 */
import { getEnvironmentData } from 'node:worker_threads';
import type { TableCore } from './core.js';
import {
  F_ACQUIRED, F_CONTENDED, F_HOLD_MAX_NS, F_WAIT_MAX_NS, F_WAIT_TOTAL_NS, H_NAMED, H_NODES,
  KIND_BARRIER, KIND_CONDITION, KIND_INITIALIZING, KIND_MASK, KIND_MUTEX, KIND_NAMES, KIND_NONE, KIND_ONCE,
  KIND_RWLOCK, KIND_SEMAPHORE, KIND_SHIFT, MAX_SLOTS, MAX_THREADS, NAME_MAX,
  S_AUX, S_NAME_HASH, S_NAME_LEN, S_USE, type KindName,
  USE_CLAIMING, USE_INDEXED, USE_NAMED, USE_REACH_MASK, USE_UNUSED,
  identityOf, kDefaultSlots, kDefaultThreads, nameOffset, slotBase,
} from './layout.js';
import { Barrier } from './barrier.js';
import { Condition } from './condition.js';
import { Mutex } from './mutex.js';
import { Once } from './once.js';
import { RWLock } from './rwlock.js';
import { MAX_PERMITS, Semaphore } from './semaphore.js';
import { KINDS } from './kinds.js';
import { checkInteger } from './options.js';
import { createBuffer, joinTable, validate } from './memory.js';
import { decodeWtf8, encodeWtf8Into, fnv1a, wtf8Length } from './name-bytes.js';
import {
  ERR_INVALID_ARG_TYPE, ERR_LOCK_NO_DEFAULT_TABLE, ERR_LOCK_SLOT_IN_USE, ERR_LOCK_TABLE_FULL,
  ERR_LOCK_TABLE_INVALID, ERR_OUT_OF_RANGE,
} from '../errors.js';

export interface LockTableOptions {
  /**
   * Number of lock slots. Each name takes one slot for the table's life, and
   * so does each index used; a table with every slot taken refuses new names
   * with ERR_LOCK_TABLE_FULL. Costs 64 bytes + NAME_MAX (128) bytes a slot.
   * @default 4096
   */
  slots?: number;
  /**
   * Number of threads that can use the table at the same time (registry
   * entries; an entry is freed when its thread exits). At most 4095.
   * @default 256
   */
  threads?: number;
}

/**
 * Counters of one slot, as `table.stats()` reports them. Exact for mutexes,
 * rwlock writers and once runs (written by the one holder); approximate for
 * shared holds (rwlock reads, semaphore permits, barrier arrivals, condition
 * wake-ups), which several threads update at once with plain stores: an
 * atomic float64 would cost the read fast path more than the count is worth.
 * For a once, `acquisitions` counts initialiser runs and `contended` calls
 * that waited; for a barrier, `holders` are the members not yet arrived.
 */
export interface LockStats {
  /** The slot's name, or null for a slot used by index. */
  name: string | null;
  slot: number;
  kind: KindName;
  /** Registry ids (`table.threadId` of each) of the threads holding it now: the writer or the readers, the permit holders, the once runner. */
  holders: number[];
  /** The one holder, when there is exactly one; else 0. */
  owner: number;
  acquisitions: number;
  /** Acquisitions that found the lock held (won by spinning or after parking). */
  contended: number;
  /**
   * Total and longest time spent parked waiting, in nanoseconds. A wait won
   * by spinning (under ~2 µs) counts as contended but adds no time: reading
   * the clock costs ~100 ns, more than such a wait.
   */
  waitNs: number;
  waitMaxNs: number;
  /** Longest hold seen, in nanoseconds (sampled: 1 acquisition in 64 is timed). */
  holdMaxNs: number;
}

/** Where every thread finds the process's default table (worker_threads environment data; src/process.ts puts it there). */
export const DEFAULT_TABLE_KEY = 'latchkey:default-table';
/** The default table's shape. */
export const kDefaultGeometry = { slots: kDefaultSlots, threads: kDefaultThreads } as const;
/** Tables this thread has attached, by identity: one registry entry per (thread, table). */
const attached = new Map<string, LockTable>();
let defaultTable: LockTable | undefined;

export class LockTable {
  readonly #core: TableCore;
  /** Names this thread has resolved: a name never changes slot, so this never goes stale. */
  readonly #names = new Map<string, number>();
  readonly #scratch = new Uint8Array(NAME_MAX);

  private constructor(buffer: SharedArrayBuffer, words: Int32Array) {
    if (words[H_NODES] !== 0) {
      throw new ERR_LOCK_TABLE_INVALID('it is a table of request queues (latchkey\'s own), not of locks');
    }
    this.#core = joinTable(buffer, words, this, (slot) => this.#label(slot), KINDS);
  }

  /** A new table in a new SharedArrayBuffer. Pass `table.buffer` to other threads and `attach` it there. */
  static create(options: LockTableOptions = {}): LockTable {
    if (options === null || typeof options !== 'object') throw new ERR_INVALID_ARG_TYPE('options', 'an object', options);
    const { slots = kDefaultSlots, threads = kDefaultThreads } = options;
    checkInteger(slots, 'options.slots', 1, MAX_SLOTS);
    checkInteger(threads, 'options.threads', 1, MAX_THREADS);
    return LockTable.attach(createBuffer({ slots, threads }));
  }

  /**
   * This thread's view of the table in `buffer`. Validates magic, layout
   * version and size first (ERR_LOCK_TABLE_INVALID). Attaching the same
   * table twice in a thread returns the same object.
   */
  static attach(buffer: SharedArrayBuffer): LockTable {
    const words = validate(buffer);
    const id = identityOf(words);
    let table = attached.get(id);
    if (table === undefined) attached.set(id, (table = new LockTable(buffer, words)));
    return table;
  }

  /**
   * The process-wide table: the same one in every thread, with no setup.
   * Reserved when latchkey is first imported in the main thread, handed to
   * every worker started after that (worker_threads environment data), and
   * made (about 0.8 MB) when a thread first asks for it (src/process.ts).
   */
  static default(): LockTable {
    if (defaultTable !== undefined) return defaultTable;
    const buffer = getEnvironmentData(DEFAULT_TABLE_KEY);
    if (!(buffer instanceof SharedArrayBuffer)) throw new ERR_LOCK_NO_DEFAULT_TABLE();
    return (defaultTable = LockTable.attach(buffer));
  }

  /** The shared memory: send it to another thread and `LockTable.attach` it there. */
  get buffer(): SharedArrayBuffer {
    return this.#core.buffer;
  }

  get slots(): number {
    return this.#core.slots;
  }

  /** This thread's id in the table's registry (what `stats().owner` reports). */
  get threadId(): number {
    return this.#core.tid;
  }

  /**
   * The mutex named `name` (a string of at most 128 UTF-8 bytes; '' is a
   * valid name) or living in slot `index`. Distinct names never share a slot.
   */
  mutex(nameOrIndex: string | number): Mutex {
    const slot = this.#resolve(nameOrIndex, true);
    return new Mutex(this.#core, slot, this.#claimKind(slot, KIND_MUTEX, 'a mutex'), nameOrIndex);
  }

  /** The reader-writer lock named `name` (or in slot `index`). */
  rwlock(nameOrIndex: string | number): RWLock {
    const slot = this.#resolve(nameOrIndex, true);
    return new RWLock(this.#core, slot, this.#claimKind(slot, KIND_RWLOCK, 'a rwlock'), nameOrIndex);
  }

  /**
   * The counting semaphore named `name` with `permits` permits (1 to 2^30).
   * Every thread must name the same count: the first fixes it.
   */
  semaphore(nameOrIndex: string | number, permits: number): Semaphore {
    checkInteger(permits, 'permits', 1, MAX_PERMITS);
    const slot = this.#resolve(nameOrIndex, true);
    return new Semaphore(this.#core, slot, this.#claimKind(slot, KIND_SEMAPHORE, 'a semaphore', permits), nameOrIndex);
  }

  /** The condition variable named `name`, used with any Mutex of this table. */
  condition(nameOrIndex: string | number): Condition {
    const slot = this.#resolve(nameOrIndex, true);
    return new Condition(this.#core, slot, this.#claimKind(slot, KIND_CONDITION, 'a condition'), nameOrIndex);
  }

  /** The reusable barrier named `name` for `parties` threads (1 to 4095). */
  barrier(nameOrIndex: string | number, parties: number): Barrier {
    checkInteger(parties, 'parties', 1, MAX_THREADS);
    const slot = this.#resolve(nameOrIndex, true);
    return new Barrier(this.#core, slot, this.#claimKind(slot, KIND_BARRIER, 'a barrier', parties), nameOrIndex);
  }

  /** The run-once cell named `name`: its initialiser runs once across all threads. */
  once(nameOrIndex: string | number): Once {
    const slot = this.#resolve(nameOrIndex, true);
    return new Once(this.#core, slot, this.#claimKind(slot, KIND_ONCE, 'a once'), nameOrIndex);
  }

  /** Counters of one lock (undefined if that name was never used), or of every slot in use. */
  stats(nameOrIndex: string | number): LockStats | undefined;
  stats(): LockStats[];
  stats(nameOrIndex?: string | number): LockStats | LockStats[] | undefined {
    if (nameOrIndex === undefined) {
      const all: LockStats[] = [];
      for (let slot = 0; slot < this.#core.slots; slot++) {
        if (this.#reach(slot) !== USE_UNUSED) all.push(this.#statsOf(slot));
      }
      return all;
    }
    const slot = this.#resolve(nameOrIndex, false);
    return slot < 0 || this.#reach(slot) === USE_UNUSED ? undefined : this.#statsOf(slot);
  }

  /** @internal For tests: the raw views and this thread's core. */
  static unsafeExposeInternals(table: LockTable): { core: TableCore; slotBase: (slot: number) => number } {
    return { core: table.#core, slotBase: (slot) => slotBase(table.#core.threads, slot) };
  }

  #reach(slot: number): number {
    return Atomics.load(this.#core.words, slotBase(this.#core.threads, slot) + S_USE) & USE_REACH_MASK;
  }

  #resolve(nameOrIndex: string | number, create: boolean): number {
    if (typeof nameOrIndex === 'string') return this.#slotOf(nameOrIndex, create);
    if (typeof nameOrIndex !== 'number') {
      throw new ERR_INVALID_ARG_TYPE('nameOrIndex', 'a string or a slot index', nameOrIndex);
    }
    checkInteger(nameOrIndex, 'index', 0, this.#core.slots - 1);
    if (create) this.#claimIndex(nameOrIndex);
    return nameOrIndex;
  }

  /**
   * Find (or claim) the slot of `name`: open addressing from the name's
   * hash. A slot is claimed by CAS UNUSED → CLAIMING, filled, then published
   * as NAMED; a reader that meets CLAIMING waits for the publish, so two
   * threads adding one name at once end in the same slot.
   */
  #slotOf(name: string, create: boolean): number {
    const cached = this.#names.get(name);
    if (cached !== undefined) return cached;
    const { words, bytes, slots, threads } = this.#core;
    const length = wtf8Length(name);
    if (length > NAME_MAX) throw new ERR_OUT_OF_RANGE('name', `at most ${NAME_MAX} UTF-8 bytes`, `${length} bytes`);
    const scratch = this.#scratch;
    encodeWtf8Into(name, scratch);
    const hash = fnv1a(scratch, length) | 0;
    let slot = (hash >>> 0) % slots;
    for (let probes = 0; probes < slots;) {
      const base = slotBase(threads, slot);
      const use = Atomics.load(words, base + S_USE);
      const reach = use & USE_REACH_MASK;
      if (reach === USE_UNUSED) {
        if (!create) return -1;
        if (Atomics.compareExchange(words, base + S_USE, use, use | USE_CLAIMING) !== use) continue;
        words[base + S_NAME_HASH] = hash;
        words[base + S_NAME_LEN] = length;
        bytes.set(scratch.subarray(0, length), nameOffset(slots, threads, slot));
        Atomics.store(words, base + S_USE, use | USE_NAMED); // publishes the bytes written above
        Atomics.notify(words, base + S_USE);
        Atomics.add(words, H_NAMED, 1);
        this.#names.set(name, slot);
        return slot;
      }
      if (reach === USE_CLAIMING) {
        Atomics.wait(words, base + S_USE, use, 1); // a claim is a few stores long
        continue;
      }
      if (reach === USE_NAMED && words[base + S_NAME_HASH] === hash && words[base + S_NAME_LEN] === length
        && this.#nameMatches(slot, length)) {
        this.#names.set(name, slot);
        return slot;
      }
      slot = (slot + 1) % slots;
      probes++;
    }
    if (!create) return -1;
    throw new ERR_LOCK_TABLE_FULL(`the name ${JSON.stringify(name)}`, slots);
  }

  #nameMatches(slot: number, length: number): boolean {
    const { bytes, slots, threads } = this.#core;
    const offset = nameOffset(slots, threads, slot), scratch = this.#scratch;
    for (let i = 0; i < length; i++) if (bytes[offset + i] !== scratch[i]) return false;
    return true;
  }

  #claimIndex(slot: number): void {
    const words = this.#core.words, at = slotBase(this.#core.threads, slot) + S_USE;
    for (;;) {
      const use = Atomics.load(words, at), reach = use & USE_REACH_MASK;
      if (reach === USE_INDEXED) return;
      if (reach === USE_NAMED) {
        throw new ERR_LOCK_SLOT_IN_USE(`slot #${slot}`, 'an indexed lock', `it holds the name ${this.#label(slot)}`);
      }
      if (reach === USE_CLAIMING) Atomics.wait(words, at, use, 1);
      else Atomics.compareExchange(words, at, use, use | USE_INDEXED);
    }
  }

  /**
   * Give the slot its primitive, once. `aux` (semaphore permits, barrier
   * parties) is written by the first user while KIND_INITIALIZING is set;
   * later users wait for it and must agree with it.
   */
  #claimKind(slot: number, kind: number, as: string, aux?: number): number {
    const words = this.#core.words, base = slotBase(this.#core.threads, slot), at = base + S_USE;
    for (;;) {
      const use = Atomics.load(words, at), held = (use & KIND_MASK) >>> KIND_SHIFT;
      if ((use & KIND_INITIALIZING) !== 0) {
        Atomics.wait(words, at, use, 1); // a few stores long
        continue;
      }
      if (held === kind) {
        if (aux !== undefined && words[base + S_AUX] !== aux) {
          throw new ERR_LOCK_SLOT_IN_USE(this.#label(slot), as, `it was created with ${words[base + S_AUX]}, not ${aux}`);
        }
        return base;
      }
      if (held !== KIND_NONE) {
        throw new ERR_LOCK_SLOT_IN_USE(this.#label(slot), as, `it holds a ${KIND_NAMES[held] ?? 'primitive'}`);
      }
      const claimed = use | (kind << KIND_SHIFT);
      if (aux === undefined) {
        if (Atomics.compareExchange(words, at, use, claimed) === use) return base;
        continue;
      }
      if (Atomics.compareExchange(words, at, use, claimed | KIND_INITIALIZING) !== use) continue;
      Atomics.store(words, base + S_AUX, aux);
      Atomics.store(words, at, claimed); // publishes S_AUX
      Atomics.notify(words, at);
      return base;
    }
  }

  #nameOf(slot: number): string | null {
    const { words, bytes, slots, threads } = this.#core;
    const base = slotBase(threads, slot);
    if ((Atomics.load(words, base + S_USE) & USE_REACH_MASK) !== USE_NAMED) return null;
    const offset = nameOffset(slots, threads, slot);
    return decodeWtf8(bytes.slice(offset, offset + words[base + S_NAME_LEN]!));
  }

  #label(slot: number): string {
    const name = this.#nameOf(slot);
    return name === null ? `#${slot}` : JSON.stringify(name);
  }

  #statsOf(slot: number): LockStats {
    const { words, f64, threads } = this.#core;
    const base = slotBase(threads, slot);
    const kind = (Atomics.load(words, base + S_USE) & KIND_MASK) >>> KIND_SHIFT;
    const f = (word: number) => f64[(base + word) >> 1];
    const holders = this.#core.kinds[kind]?.holders?.(this.#core, base, slot) ?? [];
    return {
      name: this.#nameOf(slot),
      slot,
      kind: KIND_NAMES[kind] ?? 'none',
      holders,
      owner: holders.length === 1 ? holders[0] : 0,
      acquisitions: f(F_ACQUIRED),
      contended: f(F_CONTENDED),
      waitNs: f(F_WAIT_TOTAL_NS),
      waitMaxNs: f(F_WAIT_MAX_NS),
      holdMaxNs: f(F_HOLD_MAX_NS),
    };
  }
}
