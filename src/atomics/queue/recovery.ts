/**
 * Recovery of a dead thread's requests (word.ts). Runs once per table from
 * threads.ts, after the thread has stopped (or from its own exit hook):
 * every queue the thread had a node in, or whose latch it held, is repaired
 * under its latch, taken on the dead thread's behalf. The dead thread's
 * holds are released (the next grant is told `abandoned`), its pending
 * requests leave the queue, and everybody left in the queue is woken.
 *
 * A gated queue's outer lock needs I/O the thread tier cannot do: the
 * table's outer lock (outer.ts OuterLock.giveBack, wired by whoever made the
 * table) gives it back when the dead thread was in the middle of fetching or
 * returning it, or when its death left the outer lock with nobody to use it.
 */
import type { TableRecovery, WatchedTable } from '../core.js';
import { H_FLAGS, KIND_MASK, KIND_QUEUE, KIND_SHIFT, S_USE, TABLE_GATED, nodeRegionOf, slotBase } from '../layout.js';
import {
  ABANDONED_NEXT, ACT_RELEASE_OUTER, A_FLAGS, A_OUTER, A_OUTER_ACTOR, A_OUTER_FLAGS, A_OUTER_NODE, FREE, LATCH_OWNER, N_OWNER, N_STATE,
  type NodePool, OUTER_ACQUIRING, OUTER_NONE, OUTER_RELEASING, type Place, latchWord, nodeAt, nodesOf, placeOf, poolOf, repair,
  forgetKeptNodes, settle, unlatch, wakeAll,
} from './word.js';
import type { OuterLock } from './outer.js';
import { debug } from '../../debug.js';
import { recoverIfGone } from '../threads.js';
import { nameOfSlot, recoverNameLatch } from './names.js';

/**
 * The recovery of a queue table's dead threads. `outer`: the table's outer
 * lock, for a gated table (asked for only when needed: it may start a tier).
 */
export function queueRecovery(outer?: () => OuterLock): TableRecovery {
  return (table, dead, self) => recoverQueues(table, dead, self, outer);
}

function recoverQueues(table: WatchedTable, dead: number, self: boolean, outer: (() => OuterLock) | undefined): { released: number; retry?: () => boolean } {
  if (table.nodes === 0) return { released: 0 };
  const pool = poolOf(table, nodeRegionOf(table.slots, table.threads), table.nodes), w = table.words;
  // Its nodes go back to the pool below (or in the parent's recovery): the ones this thread kept are not its own any more.
  if (self) forgetKeptNodes();
  recoverNameLatch(table, dead);
  const { slots, nodes } = nodesOf(pool, dead);
  for (let slot = 0; slot < table.slots; slot++) {
    const base = slotBase(table.threads, slot);
    if (((Atomics.load(w, base + S_USE) & KIND_MASK) >>> KIND_SHIFT) !== KIND_QUEUE) continue;
    if ((Atomics.load(w, latchWord(pool, slot)) & LATCH_OWNER) === dead) slots.add(slot);
  }
  let released = 0;
  let blocked = [...slots];
  const attempt = (): boolean => {
    blocked = blocked.filter((slot) => {
      const r = recoverSlot(table, pool, slot, dead, outer);
      if (r === BLOCKED) return true;
      released += r;
      return false;
    });
    if (blocked.length > 0) return false;
    // Only now: a repair must still see the dead thread's nodes to leave them out.
    for (const node of nodes) {
      Atomics.store(w, nodeAt(pool, node) + N_STATE, FREE);
      Atomics.store(w, nodeAt(pool, node) + N_OWNER, 0);
    }
    return true;
  };
  if (attempt()) return { released };
  return { released, retry: attempt };
}

const BLOCKED = -1;
/** How long recovery waits for a latch another thread holds before it comes back later. */
const LATCH_WAIT_MS = 2;

/**
 * Take the latch at `at` for `dead`; false if another thread keeps it past
 * LATCH_WAIT_MS. A holder whose OS thread is gone (it died too, its 'exit'
 * event not delivered yet) is recovered first, here.
 */
function latchFor(table: WatchedTable, at: number, dead: number): boolean {
  const w = table.words, end = performance.now() + LATCH_WAIT_MS;
  for (;;) {
    const s = Atomics.load(w, at), owner = s & LATCH_OWNER;
    // Act as the dead thread: it may hold the latch already, and nobody
    // else can be given its tid until its entry is freed after this.
    if (owner === dead) return true;
    if (owner === 0 && Atomics.compareExchange(w, at, s, dead | (s & ~LATCH_OWNER)) === s) return true;
    const left = end - performance.now();
    if (left <= 0) return recoverIfGone(table, owner) && latchFor(table, at, dead);
    Atomics.wait(w, at, s, left);
  }
}

/** Repair one queue for the dead thread: 1 if it held it, 0 if not, BLOCKED to come back later. */
function recoverSlot(table: WatchedTable, pool: NodePool, slot: number, dead: number, outer: (() => OuterLock) | undefined): number {
  const w = pool.words, gated = (w[H_FLAGS]! & TABLE_GATED) !== 0, q = placeOf(pool, slot, gated, gated ? outer?.().cohort : undefined);
  const at = latchWord(pool, slot);
  if (!latchFor(table, at, dead)) return BLOCKED;
  let held = false;
  try {
    held = repair(q, dead);
    if (q.gated) recoverOuter(table, q, dead, held, outer);
    else settle(q, dead, []);
  } finally {
    unlatch(w, at, dead);
  }
  wakeAll(pool, slot);
  debug('recovered request queue %s from dead thread (tid %d)%s', table.label(slot), dead, held ? ': abandoned' : '');
  return held ? 1 : 0;
}

function recoverOuter(table: WatchedTable, q: Place, dead: number, held: boolean, outerOf: (() => OuterLock) | undefined): void {
  const { p: pool, slot, a } = q, w = pool.words, outer = w[a + A_OUTER];
  const giveBack = (abandoned: boolean) => {
    try {
      const name = nameOfSlot(table, slot);
      if (name !== null) outerOf?.().giveBack(name, abandoned);
    } catch (err) {
      debug('could not give back the outer lock of %s: %s', table.label(slot), (err as Error).message);
    }
    // The news of the death went to the next process with the grant (as outerReleased() has it), not to the next local grant.
    if (abandoned) w[a + A_FLAGS] &= ~ABANDONED_NEXT;
    w[a + A_OUTER] = OUTER_NONE;
    w[a + A_OUTER_ACTOR] = 0;
    w[a + A_OUTER_NODE] = 0;
    w[a + A_OUTER_FLAGS] = 0;
  };
  // Dead in the middle of outer I/O: whatever it fetched or kept is given back.
  if ((outer === OUTER_ACQUIRING && w[a + A_OUTER_NODE] === 0) || (outer === OUTER_RELEASING && w[a + A_OUTER_ACTOR] === dead)) {
    giveBack(held);
  }
  // Its death may leave an outer grant nobody local will use.
  for (let rounds = 0; rounds < 4 && settle(q, dead, []) === ACT_RELEASE_OUTER; rounds++) giveBack(held);
}

