/**
 * Names that come and go: a table of request queues (the front door's)
 * gives an idle queue's slot back when it runs short of slots, so that a
 * process may use any number of distinct names over its life (Web Locks
 * keeps state only for names held or requested). Other tables keep a
 * name's slot forever (table.ts).
 *
 * A slot given back is a tombstone: still NAMED (lookups probe past it),
 * S_NAME_LEN = TOMBSTONE (no name matches it), its kind kept. S_AUX is the
 * slot's generation, bumped when it is given back and again when it is
 * reused; a handle (RequestQueue) remembers the generation it was made
 * for and checks it, under the queue's latch, before it enqueues: a stale
 * handle is told (StaleQueue) and the front door resolves the name again.
 *
 * Inserts and give-backs of a queue table hold the table's name latch
 * (H_NAME_LATCH), so two threads adding one name cannot both reuse a
 * tombstone; lookups take no latch. A lookup reads a slot's name like a
 * seqlock: generation, name, generation again (a reuse bumps the
 * generation before it writes the name, and publishes the length last).
 *
 * Tokens: a thread-scope queue's tokens are counted in its anchor. A name
 * given back and added again later lands in another slot, so the table
 * keeps the highest token of every slot given back (H_TOKEN_HWM) and a
 * reused or fresh slot starts above it: tokens still increase per name.
 */
import type { TableCore, WatchedTable } from '../core.js';
import {
  F_ACQUIRED, H_NAMED, H_NAME_LATCH, H_TOKEN_HWM, KIND_MASK, KIND_QUEUE, KIND_SHIFT, NAME_MAX, S_AUX, S_NAME_HASH,
  S_NAME_LEN, S_STATE, S_USE, SLOT_WORDS, USE_CLAIMING, USE_NAMED, USE_REACH_MASK, USE_UNUSED, nameOffset, nodeRegionOf, slotBase,
} from '../layout.js';
import {
  A_HEAD, A_HELD, A_OUTER, A_OUTER_IDLE, A_OUTER_REP, A_OUTER_REQ, A_OUTER_WAITERS, A_TOKEN, LATCH_OWNER, LATCH_STALE_MS,
  OUTER_NONE, anchorOf, latch, poolOf, unlatch,
} from './word.js';
import { finishDeferred, recoverIfGone, recoveriesDeferred } from '../threads.js';
import { decodeWtf8 } from '../name-bytes.js';
import { ERR_LOCK_TABLE_FULL } from '../../errors.js';

export const TOMBSTONE = -1;
/** Give idle slots back once this share of the table holds names. */
const SWEEP_AT = 0.75;

/** A handle whose slot was given back (and maybe reused): resolve the name again. */
export class StaleQueue extends Error {}

function matches(core: TableCore, slot: number, scratch: Uint8Array, length: number, hash: number): boolean {
  const { words, bytes, slots, threads } = core, base = slotBase(threads, slot);
  if (words[base + S_NAME_HASH] !== hash || Atomics.load(words, base + S_NAME_LEN) !== length) return false;
  const offset = nameOffset(slots, threads, slot);
  for (let i = 0; i < length; i++) if (bytes[offset + i] !== scratch[i]) return false;
  return true;
}

/** The generation of `slot` if it holds the name, read as a seqlock; -1 if it does not. */
function generationIf(core: TableCore, slot: number, scratch: Uint8Array, length: number, hash: number): number {
  const at = slotBase(core.threads, slot) + S_AUX;
  const g = Atomics.load(core.words, at);
  return matches(core, slot, scratch, length, hash) && Atomics.load(core.words, at) === g ? g : -1;
}

/** Find the name's slot without a latch: [slot, generation], or null. */
function find(core: TableCore, scratch: Uint8Array, length: number, hash: number): [number, number] | null {
  const { words, slots, threads } = core;
  let slot = (hash >>> 0) % slots;
  for (let probes = 0; probes < slots;) {
    const base = slotBase(threads, slot), use = Atomics.load(words, base + S_USE), reach = use & USE_REACH_MASK;
    if (reach === USE_UNUSED) return null;
    if (reach === USE_CLAIMING) {
      waitForClaim(core, base + S_USE, use);
      continue;
    }
    if (reach === USE_NAMED) {
      const g = generationIf(core, slot, scratch, length, hash);
      if (g >= 0) return [slot, g];
    }
    slot = (slot + 1) % slots;
    probes++;
  }
  return null;
}

/**
 * Wait for the claim at `at` (a fresh slot being named) to end. A claim is
 * a few stores long, made by the name latch's holder; one that stays is
 * checked for its claimer's death, which this thread may be the one to
 * deliver (threads.ts recoverIfGone): the recovery undoes the claim.
 */
function waitForClaim(core: TableCore, at: number, use: number): void {
  const since = performance.now();
  while (Atomics.load(core.words, at) === use) {
    Atomics.wait(core.words, at, use, 1);
    if (recoveriesDeferred()) finishDeferred();
    const claimer = Atomics.load(core.words, H_NAME_LATCH) & LATCH_OWNER;
    if (claimer !== 0 && performance.now() - since >= LATCH_STALE_MS) recoverIfGone(core, claimer);
  }
}

/**
 * The slot and generation of `name` (its UTF-8 bytes in `scratch`) in a
 * queue table, adding it if `create`: [slot, generation], or null.
 */
export function queueSlotOf(core: TableCore, scratch: Uint8Array, length: number, hash: number, create: boolean): [number, number] | null {
  const found = find(core, scratch, length, hash);
  if (found !== null || !create) return found;
  const w = core.words;
  latch(w, H_NAME_LATCH, core.tid, core);
  try {
    if (Atomics.load(w, H_NAMED) >= core.slots * SWEEP_AT) sweep(core);
    for (let round = 0; round < 2; round++) {
      const r = insert(core, scratch, length, hash);
      if (r !== null) return r;
      if (round === 0 && sweep(core) === 0) break;
    }
  } finally {
    unlatch(w, H_NAME_LATCH, core.tid);
  }
  throw new ERR_LOCK_TABLE_FULL('a lock name (every name of this scope is in use)', core.slots);
}

/** Under the name latch: find, or take the first tombstone or free slot on the name's probe path. */
function insert(core: TableCore, scratch: Uint8Array, length: number, hash: number): [number, number] | null {
  const { words, bytes, slots, threads } = core;
  let slot = (hash >>> 0) % slots, tomb = -1;
  for (let probes = 0; probes < slots;) {
    const base = slotBase(threads, slot), use = Atomics.load(words, base + S_USE), reach = use & USE_REACH_MASK;
    if (reach === USE_CLAIMING) {
      waitForClaim(core, base + S_USE, use); // none under the latch but a dead latch holder's, which recovery undoes
      continue;
    }
    if (reach === USE_UNUSED) break;
    if (reach === USE_NAMED) {
      const g = generationIf(core, slot, scratch, length, hash);
      if (g >= 0) return [slot, g];
      if (tomb < 0 && Atomics.load(words, base + S_NAME_LEN) === TOMBSTONE) tomb = slot;
    }
    slot = (slot + 1) % slots;
    probes++;
  }
  const target = tomb >= 0 ? tomb : slot;
  const base = slotBase(threads, target), use = Atomics.load(words, base + S_USE);
  if (tomb < 0) {
    if ((use & USE_REACH_MASK) !== USE_UNUSED) return null; // every slot probed: full
    // Nobody else inserts into a queue table without the name latch; a claim by index cannot come here.
    Atomics.store(words, base + S_USE, use | USE_CLAIMING);
  } else {
    Atomics.add(words, base + S_AUX, 1); // a new generation before the new name
  }
  startAboveGivenBack(core, target);
  words[base + S_NAME_HASH] = hash;
  bytes.set(scratch.subarray(0, length), nameOffset(slots, threads, target));
  Atomics.store(words, base + S_NAME_LEN, length); // publishes the bytes (a reuse)
  if (tomb < 0) {
    Atomics.store(words, base + S_USE, use | USE_NAMED | (KIND_QUEUE << KIND_SHIFT)); // publishes them (a fresh slot), a queue's
    Atomics.notify(words, base + S_USE);
  }
  Atomics.add(words, H_NAMED, 1);
  return [target, Atomics.load(words, base + S_AUX)];
}

/** A (re)used slot's thread-scope tokens start above every slot given back, and its counters at 0. */
function startAboveGivenBack(core: TableCore, slot: number): void {
  const f = core.f64, base = slotBase(core.threads, slot);
  for (let i = F_ACQUIRED; i < SLOT_WORDS; i += 2) f[(base + i) >> 1] = 0;
  if (core.nodes === 0) return;
  const a = anchorOf(poolOf(core, nodeRegionOf(core.slots, core.threads), core.nodes), slot);
  f[(a + A_TOKEN) >> 1] = Math.max(f[(a + A_TOKEN) >> 1]!, f[H_TOKEN_HWM >> 1]!);
}

/**
 * Give back every idle queue slot: no request held or pending, no outer
 * grant, none lingering or on its way. Under the name latch; a queue whose
 * latch is busy is skipped (it is in use). Returns how many were given back.
 */
function sweep(core: TableCore): number {
  const { words: w, f64: f, slots, threads } = core;
  const pool = poolOf(core, nodeRegionOf(slots, threads), core.nodes);
  let freed = 0;
  for (let slot = 0; slot < slots; slot++) {
    const base = slotBase(threads, slot), use = Atomics.load(w, base + S_USE);
    if ((use & USE_REACH_MASK) !== USE_NAMED || ((use & KIND_MASK) >>> KIND_SHIFT) !== KIND_QUEUE) continue;
    if (Atomics.load(w, base + S_NAME_LEN) === TOMBSTONE) continue;
    const at = base + S_STATE;
    if (Atomics.compareExchange(w, at, 0, core.tid) !== 0) continue;
    const a = anchorOf(pool, slot);
    const idle = w[a + A_HEAD] === 0 && w[a + A_HELD] === 0 && w[a + A_OUTER] === OUTER_NONE && f[(a + A_OUTER_IDLE) >> 1] === 0
      && Atomics.load(w, a + A_OUTER_WAITERS) === 0 && Atomics.load(w, a + A_OUTER_REQ) === Atomics.load(w, a + A_OUTER_REP);
    if (idle) {
      f[H_TOKEN_HWM >> 1] = Math.max(f[H_TOKEN_HWM >> 1]!, f[(a + A_TOKEN) >> 1]!);
      Atomics.add(w, base + S_AUX, 1); // the new generation first: a lookup that read the old one fails
      Atomics.store(w, base + S_NAME_LEN, TOMBSTONE);
      Atomics.sub(w, H_NAMED, 1);
      freed++;
    }
    unlatch(w, at, core.tid);
  }
  if (freed > 0) reclaimTombstones(core);
  return freed;
}

/**
 * Under the name latch: a tombstone that an UNUSED slot follows ends every
 * probe path through it (no name lies beyond it on one), so it becomes
 * UNUSED too, and so on backwards. Without this, churn through many names
 * leaves a table of tombstones in which every lookup of an absent name
 * probes every slot.
 */
function reclaimTombstones(core: TableCore): void {
  const { words: w, slots, threads } = core;
  const reach = (slot: number) => Atomics.load(w, slotBase(threads, slot) + S_USE) & USE_REACH_MASK;
  let end = -1;
  for (let slot = 0; slot < slots && end < 0; slot++) if (reach(slot) === USE_UNUSED) end = slot;
  if (end < 0) return;
  // Backwards from an UNUSED slot, once round the table.
  let nextUnused = true;
  for (let i = 1; i < slots; i++) {
    const slot = (end - i + slots) % slots, base = slotBase(threads, slot), use = Atomics.load(w, base + S_USE);
    if (nextUnused && (use & USE_REACH_MASK) === USE_NAMED && Atomics.load(w, base + S_NAME_LEN) === TOMBSTONE) {
      Atomics.store(w, base + S_USE, (use & ~USE_REACH_MASK) | USE_UNUSED); // its generation stays: stale handles still fail
      continue;
    }
    nextUnused = (use & USE_REACH_MASK) === USE_UNUSED;
  }
}

/** The name `slot` holds now, or null (unused, given back, or used by index). Racy: a snapshot. */
export function nameOfSlot(table: WatchedTable, slot: number): string | null {
  const w = table.words, base = slotBase(table.threads, slot), length = Atomics.load(w, base + S_NAME_LEN);
  if ((Atomics.load(w, base + S_USE) & USE_REACH_MASK) !== USE_NAMED || length === TOMBSTONE || length < 0 || length > NAME_MAX) return null;
  return decodeWtf8(new Uint8Array(w.buffer, nameOffset(table.slots, table.threads, slot), length).slice());
}

/** Under a queue's latch: whether the handle made for generation `gen` of `slot` still names its queue. */
export function stillNamed(core: TableCore, slot: number, gen: number): boolean {
  const base = slotBase(core.threads, slot);
  return Atomics.load(core.words, base + S_AUX) === gen && Atomics.load(core.words, base + S_NAME_LEN) !== TOMBSTONE;
}

/**
 * Recovery: a dead thread that held the name latch. A give-back or a reuse
 * it left half done is a tombstone or a slot with a new generation, both
 * sound; a fresh slot it left CLAIMING is undone (only the latch's holder
 * claims a queue table's slots, and nothing was published in it yet).
 */
export function recoverNameLatch(table: WatchedTable, dead: number): void {
  const w = table.words;
  if ((Atomics.load(w, H_NAME_LATCH) & LATCH_OWNER) !== dead) return;
  for (let slot = 0; slot < table.slots; slot++) {
    const at = slotBase(table.threads, slot) + S_USE, use = Atomics.load(w, at);
    if ((use & USE_REACH_MASK) !== USE_CLAIMING) continue;
    Atomics.store(w, at, (use & ~USE_REACH_MASK) | USE_UNUSED);
    Atomics.notify(w, at);
  }
  unlatch(w, H_NAME_LATCH, dead);
}

