/**
 * The request queue: Web Locks semantics (one FIFO queue of requests per
 * name, exclusive and shared modes, ifAvailable, steal) for every thread of
 * a table, in shared memory. This file owns the words and every transition;
 * queue.ts drives them (blocking and async waits), locks.ts and the bridge
 * sit on top.
 *
 * A queue lives in one slot (kind KIND_QUEUE) and its anchor, two nodes of
 * the table's node pool (layout.ts: the first 2 × slots nodes are anchors).
 * Each request is one node of the pool, owned by the thread that made it.
 *
 * Slot words:
 *   S_STATE   the latch: owner tid (bits 0–11) | LATCH_PARKED. Guards every
 *             anchor word and every link below. Held for a few dozen
 *             instructions, never across I/O or a wait.
 *   S_BELL    the outer bell: bumped (and every sleeper woken) when the
 *             outer lock (host tier) may have changed hands elsewhere, or an
 *             escalator must look up (a steal arrived).
 *
 * Anchor words (32: two nodes):
 *   A_HEAD, A_TAIL   first and last pending node + 1 (FIFO, doubly linked)
 *   A_HELD           first held node + 1 (doubly linked, any order)
 *   A_HELD_COUNT     held nodes; A_HELD_MODE their mode (0 when none)
 *   A_SEQ            arrival number for the next request
 *   A_FLAGS          ABANDONED_NEXT: a holder died; the next grant is told
 *   A_TOKEN          (f64) last token of a thread-scope grant
 *   A_OUTER …        the outer lock (host tier; a gated queue only): the
 *                    process's grant that covers every local grant. See
 *                    "Outer lock" below. A_PASSES counts the local grants
 *                    under it (their tokens); A_BUDGET_BASE is where the
 *                    current budget began.
 *
 * Request node words (16):
 *   N_OWNER   tid of the thread whose request it is; 0 while in the pool.
 *             Claimed by CAS 0 → tid, so a dead thread's nodes are found.
 *   N_STATE   the request's state, and the word its thread sleeps on:
 *             FREE → PENDING → (ESCALATE →) GRANTED → RELEASED → FREE,
 *             or PENDING → CANCELLED, GRANTED → STOLEN.
 *   N_SLOT    slot + 1 of the queue it is in
 *   N_MODE    MODE_EXCLUSIVE or MODE_SHARED, | STEAL | IF_AVAILABLE
 *   N_PREV, N_NEXT   links (node + 1) in the pending or the held list
 *   N_SEQ     arrival number: the queue's order, kept in the node
 *   N_CLIENT  Node threadId + 1 of the requester (query's clientId)
 *   N_TTL     outer lease the request asks for (ms)
 *   N_GRANT   GRANT_ABANDONED when the grant followed a holder's death
 *   N_TOKEN   (f64) the grant's fencing token
 *
 * Invariants:
 * - The truth is in the nodes: N_STATE, N_SLOT, N_SEQ, N_MODE, written only
 *   under the latch (but for FREE by the owner of an unlinked node). The
 *   lists and counts are derived from them, so a thread killed anywhere
 *   inside the latch (worker.terminate() stops a thread after any Atomics
 *   call) is repaired by rebuilding them (repair() below), never guessed.
 * - No lost wake-ups: a waiter sleeps on its own N_STATE while it reads
 *   PENDING; every transition out of PENDING stores the new state and then
 *   notifies that node. An actor that changed other requests keeps its own
 *   node in the slot (RELEASED, CANCELLED) until it has notified them, so its
 *   death there is seen by recovery, which wakes every request of the slot.
 * - Grants follow https://w3c.github.io/web-locks/#lock-request-grantable:
 *   the first pending request is granted when nothing is held (exclusive)
 *   or nothing exclusive is held (shared); one grant can let the next in
 *   (shared behind shared). A steal releases every held request (STOLEN) and
 *   goes first; ifAvailable is granted at once or not at all.
 *
 * # Outer lock (a gated queue: the host tier's cohort)
 * A gated queue grants locally only under an outer lock the process holds
 * (a host lock, or later a cluster lock). A_OUTER is its state:
 *
 * | A_OUTER   | meaning                                       | who moves it on                        |
 * |-----------|-----------------------------------------------|----------------------------------------|
 * | NONE      | the process holds no outer grant              | settle(): the head becomes escalator   |
 * | ACQUIRING | A_OUTER_NODE's thread is fetching one (I/O)   | outerGranted(), or cancel of that node |
 * | HELD      | held in A_OUTER_MODE; local grants pass freely| settle(): RELEASING when idle/over budget|
 * | RELEASING | A_OUTER_ACTOR is giving it back or renewing its budget (I/O) | outerReleased(), outerKept()  |
 *
 * Only one thread does outer I/O for a name at a time (A_OUTER_ACTOR): the
 * escalator or the releaser. While HELD, local requests are granted without
 * any I/O (lock cohorting, Dice, Marathe & Shavit) until the budget is
 * spent: COHORT_PASSES grants or COHORT_MS since the outer grant. Then no
 * new local grant is made; once the holders have left, the releaser asks
 * whether another process waits (outerKept() if none) and otherwise gives
 * the outer lock back, and the head escalates again behind the others.
 * A host-scope token is A_OUTER_TOKEN × TOKEN_SPAN + passes: strictly
 * increasing per name, with or without a round trip.
 *
 * OUTER_WANTED (another process waits: the turn is short, nothing lingers)
 * is set by the outer tier while HELD or RELEASING, and also while
 * ACQUIRING, for the grant on its way: the tier may learn of a waiter (a
 * cluster knock) after it answered the escalator and before the escalator
 * took the grant up, and the grant must start wanted then too (else the
 * process passes it around for a whole budget first). escalate() clears it;
 * outerGranted() keeps it. (Issue 14's change; the host tier is unaffected.)
 */
import type { TableCore, WatchedTable } from '../core.js';
import {
  F_ACQUIRED, H_HELPER, H_HELPER_BELL, HELPER_RUNNING, HELPER_SERVING, NODE_WORDS, S_BELL,
  S_STATE, T_LIVE, T_RECOVERING, slotBase, threadBase,
} from '../layout.js';
import { SpinWait } from '../wait.js';
import { finishDeferred, recoverIfGone, recoveriesDeferred } from '../threads.js';
import { ERR_LOCK_TABLE_FULL } from '../../errors.js';

// --- the latch -------------------------------------------------------------

export const LATCH_OWNER = 0xfff;
export const LATCH_PARKED = 1 << 24;

/** A latch held this long by one thread: check whether that thread is still alive (threads.ts recoverIfGone). */
export const LATCH_STALE_MS = 20;

/**
 * Take the latch at `w[at]` for `tid`: one CAS when free. With `core`, a
 * holder that stays LATCH_STALE_MS is checked for death, and recovered if
 * it died: this thread may be the one that would deliver its 'exit' event.
 */
export function latch(w: Int32Array, at: number, tid: number, core?: WatchedTable): void {
  if (Atomics.compareExchange(w, at, 0, tid) !== 0) latchSlow(w, at, tid, core);
}

function latchSlow(w: Int32Array, at: number, tid: number, core: WatchedTable | undefined): void {
  const spin = new SpinWait();
  let slept = false, owner = 0, since = 0;
  for (;;) {
    const s = Atomics.load(w, at);
    if ((s & LATCH_OWNER) === 0) {
      // Having slept, keep PARKED: others may sleep behind us.
      if (Atomics.compareExchange(w, at, s, tid | (slept ? LATCH_PARKED : s)) === s) return;
      continue;
    }
    if ((s & LATCH_PARKED) === 0 && spin.spin()) continue;
    // Publish PARKED *before* sleeping, else the holder may leave without a wake-up.
    if ((s & LATCH_PARKED) === 0 && Atomics.compareExchange(w, at, s, s | LATCH_PARKED) !== s) continue;
    slept = true;
    Atomics.wait(w, at, s | LATCH_PARKED, 10); // a latch is held for a few µs; 10 ms bounds a lost wake
    if (recoveriesDeferred()) finishDeferred(); // the holder may be a dead thread this one recovers
    if ((s & LATCH_OWNER) !== owner) {
      owner = s & LATCH_OWNER;
      since = performance.now();
    } else if (core !== undefined && performance.now() - since >= LATCH_STALE_MS && recoverIfGone(core, owner)) {
      since = performance.now();
    }
  }
}

export function unlatch(w: Int32Array, at: number, tid: number): void {
  if (Atomics.compareExchange(w, at, tid, 0) === tid) return;
  if ((Atomics.exchange(w, at, 0) & LATCH_PARKED) !== 0) Atomics.notify(w, at, 1);
}

// --- node words --------------------------------------------------------------

export const N_OWNER = 0;
export const N_STATE = 1;
export const N_SLOT = 2;
export const N_MODE = 3;
export const N_PREV = 4;
export const N_NEXT = 5;
export const N_SEQ = 6;
export const N_CLIENT = 7;
export const N_TTL = 8;
export const N_GRANT = 9;
export const N_TOKEN = 10; // f64: words 10-11

export const FREE = 0;
export const PENDING = 1;
export const ESCALATE = 2;
export const GRANTED = 3;
export const RELEASED = 4;
export const CANCELLED = 5;
export const STOLEN = 6;

/** A request's mode, as the Web Locks API names it (N_MODE holds MODE_EXCLUSIVE or MODE_SHARED). */
export type LockMode = 'exclusive' | 'shared';

export const MODE_EXCLUSIVE = 1;
export const MODE_SHARED = 2;
export const MODE_MASK = 0b11;
export const STEAL = 1 << 2;
export const IF_AVAILABLE = 1 << 3;

export const GRANT_ABANDONED = 1;

// --- anchor words ----------------------------------------------------------

export const A_HEAD = 0;
export const A_TAIL = 1;
export const A_HELD = 2;
export const A_HELD_COUNT = 3;
export const A_HELD_MODE = 4;
export const A_SEQ = 5;
export const A_FLAGS = 6;
export const A_OUTER = 7;
export const A_OUTER_MODE = 8;
export const A_OUTER_ACTOR = 9;
export const A_OUTER_NODE = 10;
export const A_PASSES = 11;
export const A_OUTER_FLAGS = 12;
export const A_OUTER_WAITERS = 13;
export const A_TOKEN = 14; // f64: 14-15
export const A_OUTER_TOKEN = 16; // f64: 16-17
export const A_OUTER_SINCE = 18; // f64: 18-19, epoch ms
export const A_OUTER_EXPIRES = 20; // f64: 20-21, epoch ms (renewed by the lease keeper)
export const A_OUTER_TTL = 22;
/** A_PASSES when the current budget began (outerKept() starts a new one without a new token). */
export const A_BUDGET_BASE = 23;
/** (f64: 24-25) epoch ms since which a HELD outer grant has served nobody (lingering), or 0. */
export const A_OUTER_IDLE = 24;
/**
 * 26-31: a mailbox between the outer lock's actor and a thread that does
 * its I/O for it (the cluster agent, bridge/cluster/cluster.ts): request number and
 * op, reply number, result and token (f64). The outer lock owns their meaning.
 */
export const A_OUTER_REQ = 26;
export const A_OUTER_REQ_OP = 27;
export const A_OUTER_REP = 28;
export const A_OUTER_REP_RESULT = 29;
export const A_OUTER_REP_TOKEN = 30; // f64: 30-31
export const ANCHOR_WORDS = 2 * NODE_WORDS;

export const ABANDONED_NEXT = 1;

export const OUTER_NONE = 0;
export const OUTER_ACQUIRING = 1;
export const OUTER_HELD = 2;
export const OUTER_RELEASING = 3;
/** A_OUTER_FLAGS: the outer grant came from a dead holder (the first local grant is told). */
export const OUTER_PREVIOUS_DIED = 1;
/** A_OUTER_FLAGS: the outer grant was lost (lease expired and taken, or stolen). */
export const OUTER_COMPROMISED = 2;
/**
 * A_OUTER_FLAGS: another process waits for the name (the outer tier says so:
 * OuterSeat.wanted()). The process's turn is then short (CohortPolicy), a
 * grant nobody local uses goes back at once, and the releaser keeps nothing.
 * Set while ACQUIRING, it is the grant on its way that starts wanted.
 */
export const OUTER_WANTED = 4;

/** Local grants one outer grant may serve before other processes get a turn. */
export const COHORT_PASSES = 64;
/** …and for how long (ms since the outer grant). */
export const COHORT_MS = 20;
/** Host-scope token = outer token × TOKEN_SPAN + pass (pass < COHORT_PASSES + shared joiners, < TOKEN_SPAN). */
export const TOKEN_SPAN = 1000;
/** What a transition asks of its caller once the latch is released. */
export const ACT_NONE = 0;
/** Give the outer grant back (or renew its budget): the caller is A_OUTER_ACTOR. */
export const ACT_RELEASE_OUTER = 1;

/** Where a table's nodes are, as every thread computes them. */
export interface NodePool {
  readonly words: Int32Array;
  readonly f64: Float64Array;
  /** Word index of node 0. */
  readonly region: number;
  /** Nodes in all: 2 × slots anchors, then requests. */
  readonly nodes: number;
  readonly slots: number;
  readonly threads: number;
}

export const anchorOf = (p: NodePool, slot: number) => p.region + slot * ANCHOR_WORDS;

/**
 * How an outer grant is shared among the threads of the process (a gated
 * queue's; each tier gives its own, outer.ts OuterLock.cohort). While
 * nobody else waits, a grant serves up to COHORT_PASSES local grants or
 * COHORT_MS; once another process waits (OUTER_WANTED), only what is left
 * of `turnPasses` and `turnMs` (0: no new local grant). A grant that serves
 * nobody lingers `lingerMs` while nobody else waits.
 */
export interface CohortPolicy {
  readonly turnPasses: number;
  readonly turnMs: number;
  readonly lingerMs: number;
}

/**
 * The host tier's policy: the whole budget whoever waits; a grant nobody
 * uses lingers half a millisecond, in case the process asks again (a loop of
 * request() in one thread re-takes it with no I/O); another process waits
 * at most that much more. Linger needs the table's helper thread running:
 * it gives back what lingers (lingerDue()).
 */
export const kCohort: CohortPolicy = Object.freeze({ turnPasses: 64, turnMs: 20, lingerMs: 0.5 });

/** Where one queue lives: its table's pool, its slot, its anchor, whether it is gated (H_FLAGS), and its cohort policy. */
export interface Place {
  readonly p: NodePool;
  readonly slot: number;
  readonly a: number;
  readonly gated: boolean;
  readonly cohort: CohortPolicy;
}

export const placeOf = (p: NodePool, slot: number, gated: boolean, cohort: CohortPolicy = kCohort): Place =>
  ({ p, slot, a: anchorOf(p, slot), gated, cohort });
export const nodeAt = (p: NodePool, node: number) => p.region + node * NODE_WORDS;
export const firstRequest = (p: NodePool) => 2 * p.slots;

const f64At = (word: number) => word >> 1;

// --- this thread's nodes ----------------------------------------------------

/** Nodes a thread keeps claimed (N_OWNER = tid, FREE) for its next requests. */
const KEEP_FREE = 32;
const locals = new WeakMap<TableCore, { free: number[]; cursor: number; epoch: number }>();
/** Bumped when this thread's own nodes were given back to the pool (its exit hook recovered it): the kept ones are not ours any more. */
let localEpoch = 0;

/** This thread's exit hook recovered it, nodes and all: forget the nodes it kept (later 'exit' listeners claim new ones). */
export function forgetKeptNodes(): void {
  localEpoch++;
}

/** A node for a new request of this thread. Throws ERR_LOCK_TABLE_FULL when the pool is used up. */
export function allocNode(core: TableCore, pool: NodePool): number {
  let local = locals.get(core);
  if (local === undefined || local.epoch !== localEpoch) {
    locals.set(core, (local = { free: [], cursor: firstRequest(pool), epoch: localEpoch }));
  }
  const kept = local.free.pop();
  if (kept !== undefined) return kept;
  const w = pool.words, first = firstRequest(pool), count = pool.nodes - first;
  for (let n = 0; n < count; n++) {
    const node = first + ((local.cursor - first + n) % count);
    if (Atomics.load(w, nodeAt(pool, node) + N_OWNER) === 0
      && Atomics.compareExchange(w, nodeAt(pool, node) + N_OWNER, 0, core.tid) === 0) {
      local.cursor = node + 1;
      return node;
    }
  }
  throw new ERR_LOCK_TABLE_FULL('a lock request', count);
}

/** Give back a node that is in no list (its state is FREE, RELEASED, CANCELLED or STOLEN). */
export function freeNode(core: TableCore, pool: NodePool, node: number): void {
  const at = nodeAt(pool, node);
  Atomics.store(pool.words, at + N_STATE, FREE);
  const local = locals.get(core)!;
  if (local.free.length < KEEP_FREE) local.free.push(node);
  else Atomics.store(pool.words, at + N_OWNER, 0);
}

// --- list helpers (under the latch) --------------------------------------------

function linkTail(p: NodePool, a: number, headWord: number, tailWord: number | -1, node: number): void {
  const w = p.words, at = nodeAt(p, node);
  if (tailWord < 0) {
    // Held list: push at the front, order does not matter.
    const first = w[a + headWord];
    w[at + N_PREV] = 0;
    w[at + N_NEXT] = first;
    if (first !== 0) w[nodeAt(p, first - 1) + N_PREV] = node + 1;
    w[a + headWord] = node + 1;
    return;
  }
  const last = w[a + tailWord];
  w[at + N_NEXT] = 0;
  w[at + N_PREV] = last;
  if (last !== 0) w[nodeAt(p, last - 1) + N_NEXT] = node + 1;
  else w[a + headWord] = node + 1;
  w[a + tailWord] = node + 1;
}

function linkHead(p: NodePool, a: number, node: number): void {
  const w = p.words, at = nodeAt(p, node), first = w[a + A_HEAD];
  w[at + N_PREV] = 0;
  w[at + N_NEXT] = first;
  if (first !== 0) w[nodeAt(p, first - 1) + N_PREV] = node + 1;
  else w[a + A_TAIL] = node + 1;
  w[a + A_HEAD] = node + 1;
}

function unlink(p: NodePool, a: number, headWord: number, tailWord: number | -1, node: number): void {
  const w = p.words, at = nodeAt(p, node);
  const prev = w[at + N_PREV], next = w[at + N_NEXT];
  if (prev !== 0) w[nodeAt(p, prev - 1) + N_NEXT] = next;
  else w[a + headWord] = next;
  if (next !== 0) w[nodeAt(p, next - 1) + N_PREV] = prev;
  else if (tailWord >= 0) w[a + tailWord] = prev;
  w[at + N_PREV] = 0;
  w[at + N_NEXT] = 0;
}

// --- transitions (under the latch) -----------------------------------------------

/** Requests whose N_STATE changed and must be notified once the latch is released. */
export type Wakes = number[];

function compatible(p: NodePool, a: number, mode: number): boolean {
  const count = p.words[a + A_HELD_COUNT];
  return count === 0 || (mode === MODE_SHARED && p.words[a + A_HELD_MODE] === MODE_SHARED);
}

/** Grant `node` (already unlinked from pending): make it a holder, give it its token. */
function grant(q: Place, node: number, wakes: Wakes | null): void {
  const { p, slot, a, gated } = q;
  const w = p.words, at = nodeAt(p, node), f = p.f64;
  const mode = w[at + N_MODE] & MODE_MASK;
  let token: number;
  if (gated) {
    token = f[f64At(a + A_OUTER_TOKEN)] * TOKEN_SPAN + w[a + A_PASSES];
    w[a + A_PASSES] += 1;
    if ((w[a + A_OUTER_FLAGS] & OUTER_PREVIOUS_DIED) !== 0) {
      w[a + A_OUTER_FLAGS] &= ~OUTER_PREVIOUS_DIED;
      w[a + A_FLAGS] |= ABANDONED_NEXT;
    }
  } else {
    token = f[f64At(a + A_TOKEN)] += 1;
  }
  f[f64At(at + N_TOKEN)] = token;
  const abandoned = (w[a + A_FLAGS] & ABANDONED_NEXT) !== 0;
  w[at + N_GRANT] = abandoned ? GRANT_ABANDONED : 0;
  if (abandoned) w[a + A_FLAGS] &= ~ABANDONED_NEXT;
  linkTail(p, a, A_HELD, -1, node);
  w[a + A_HELD_COUNT] += 1;
  w[a + A_HELD_MODE] = mode;
  f[f64At(slotBase(p.threads, slot) + F_ACQUIRED)] += 1;
  Atomics.store(w, at + N_STATE, GRANTED); // the commit point: a repair counts it held from here
  if (wakes !== null) wakes.push(node);
}

/** Whether the outer grant serves a local grant of `mode`. A compromised one serves none: its holders drain, then it is given back. */
function outerCovers(p: NodePool, a: number, mode: number): boolean {
  const w = p.words;
  return w[a + A_OUTER] === OUTER_HELD && (w[a + A_OUTER_FLAGS] & OUTER_COMPROMISED) === 0
    && (w[a + A_OUTER_MODE] === MODE_EXCLUSIVE || mode === MODE_SHARED);
}

/**
 * Whether the outer grant may serve one more local grant: within the
 * budget, or, while another process waits, within the turn. A stealer
 * ignores both, not the token space.
 */
function budgetLeft(q: Place, flags: number): boolean {
  const { p, a, cohort } = q, passes = p.words[a + A_PASSES]!;
  if (passes >= TOKEN_SPAN - 1) return false;
  if ((flags & STEAL) !== 0) return true;
  const wanted = (p.words[a + A_OUTER_FLAGS]! & OUTER_WANTED) !== 0;
  return passes - p.words[a + A_BUDGET_BASE]! < (wanted ? Math.min(COHORT_PASSES, cohort.turnPasses) : COHORT_PASSES)
    && performance.timeOrigin + performance.now() - p.f64[f64At(a + A_OUTER_SINCE)]! < (wanted ? Math.min(COHORT_MS, cohort.turnMs) : COHORT_MS);
}

/**
 * The helper thread's check of a lingering outer grant: if it has served
 * nobody for its linger (or its budget is spent, or another process waits),
 * make the caller its releaser. Under the latch.
 */
export function lingerDue(q: Place, tid: number, now: number): number {
  const { p, a } = q, w = p.words, idle = p.f64[f64At(a + A_OUTER_IDLE)]!;
  if (w[a + A_OUTER] !== OUTER_HELD || w[a + A_HELD_COUNT] !== 0 || w[a + A_HEAD] !== 0 || idle === 0) return ACT_NONE;
  if (now - idle < q.cohort.lingerMs && budgetLeft(q, 0) && (w[a + A_OUTER_FLAGS]! & OUTER_WANTED) === 0) return ACT_NONE;
  w[a + A_OUTER] = OUTER_RELEASING;
  w[a + A_OUTER_ACTOR] = tid;
  p.f64[f64At(a + A_OUTER_IDLE)] = 0;
  return ACT_RELEASE_OUTER;
}

/** Whether the outer grant has tokens left for another budget (else it must be given back and taken anew). */
export function mayKeepOuter(p: NodePool, a: number): boolean {
  return p.words[a + A_PASSES] + COHORT_PASSES < TOKEN_SPAN - 1;
}

function escalate(p: NodePool, a: number, node: number, wakes: Wakes): void {
  const w = p.words, at = nodeAt(p, node);
  w[a + A_OUTER_FLAGS] &= ~OUTER_WANTED; // a new grant starts unwanted, unless the tier says otherwise before it is taken up
  w[a + A_OUTER] = OUTER_ACQUIRING;
  w[a + A_OUTER_NODE] = node + 1;
  w[a + A_OUTER_ACTOR] = w[at + N_OWNER];
  Atomics.store(w, at + N_STATE, ESCALATE);
  wakes.push(node);
}

/**
 * The grant step: grant what the queue allows, in order; in a gated queue,
 * start an escalation or ask the caller to give the outer lock back.
 * `tid` becomes A_OUTER_ACTOR when ACT_RELEASE_OUTER is returned.
 */
export function settle(q: Place, tid: number, wakes: Wakes): number {
  const { p, a, gated } = q;
  const w = p.words;
  for (;;) {
    const head = w[a + A_HEAD];
    if (head === 0) break;
    const node = head - 1, flags = w[nodeAt(p, node) + N_MODE], mode = flags & MODE_MASK;
    if (!compatible(p, a, mode)) break;
    if (gated) {
      const outer = w[a + A_OUTER];
      if (outer === OUTER_HELD && outerCovers(p, a, mode) && budgetLeft(q, flags)) {
        unlink(p, a, A_HEAD, A_TAIL, node);
        grant(q, node, wakes);
        continue;
      }
      if (outer === OUTER_NONE && w[a + A_HELD_COUNT] === 0) escalate(p, a, node, wakes);
      break;
    }
    unlink(p, a, A_HEAD, A_TAIL, node);
    grant(q, node, wakes);
  }
  // An outer grant nobody local can use any more: idle, spent, or of the wrong mode.
  if (gated && w[a + A_OUTER] === OUTER_HELD && w[a + A_HELD_COUNT] === 0) {
    const head = w[a + A_HEAD], flags = head === 0 ? 0 : w[nodeAt(p, head - 1) + N_MODE];
    const helper = Atomics.load(w, H_HELPER);
    if (head === 0 && budgetLeft(q, 0) && (w[a + A_OUTER_FLAGS]! & (OUTER_COMPROMISED | OUTER_WANTED)) === 0
      && q.cohort.lingerMs > 0 && (helper === HELPER_RUNNING || helper === HELPER_SERVING)) {
      // Idle, and nobody else waits: linger; the table's helper thread gives it back after lingerMs.
      if (p.f64[f64At(a + A_OUTER_IDLE)] === 0) {
        p.f64[f64At(a + A_OUTER_IDLE)] = performance.timeOrigin + performance.now();
        Atomics.add(w, H_HELPER_BELL, 1);
        Atomics.notify(w, H_HELPER_BELL);
      }
      return ACT_NONE;
    }
    if (head === 0 || !outerCovers(p, a, flags & MODE_MASK) || !budgetLeft(q, flags)) {
      w[a + A_OUTER] = OUTER_RELEASING;
      w[a + A_OUTER_ACTOR] = tid;
      p.f64[f64At(a + A_OUTER_IDLE)] = 0;
      return ACT_RELEASE_OUTER;
    }
  }
  if (gated) p.f64[f64At(a + A_OUTER_IDLE)] = 0;
  return ACT_NONE;
}

/**
 * The uncontended path of enqueue(): grant `node` at once if nothing is
 * queued and the held mode allows it, in a queue without an outer lock and
 * for a request without steal. False changes nothing. Under the latch.
 */
export function tryGrant(q: Place, node: number): boolean {
  const { p, slot, a } = q;
  const w = p.words, at = nodeAt(p, node);
  if (w[a + A_HEAD] !== 0 || !compatible(p, a, w[at + N_MODE] & MODE_MASK)) return false;
  w[at + N_SLOT] = slot + 1;
  w[at + N_SEQ] = w[a + A_SEQ]++;
  w[at + N_GRANT] = 0;
  grant(q, node, null);
  return true;
}

/** Outcome of enqueue(). */
export const ENQ_GRANTED = 0;
export const ENQ_PENDING = 1;
export const ENQ_ESCALATE = 2;
export const ENQ_UNAVAILABLE = 3;

export interface EnqueueResult {
  outcome: number;
  action: number;
  /** Holders a steal released: their threads are told out of band. */
  stolen: number[];
}

/**
 * Put the request `node` (fields N_MODE, N_CLIENT, N_TTL written by the
 * caller) into the queue of `slot`. Under the latch.
 */
export function enqueue(q: Place, node: number, tid: number, wakes: Wakes): EnqueueResult {
  const { p, slot, a, gated } = q;
  const w = p.words, at = nodeAt(p, node), flags = w[at + N_MODE], mode = flags & MODE_MASK;
  w[at + N_SLOT] = slot + 1;
  w[at + N_SEQ] = w[a + A_SEQ]++;
  w[at + N_GRANT] = 0;
  const stolen: number[] = [];
  if ((flags & STEAL) !== 0) {
    // https://w3c.github.io/web-locks/#algorithm-request-lock, steal: release every held lock, go first.
    for (let h = w[a + A_HELD]; h !== 0; h = w[nodeAt(p, h - 1) + N_NEXT]) stolen.push(h - 1);
    for (const h of stolen) {
      unlink(p, a, A_HELD, -1, h);
      Atomics.store(w, nodeAt(p, h) + N_STATE, STOLEN);
      wakes.push(h);
    }
    w[a + A_HELD_COUNT] = 0;
    w[a + A_HELD_MODE] = 0;
    Atomics.store(w, at + N_STATE, PENDING);
    linkHead(p, a, node);
    // Wake an escalator in flight: it stands down for the stealer (escalatorStandsDown()).
    if (gated && w[a + A_OUTER] === OUTER_ACQUIRING) ringOuterBell(p, slot);
  } else if ((flags & IF_AVAILABLE) !== 0) {
    // Granted at once or not at all: nothing may be ahead of it.
    if (w[a + A_HEAD] !== 0 || !compatible(p, a, mode)
      || (gated && !(outerCovers(p, a, mode) && budgetLeft(q, flags)) && !(w[a + A_OUTER] === OUTER_NONE && w[a + A_HELD_COUNT] === 0))) {
      w[at + N_SLOT] = 0;
      return { outcome: ENQ_UNAVAILABLE, action: ACT_NONE, stolen };
    }
    Atomics.store(w, at + N_STATE, PENDING);
    linkTail(p, a, A_HEAD, A_TAIL, node);
  } else {
    Atomics.store(w, at + N_STATE, PENDING);
    linkTail(p, a, A_HEAD, A_TAIL, node);
  }
  const action = settle(q, tid, wakes);
  const state = w[at + N_STATE];
  // The caller is the thread of `node`: it needs no wake-up for its own node.
  const mine = wakes.indexOf(node);
  if (mine >= 0) wakes.splice(mine, 1);
  return { outcome: state === GRANTED ? ENQ_GRANTED : state === ESCALATE ? ENQ_ESCALATE : ENQ_PENDING, action, stolen };
}

/**
 * Withdraw a request that has not been granted (timeout, abort, ifAvailable
 * that failed to escalate). Returns false if it was granted meanwhile: the
 * caller then holds it. The node is left CANCELLED, in no list.
 */
export function cancel(q: Place, node: number, tid: number, wakes: Wakes): { cancelled: boolean; action: number } {
  const { p, a, gated } = q;
  const w = p.words, at = nodeAt(p, node), state = w[at + N_STATE];
  if (state === GRANTED) return { cancelled: false, action: ACT_NONE };
  if (state === PENDING || state === ESCALATE) unlink(p, a, A_HEAD, A_TAIL, node);
  if (gated && w[a + A_OUTER_NODE] === node + 1) {
    // The escalator leaves: nobody fetches the outer lock now; settle() picks the next head.
    w[a + A_OUTER] = OUTER_NONE;
    w[a + A_OUTER_NODE] = 0;
    w[a + A_OUTER_ACTOR] = 0;
  }
  Atomics.store(w, at + N_STATE, CANCELLED);
  return { cancelled: true, action: settle(q, tid, wakes) };
}

/** Release a held request. Returns false if it had been stolen (nothing to release). */
export function release(q: Place, node: number, tid: number, wakes: Wakes): { released: boolean; action: number } {
  const { p, a } = q;
  const w = p.words, at = nodeAt(p, node);
  if (w[at + N_STATE] !== GRANTED) return { released: false, action: ACT_NONE };
  unlink(p, a, A_HELD, -1, node);
  w[a + A_HELD_COUNT] -= 1;
  if (w[a + A_HELD_COUNT] === 0) w[a + A_HELD_MODE] = 0;
  Atomics.store(w, at + N_STATE, RELEASED);
  return { released: true, action: settle(q, tid, wakes) };
}

/**
 * The escalator got the outer grant. Returns false if it is no longer the
 * escalator (it stood down, or was cancelled): the grant is not the queue's.
 */
/** The escalator's outer grant, as outerGranted() applies it. */
export interface OuterGrantFields {
  /** MODE_EXCLUSIVE or MODE_SHARED. */
  readonly mode: number;
  readonly token: number;
  /** Lease end, epoch ms. */
  readonly expires: number;
  readonly ttl: number;
  /** The previous holder died holding it: the first local grant is told. */
  readonly abandoned: boolean;
  /** Another process waits for it already (OUTER_WANTED from the start). */
  readonly wanted: boolean;
}

export function outerGranted(q: Place, node: number, grant: OuterGrantFields, tid: number, wakes: Wakes): { ok: boolean; action: number } {
  const { p, a } = q, { mode, token, expires, ttl, abandoned: previousDied, wanted } = grant;
  const w = p.words, f = p.f64;
  if (w[a + A_OUTER_NODE] !== node + 1) return { ok: false, action: ACT_NONE };
  w[a + A_OUTER] = OUTER_HELD;
  w[a + A_OUTER_MODE] = mode;
  w[a + A_OUTER_NODE] = 0;
  w[a + A_OUTER_ACTOR] = 0;
  w[a + A_PASSES] = 0;
  w[a + A_BUDGET_BASE] = 0;
  // OUTER_WANTED set while the grant was on its way (OuterSeat.wanted()) is kept.
  w[a + A_OUTER_FLAGS] = (previousDied ? OUTER_PREVIOUS_DIED : 0) | (wanted || (w[a + A_OUTER_FLAGS] & OUTER_WANTED) !== 0 ? OUTER_WANTED : 0);
  w[a + A_OUTER_TTL] = ttl;
  f[f64At(a + A_OUTER_TOKEN)] = token;
  f[f64At(a + A_OUTER_SINCE)] = performance.timeOrigin + performance.now();
  f[f64At(a + A_OUTER_EXPIRES)] = expires;
  const at = nodeAt(p, node);
  if (w[at + N_STATE] === ESCALATE) Atomics.store(w, at + N_STATE, PENDING);
  const action = settle(q, tid, wakes);
  const mine = wakes.indexOf(node);
  if (mine >= 0) wakes.splice(mine, 1);
  return { ok: true, action };
}

/**
 * An escalator whose head is now a stealer (or that was told to look up)
 * gives the role back: its request waits as an ordinary pending one, and
 * settle() makes the stealer the escalator.
 */
export function escalatorStandsDown(q: Place, node: number, tid: number, wakes: Wakes): number {
  const { p, a } = q;
  const w = p.words, at = nodeAt(p, node);
  if (w[a + A_OUTER_NODE] === node + 1) {
    w[a + A_OUTER] = OUTER_NONE;
    w[a + A_OUTER_NODE] = 0;
    w[a + A_OUTER_ACTOR] = 0;
  }
  if (w[at + N_STATE] === ESCALATE) Atomics.store(w, at + N_STATE, PENDING);
  const action = settle(q, tid, wakes);
  const mine = wakes.indexOf(node);
  if (mine >= 0) wakes.splice(mine, 1);
  return action;
}

/** Whether the escalator `node` should stand down: a stealer waits at the head. */
export function stealerWaiting(p: NodePool, a: number, node: number): boolean {
  const head = Atomics.load(p.words, a + A_HEAD);
  return head !== 0 && head !== node + 1 && (Atomics.load(p.words, nodeAt(p, head - 1) + N_MODE) & STEAL) !== 0;
}

/**
 * The releaser gave the outer grant back, telling the backend of a local
 * holder's death (ABANDONED_NEXT) if nobody local was told: the news goes
 * to the next process, not to the next local grant.
 */
export function outerReleased(q: Place, tid: number, wakes: Wakes): number {
  const { p, a } = q;
  const w = p.words;
  w[a + A_OUTER] = OUTER_NONE;
  w[a + A_OUTER_ACTOR] = 0;
  w[a + A_OUTER_FLAGS] = 0;
  w[a + A_FLAGS] &= ~ABANDONED_NEXT;
  return settle(q, tid, wakes);
}

/** The releaser found no other process waiting: keep the outer grant, with a fresh budget. */
export function outerKept(q: Place, tid: number, wakes: Wakes): number {
  const { p, a } = q;
  const w = p.words;
  w[a + A_OUTER] = OUTER_HELD;
  w[a + A_OUTER_ACTOR] = 0;
  w[a + A_BUDGET_BASE] = w[a + A_PASSES]; // passes go on: they are the tokens
  p.f64[f64At(a + A_OUTER_SINCE)] = performance.timeOrigin + performance.now();
  return settle(q, tid, wakes);
}

export function ringOuterBell(p: NodePool, slot: number): void {
  const bell = slotBase(p.threads, slot) + S_BELL;
  Atomics.add(p.words, bell, 1);
  Atomics.notify(p.words, bell);
}

export function wake(p: NodePool, wakes: Wakes): void {
  for (const node of wakes) Atomics.notify(p.words, nodeAt(p, node) + N_STATE);
}


// --- query ---------------------------------------------------------------------

export interface QueueEntry {
  mode: 'exclusive' | 'shared';
  client: number;
  token: number;
}

export function snapshot(p: NodePool, a: number): { held: QueueEntry[]; pending: QueueEntry[] } {
  const w = p.words, f = p.f64;
  const entry = (node: number): QueueEntry => {
    const at = nodeAt(p, node);
    return {
      mode: (w[at + N_MODE] & MODE_MASK) === MODE_SHARED ? 'shared' : 'exclusive',
      client: w[at + N_CLIENT] - 1,
      token: f[f64At(at + N_TOKEN)],
    };
  };
  const held: QueueEntry[] = [], pending: QueueEntry[] = [];
  for (let n = w[a + A_HELD]; n !== 0; n = w[nodeAt(p, n - 1) + N_NEXT]) held.push(entry(n - 1));
  for (let n = w[a + A_HEAD]; n !== 0; n = w[nodeAt(p, n - 1) + N_NEXT]) pending.push({ ...entry(n - 1), token: 0 });
  // The held list is pushed at the front: report grants in the order they were made.
  held.reverse();
  return { held, pending };
}

// --- recovery ------------------------------------------------------------------

/**
 * Rebuild the lists and counts of `slot` from its nodes, leaving out those
 * of the dead thread `dead` and of every thread being recovered (another
 * dead thread whose recovery is put off: threads.ts). A node left
 * out is made FREE, for good: no later repair brings it back (its owner's
 * recovery frees it for reuse). A dead holder marks the next grant
 * abandoned. Under the latch, held by or for `dead`. Returns whether a dead
 * thread held it.
 */
export function repair(q: Place, dead: number): boolean {
  const { p, slot, a } = q;
  const w = p.words;
  const pending: number[] = [], held: number[] = [];
  let deadHeld = false;
  let seq = w[a + A_SEQ];
  for (let node = firstRequest(p); node < p.nodes; node++) {
    const at = nodeAt(p, node);
    if (w[at + N_SLOT] !== slot + 1 || Atomics.load(w, at + N_OWNER) === 0) continue;
    const state = Atomics.load(w, at + N_STATE), owner = Atomics.load(w, at + N_OWNER);
    // A live thread may be putting a node it used here before into another
    // queue, under that queue's latch: it writes N_SLOT before N_STATE, so
    // N_SLOT read again after the state says whether the state is this queue's.
    if (state === FREE || Atomics.load(w, at + N_SLOT) !== slot + 1) continue;
    // Arrival numbers wrap at 2^32: compare by difference.
    if (((w[at + N_SEQ] - seq) | 0) >= 0) seq = (w[at + N_SEQ] + 1) | 0;
    if (owner === dead || Atomics.load(w, threadBase(owner) + T_LIVE) === T_RECOVERING) {
      if (state === GRANTED) deadHeld = true;
      Atomics.store(w, at + N_STATE, FREE);
      continue;
    }
    if (state === PENDING || state === ESCALATE) pending.push(node);
    else if (state === GRANTED) held.push(node);
  }
  pending.sort((x, y) => (w[nodeAt(p, x) + N_SEQ] - w[nodeAt(p, y) + N_SEQ]) | 0);
  w[a + A_HEAD] = w[a + A_TAIL] = w[a + A_HELD] = 0;
  w[a + A_HELD_COUNT] = 0;
  w[a + A_HELD_MODE] = 0;
  w[a + A_SEQ] = seq;
  for (const node of pending) linkTail(p, a, A_HEAD, A_TAIL, node);
  for (const node of held) {
    linkTail(p, a, A_HELD, -1, node);
    w[a + A_HELD_COUNT] += 1;
    w[a + A_HELD_MODE] = w[nodeAt(p, node) + N_MODE] & MODE_MASK;
  }
  if (deadHeld) w[a + A_FLAGS] |= ABANDONED_NEXT;
  const escalator = w[a + A_OUTER_NODE];
  if (escalator !== 0 && !pending.includes(escalator - 1)) w[a + A_OUTER_NODE] = 0;
  return deadHeld;
}

/** Under the latch: the held requests of a queue and their grants' tokens (what a loss notice names). */
export function heldGrants(p: NodePool, a: number): { nodes: number[]; tokens: number[] } {
  const w = p.words, nodes: number[] = [], tokens: number[] = [];
  for (let n = w[a + A_HELD]; n !== 0; n = w[nodeAt(p, n - 1) + N_NEXT]) {
    nodes.push(n - 1);
    tokens.push(p.f64[f64At(nodeAt(p, n - 1) + N_TOKEN)]!);
  }
  return { nodes, tokens };
}

/** Wake every request of the slot, whatever its state: each re-reads its word. */
export function wakeAll(p: NodePool, slot: number): void {
  for (let node = firstRequest(p); node < p.nodes; node++) {
    const at = nodeAt(p, node);
    if (p.words[at + N_SLOT] === slot + 1) Atomics.notify(p.words, at + N_STATE);
  }
  ringOuterBell(p, slot);
}

/** The slots the dead thread had requests in, and its nodes (to be freed once its slots are repaired). */
export function nodesOf(p: NodePool, dead: number): { slots: Set<number>; nodes: number[] } {
  const w = p.words, slots = new Set<number>(), nodes: number[] = [];
  for (let node = firstRequest(p); node < p.nodes; node++) {
    const at = nodeAt(p, node);
    if (Atomics.load(w, at + N_OWNER) !== dead) continue;
    nodes.push(node);
    const state = Atomics.load(w, at + N_STATE), slot = w[at + N_SLOT];
    if (state !== FREE && slot !== 0) slots.add(slot - 1);
  }
  return { slots, nodes };
}

export function poolOf(core: WatchedTable & { f64?: Float64Array }, region: number, nodes: number): NodePool {
  return {
    words: core.words, f64: core.f64 ?? new Float64Array(core.words.buffer), region, nodes, slots: core.slots, threads: core.threads,
  };
}

export const latchWord = (p: NodePool, slot: number) => slotBase(p.threads, slot) + S_STATE;
