/**
 * QueueTable: a table of request queues, the front door's engine (one per
 * scope and process: src/process.ts). Laid out as every table is
 * (layout.ts), plus a node pool; unlike a LockTable's names, a queue
 * table's names come and go (names.ts: an idle name's slot is given back
 * when the table runs short), so a handle checks its slot's generation.
 *
 * Whoever makes a queue table wires it (QueueWiring): the outer lock of a
 * gated table's queues (the host or cluster tier) and where steal notices
 * go. Nothing is registered by an import.
 */
import type { KindOps, TableCore } from '../core.js';
import {
  F_ACQUIRED, F_CONTENDED, F_HOLD_MAX_NS, F_WAIT_MAX_NS, F_WAIT_TOTAL_NS,
  H_FLAGS, H_HELPER, H_HELPER_BELL, H_NAMED, H_NODES, HEADER_WORDS, KIND_MASK, KIND_QUEUE, KIND_SHIFT, NAME_MAX, S_USE, TABLE_GATED, USE_NAMED, USE_REACH_MASK, identityOf, isBorn, slotBase,
} from '../layout.js';
import { joinTable, validate } from '../memory.js';
import { encodeWtf8Into, fnv1a, wtf8Length } from '../name-bytes.js';
import { type QueueWiring, RequestQueue, queueHolders } from './queue.js';
import type { LockStats } from '../table.js';
import { nameOfSlot, queueSlotOf, stillNamed } from './names.js';
import { queueRecovery } from './recovery.js';
import { ERR_INVALID_ARG_TYPE, ERR_LOCK_TABLE_INVALID, ERR_OUT_OF_RANGE } from '../../errors.js';

export { HELPER_FAILED, HELPER_NONE, HELPER_RUNNING, HELPER_SERVING, HELPER_STARTING } from '../layout.js';

/** A gated table's helper thread, as the bridge sees it (layout H_HELPER, H_HELPER_BELL). */
export interface HelperState {
  /** HELPER_NONE, _STARTING, _RUNNING, _SERVING or _FAILED. */
  readonly state: number;
  set(state: number): void;
  /** Move the state from `from` to `to`; false if it was not `from`. */
  claim(from: number, to: number): boolean;
  /** The doorbell: read it before looking, ring it after a change the helper must see. */
  readonly bell: number;
  ring(): void;
  /** Sleep (in the helper thread) while the bell reads `bell`, up to `ms`. */
  sleep(bell: number, ms: number): Promise<unknown>;
}

/** The helper state of the queue table in `buffer`: the header is enough, so the table need not be joined (nor born). */
export function helperState(buffer: SharedArrayBuffer): HelperState {
  const w = new Int32Array(buffer, 0, HEADER_WORDS);
  return {
    get state() {
      return Atomics.load(w, H_HELPER);
    },
    set: (state) => {
      Atomics.store(w, H_HELPER, state);
    },
    claim: (from, to) => Atomics.compareExchange(w, H_HELPER, from, to) === from,
    get bell() {
      return Atomics.load(w, H_HELPER_BELL);
    },
    ring: () => {
      Atomics.add(w, H_HELPER_BELL, 1);
      Atomics.notify(w, H_HELPER_BELL);
    },
    sleep: async (bell, ms) => {
      // Whole milliseconds: Node 20's waitAsync returns at once for less, and the helper would spin.
      const r = Atomics.waitAsync(w, H_HELPER_BELL, bell, Math.max(1, Math.ceil(ms)));
      return r.value;
    },
  };
}

/** What recovery and deadlock detection need of a queue table's slots: every one is KIND_QUEUE. */
export const QUEUE_KINDS: ReadonlyArray<KindOps | undefined> = Object.freeze(
  Array.from({ length: KIND_QUEUE + 1 }, (_, kind) => (kind === KIND_QUEUE ? { holders: queueHolders } : undefined)));

/** Tables this thread has attached, by identity. */
const attached = new Map<string, QueueTable>();

export class QueueTable {
  readonly #core: TableCore;
  readonly #wiring: QueueWiring;
  readonly #gated: boolean;
  /** Names this thread has resolved, and their slot's generation then (names.ts). */
  readonly #names = new Map<string, { slot: number; gen: number }>();
  readonly #scratch = new Uint8Array(NAME_MAX);
  readonly #queues: Array<RequestQueue | undefined> = [];
  #helper: HelperState | undefined;

  private constructor(buffer: SharedArrayBuffer, words: Int32Array, wiring: QueueWiring) {
    this.#gated = (words[H_FLAGS]! & TABLE_GATED) !== 0;
    if (words[H_NODES] === 0) throw new ERR_LOCK_TABLE_INVALID('it is a table of locks, not of request queues');
    if (this.#gated !== (wiring.outer !== undefined)) {
      throw new ERR_LOCK_TABLE_INVALID(this.#gated ? 'its queues are gated and no outer lock was given' : 'an outer lock was given for ungated queues');
    }
    this.#wiring = wiring;
    this.#core = joinTable(buffer, words, this, (slot) => this.#label(slot), QUEUE_KINDS, queueRecovery(wiring.outer && (() => wiring.outer!)));
  }

  /**
   * This thread's view of the queue table in `buffer` (bearing a reserved
   * one), wired as `wiring` says. The first attach in a thread wires it; a
   * table is attached once per thread.
   */
  static attach(buffer: SharedArrayBuffer, wiring: QueueWiring): QueueTable {
    const words = validate(buffer), id = identityOf(words);
    let table = attached.get(id);
    if (table === undefined) attached.set(id, (table = new QueueTable(buffer, words, wiring)));
    return table;
  }

  /** How many names the queue table in `buffer` holds now (0 for one never born): whether anybody used it. */
  static namesIn(buffer: SharedArrayBuffer): number {
    return isBorn(buffer) ? Atomics.load(new Int32Array(buffer, 0, HEADER_WORDS), H_NAMED) : 0;
  }

  get gated(): boolean {
    return this.#gated;
  }

  /** The table's helper thread (layout H_HELPER): its state and its doorbell. */
  get helper(): HelperState {
    return (this.#helper ??= helperState(this.#core.buffer));
  }

  /** The request queue named `name` (Web Locks semantics; locks.ts drives it). */
  queue(name: string): RequestQueue {
    if (typeof name !== 'string') throw new ERR_INVALID_ARG_TYPE('name', 'a string', name);
    const { slot, gen } = this.#slotOf(name);
    let q = this.#queues[slot];
    if (q === undefined || q.gen !== gen || q.name !== name) {
      q = this.#queues[slot] = new RequestQueue(this.#core, slot, name, this.#gated, gen, this.#wiring);
    }
    return q;
  }

  /** A queue handle found stale (StaleQueue): look `name` up again next time. */
  forget(name: string): void {
    const found = this.#names.get(name);
    this.#names.delete(name);
    if (found !== undefined) this.#queues[found.slot] = undefined;
  }

  /** Every named queue of this table, one handle per slot for this thread. */
  *queues(): Generator<RequestQueue> {
    const { words, threads, slots } = this.#core;
    for (let slot = 0; slot < slots; slot++) {
      let q = this.#queues[slot];
      if (q !== undefined && !stillNamed(this.#core, slot, q.gen)) q = this.#queues[slot] = undefined; // given back
      if (q === undefined) {
        const use = Atomics.load(words, slotBase(threads, slot) + S_USE);
        if ((use & USE_REACH_MASK) !== USE_NAMED || ((use & KIND_MASK) >>> KIND_SHIFT) !== KIND_QUEUE) continue;
        const name = nameOfSlot(this.#core, slot);
        if (name === null) continue;
        q = this.queue(name);
      }
      yield q;
    }
  }

  /**
   * Counters of the queue `name` (undefined when no request holds or waits
   * for it, or ever did since its slot was taken), or of every named queue:
   * as LockTable.stats() gives them (kind 'queue').
   */
  stats(name: string): LockStats | undefined;
  stats(): LockStats[];
  stats(name?: string): LockStats | LockStats[] | undefined {
    if (name !== undefined) {
      const found = this.#names.get(name) ?? this.#find(name);
      return found === undefined || !stillNamed(this.#core, found.slot, found.gen) ? undefined : this.#statsOf(found.slot, name);
    }
    const all: LockStats[] = [];
    for (const q of this.queues()) all.push(this.#statsOf(q.slot, q.name));
    return all;
  }

  #find(name: string): { slot: number; gen: number } | undefined {
    const length = wtf8Length(name);
    if (length > NAME_MAX) return undefined;
    encodeWtf8Into(name, this.#scratch);
    const found = queueSlotOf(this.#core, this.#scratch, length, fnv1a(this.#scratch, length) | 0, false);
    return found === null ? undefined : { slot: found[0], gen: found[1] };
  }

  #statsOf(slot: number, name: string): LockStats {
    const { f64, threads } = this.#core, base = slotBase(threads, slot), f = (word: number) => f64[(base + word) >> 1]!;
    const holders = queueHolders(this.#core, base, slot);
    return {
      name, slot, kind: 'queue', holders, owner: holders.length === 1 ? holders[0]! : 0,
      acquisitions: f(F_ACQUIRED), contended: f(F_CONTENDED), waitNs: f(F_WAIT_TOTAL_NS), waitMaxNs: f(F_WAIT_MAX_NS), holdMaxNs: f(F_HOLD_MAX_NS),
    };
  }

  /** @internal For tests: the raw views and this thread's core. */
  static unsafeExposeInternals(table: QueueTable): { core: TableCore } {
    return { core: table.#core };
  }

  #label(slot: number): string {
    const name = nameOfSlot(this.#core, slot);
    return name === null ? `#${slot}` : JSON.stringify(name);
  }

  /** The slot and generation of `name`, added if new. */
  #slotOf(name: string): { slot: number; gen: number } {
    const cached = this.#names.get(name);
    if (cached !== undefined) {
      if (stillNamed(this.#core, cached.slot, cached.gen)) return cached;
      this.forget(name);
    }
    const length = wtf8Length(name);
    if (length > NAME_MAX) throw new ERR_OUT_OF_RANGE('name', `at most ${NAME_MAX} UTF-8 bytes`, `${length} bytes`);
    const scratch = this.#scratch;
    encodeWtf8Into(name, scratch);
    const [slot, gen] = queueSlotOf(this.#core, scratch, length, fnv1a(scratch, length) | 0, true)!;
    // Names come and go: remember a bounded number of them.
    if (this.#names.size >= 2 * this.#core.slots) this.#names.clear();
    const found = { slot, gen };
    this.#names.set(name, found);
    return found;
  }
}

