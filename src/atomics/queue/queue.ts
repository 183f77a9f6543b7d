/**
 * RequestQueue: one name's queue of lock requests (word.ts owns the words),
 * driven here by a blocking and an async waiter that share one protocol.
 * locks.ts builds the Web Locks front door on it; a gated queue's outer
 * lock (the host or cluster tier) meets it through its seat (outer.ts).
 */
import { threadId } from 'node:worker_threads';
import type { TableCore, WatchedTable } from '../core.js';
import { cycleThrough } from '../deadlock.js';
import { T_WAIT_SLOT, nodeRegionOf, slotBase, threadBase } from '../layout.js';
import type { Wait } from '../options.js';
import {
  ACT_RELEASE_OUTER, A_HEAD, A_HELD, ENQ_UNAVAILABLE, ESCALATE, GRANTED, GRANT_ABANDONED, IF_AVAILABLE, type LockMode,
  MODE_EXCLUSIVE, MODE_MASK, MODE_SHARED, N_CLIENT, N_GRANT, N_MODE, N_NEXT, N_OWNER, N_STATE, N_TOKEN, N_TTL,
  type NodePool, PENDING, type Place, STEAL, STOLEN, type Wakes, allocNode, anchorOf, cancel, enqueue, escalatorStandsDown,
  freeNode, latch, latchWord, nodeAt, outerGranted, placeOf, outerKept, outerReleased, poolOf, release, snapshot, tryGrant,
  unlatch, wake,
} from './word.js';
import { type OuterLock, type OuterOutcome, OuterSeat } from './outer.js';
import { recordWait, relax, remaining, waitAsyncUntil } from '../wait.js';
import { finishDeferred, recoveriesDeferred } from '../threads.js';
import { StaleQueue, stillNamed } from './names.js';
import { ERR_LOCK_DEADLOCK, ERR_LOCK_TIMEOUT, abortErrorFor } from '../../errors.js';

export type { LockMode };
export { StaleQueue };

export interface QueueRequest {
  readonly mode: LockMode;
  readonly ifAvailable: boolean;
  readonly steal: boolean;
  readonly wait: Wait;
  /** Lease the outer lock is asked for (ms), gated queues only. */
  readonly ttl: number;
}

/** A granted request: the node is this thread's until release(). */
export interface QueueGrant {
  readonly node: number;
  readonly mode: LockMode;
  readonly token: number;
  /** A holder died holding the lock (this thread tier, or the host tier's previous holder). */
  readonly abandoned: boolean;
}

/**
 * Told when a steal released other requests' grants (their threads learn
 * out of band). `tokens[i]`: the token of the grant `nodes[i]` had (its node
 * may be reused for another grant before the holder hears).
 */
export type StolenHook = (q: RequestQueue, nodes: number[], tokens: number[]) => void;

/** What a queue table's maker gives each of its queues (queue/table.ts): no registry, no hook set at import. */
export interface QueueWiring {
  /** The outer lock of a gated table's queues (the host or cluster tier); none for the thread scope. */
  readonly outer?: OuterLock;
  /** Where steal notices go (the front door's loss notices). */
  readonly onStolen: StolenHook;
}

const modeBits = (mode: LockMode) => (mode === 'shared' ? MODE_SHARED : MODE_EXCLUSIVE);
const AGAIN = 0;
const UNAVAILABLE = 1;
/** #enqueue: the slot was given back since this handle was made. */
const ENQ_STALE = -1;
/** How often a blocking wait runs this thread's put-off recoveries while there are some. */
const DEFERRED_POLL_MS = 2;
/** Spin rounds before a wait parks: round n busy-waits 2^n loop turns, ~20 µs in all here. */
const QUEUE_SPIN_ROUNDS = 15;

export class RequestQueue {
  readonly #core: TableCore;
  readonly #place: Place;
  readonly #latch: number;
  readonly #wiring: QueueWiring;
  /** Requests to wake after a release, reused: release() is the hot path. */
  readonly #wakes: Wakes = [];
  /** Grants this thread holds in this queue (this handle is this thread's). */
  #heldHere = 0;
  readonly slot: number;
  readonly name: string;
  readonly gated: boolean;
  /** The slot's generation this handle was made for (names.ts): a slot given back invalidates it. */
  readonly gen: number;
  /** What the outer lock sees of this queue (gated queues only). */
  readonly seat: OuterSeat | undefined;

  /** @internal Use `QueueTable.queue(name)`. */
  constructor(core: TableCore, slot: number, name: string, gated: boolean, gen: number, wiring: QueueWiring) {
    this.gen = gen;
    this.#core = core;
    this.#place = placeOf(poolOf(core, nodeRegionOf(core.slots, core.threads), core.nodes), slot, gated, wiring.outer?.cohort);
    this.#latch = latchWord(this.#place.p, slot);
    this.#wiring = wiring;
    this.slot = slot;
    this.name = name;
    this.gated = gated;
    this.seat = gated ? new OuterSeat(this, name, core.id, gen) : undefined;
  }

  /** The table's identity (layout H_ID). */
  get tableId(): string {
    return this.#core.id;
  }

  /** @internal For the seat (outer.ts). */
  get place(): Place {
    return this.#place;
  }

  /** @internal For the seat (outer.ts). */
  get pool(): NodePool {
    return this.#place.p;
  }

  /** @internal For the seat (outer.ts). */
  get anchor(): number {
    return this.#place.a;
  }

  get tid(): number {
    return this.#core.tid;
  }

  get #outer(): OuterLock {
    return this.#wiring.outer!;
  }

  /** Run `fn` under this queue's latch, then wake whom it changed and do what it asks of the outer lock. */
  withLatch<T>(fn: (wakes: Wakes) => { value: T; action: number }): T {
    const wakes: Wakes = [];
    latch(this.#core.words, this.#latch, this.#core.tid, this.#core);
    let r: { value: T; action: number };
    try {
      r = fn(wakes);
    } finally {
      unlatch(this.#core.words, this.#latch, this.#core.tid);
    }
    wake(this.#place.p, wakes);
    if (r.action === ACT_RELEASE_OUTER) this.#outer.release(this.seat!);
    return r.value;
  }

  /** Report from the outer lock's release(): given back. */
  outerReleased(): void {
    this.withLatch((wakes) => ({ value: undefined, action: outerReleased(this.#place, this.#core.tid, wakes) }));
  }

  /** Report from the outer lock's release(): kept, with a fresh budget (no other process waits). */
  outerKept(): void {
    this.withLatch((wakes) => ({ value: undefined, action: outerKept(this.#place, this.#core.tid, wakes) }));
  }

  /** Blocking request: the grant, or null when `ifAvailable` found it taken. */
  requestSync(req: QueueRequest): QueueGrant | null {
    const node = this.#enqueue(req);
    if (node < 0) return null;
    this.#spin(node);
    const w = this.#core.words, state = nodeAt(this.#place.p, node) + N_STATE, start = performance.now();
    const waitSlot = threadBase(this.#core.tid) + T_WAIT_SLOT;
    let waited = false;
    try {
      for (;;) {
        const s = Atomics.load(w, state);
        // STOLEN: granted, then stolen before this thread looked; the front door reports the steal.
        if (s === GRANTED || s === STOLEN) break;
        if (s === ESCALATE) {
          const outcome = this.#outer.acquireSync(this.seat!, outerRequest(req));
          if (this.#afterEscalation(node, req, outcome) === UNAVAILABLE) return null;
          continue; // the state word says what happened
        }
        // PENDING: wait for our turn, unless waiting can only deadlock.
        if (!waited) {
          waited = true;
          if (this.#ownsAnother(node)) {
            this.#giveUp(node);
            throw new ERR_LOCK_DEADLOCK(this.#core.label(this.slot), 'this thread already holds or waits for it');
          }
          Atomics.store(w, waitSlot, this.slot + 1);
        }
        const cycle = cycleThrough(this.#core, this.slot);
        if (cycle !== null) {
          if (this.#giveUp(node)) throw new ERR_LOCK_DEADLOCK(this.#core.label(this.slot), cycle);
          break;
        }
        if (performance.now() >= req.wait.deadline) {
          if (this.#giveUp(node)) throw new ERR_LOCK_TIMEOUT(this.#core.label(this.slot), req.wait.timeout);
          break;
        }
        // A recovery this thread put off may be what this wait waits for: it
        // cannot run from the event loop while we block, so run it from here.
        const put = recoveriesDeferred();
        switch (Atomics.wait(w, state, PENDING, put ? Math.min(DEFERRED_POLL_MS, remaining(req.wait.deadline)) : remaining(req.wait.deadline))) {
          case 'ok': case 'not-equal': case 'timed-out': if (put) finishDeferred(); continue; // the state word says what happened
        }
      }
    } finally {
      if (waited) Atomics.store(w, waitSlot, 0);
    }
    if (waited) recordWait(this.#place.p.f64, slotBase(this.#core.threads, this.slot), (performance.now() - start) * 1e6);
    return this.#grantOf(node);
  }

  /**
   * Async request: the grant (or null when `ifAvailable` found it taken)
   * at once when it need not wait, else a promise of it. Never blocks the
   * event loop.
   */
  request(req: QueueRequest): QueueGrant | null | Promise<QueueGrant | null> {
    const node = this.#enqueue(req);
    if (node < 0) return null;
    if (this.#spin(node) === GRANTED) return this.#grantOf(node);
    return this.#wait(node, req);
  }

  /**
   * A request that must wait first watches its state word for up to about
   * QUEUE_SPIN_US: a short critical section on another core ends sooner
   * than a park and a wake-up (30-100 µs here), and in a FIFO queue every
   * hand-over would otherwise cost one. Not when a holder is this thread:
   * it cannot release while this thread spins; nor in a gated queue, whose
   * threads share the cores with other processes' (measured: 2 processes ×
   * 4 threads ran at half the speed with it). Returns the state seen.
   */
  #spin(node: number): number {
    const w = this.#core.words, state = nodeAt(this.#place.p, node) + N_STATE;
    let s = Atomics.load(w, state);
    // Only the head spins: it is next, and one spinner beside the holder fits
    // on two cores; the others park (spinning behind it only steals the
    // holder's core: measured, 4 workers fell from 35 k to 19 k requests/s).
    if (s !== PENDING || this.#heldHere > 0 || this.gated || Atomics.load(w, this.#place.a + A_HEAD) !== node + 1) return s;
    for (let round = 0; round < QUEUE_SPIN_ROUNDS; round++) {
      relax(1 << round);
      if ((s = Atomics.load(w, state)) !== PENDING) break;
    }
    return s;
  }

  async #wait(node: number, req: QueueRequest): Promise<QueueGrant | null> {
    const w = this.#core.words, state = nodeAt(this.#place.p, node) + N_STATE, { signal } = req.wait;
    let start = 0;
    for (;;) {
      const s = Atomics.load(w, state);
      if (s === GRANTED || s === STOLEN) break; // STOLEN: as in requestSync()
      if (s === ESCALATE) {
        const outcome = await this.#outer.acquire(this.seat!, outerRequest(req));
        if (this.#afterEscalation(node, req, outcome) === UNAVAILABLE) return null;
        continue; // the state word says what happened
      }
      if (start === 0) start = performance.now();
      if (signal?.aborted) {
        if (this.#giveUp(node)) throw abortErrorFor(signal);
        break;
      }
      if (performance.now() >= req.wait.deadline) {
        if (this.#giveUp(node)) throw new ERR_LOCK_TIMEOUT(this.#core.label(this.slot), req.wait.timeout);
        break;
      }
      await waitAsyncUntil(w, state, PENDING, req.wait.deadline, signal);
    }
    if (start !== 0) recordWait(this.#place.p.f64, slotBase(this.#core.threads, this.slot), (performance.now() - start) * 1e6);
    return this.#grantOf(node);
  }

  /** Give a grant back. False if it had been stolen: nothing was held any more. */
  release(grant: QueueGrant): boolean {
    const w = this.#core.words, tid = this.#core.tid, wakes = this.#wakes;
    let r: { released: boolean; action: number };
    latch(w, this.#latch, tid, this.#core);
    try {
      r = release(this.#place, grant.node, tid, wakes);
    } finally {
      unlatch(w, this.#latch, tid);
    }
    if (wakes.length > 0) {
      wake(this.#place.p, wakes);
      wakes.length = 0;
    }
    if (r.action === ACT_RELEASE_OUTER) this.#outer.release(this.seat!);
    freeNode(this.#core, this.#place.p, grant.node);
    this.#heldHere--;
    return r.released;
  }

  /** Whether the grant still holds (false once stolen). */
  holds(grant: QueueGrant): boolean {
    return Atomics.load(this.#core.words, nodeAt(this.#place.p, grant.node) + N_STATE) === GRANTED;
  }

  /** Held and pending requests, in order; none when the slot no longer names this queue (given back). */
  snapshot(): ReturnType<typeof snapshot> {
    return this.withLatch(() => ({
      value: stillNamed(this.#core, this.slot, this.gen) ? snapshot(this.#place.p, this.#place.a) : { held: [], pending: [] },
      action: 0,
    }));
  }

  /** Enqueue a new request; its node, or -1 when ifAvailable found the lock taken. */
  #enqueue(req: QueueRequest): number {
    const pool = this.#place.p, node = allocNode(this.#core, pool), at = nodeAt(pool, node), w = pool.words;
    w[at + N_MODE] = modeBits(req.mode) | (req.steal ? STEAL : 0) | (req.ifAvailable ? IF_AVAILABLE : 0);
    w[at + N_CLIENT] = threadId + 1;
    w[at + N_TTL] = req.ttl;
    const tid = this.#core.tid;
    let stale = false;
    if (!this.gated && !req.steal) {
      // The uncontended path: one latch, no allocation.
      latch(w, this.#latch, tid, this.#core);
      let granted = false;
      try {
        stale = !stillNamed(this.#core, this.slot, this.gen);
        if (!stale) granted = tryGrant(this.#place, node);
      } finally {
        unlatch(w, this.#latch, tid);
      }
      if (granted) return node;
    }
    let stolen: number[] = [], tokens: number[] = [];
    const outcome = stale ? ENQ_STALE : this.withLatch((wakes) => {
      if (!stillNamed(this.#core, this.slot, this.gen)) return { value: ENQ_STALE, action: 0 };
      const r = enqueue(this.#place, node, tid, wakes);
      stolen = r.stolen;
      // Under the latch: once it is let go, a holder may free its stolen node and reuse it.
      tokens = stolen.map((n) => pool.f64[(nodeAt(pool, n) + N_TOKEN) >> 1]!);
      return { value: r.outcome, action: r.action };
    });
    if (outcome === ENQ_STALE) {
      freeNode(this.#core, pool, node);
      throw new StaleQueue();
    }
    if (stolen.length > 0) this.#wiring.onStolen(this, stolen, tokens);
    if (outcome === ENQ_UNAVAILABLE) {
      freeNode(this.#core, pool, node);
      return -1;
    }
    return node;
  }

  /**
   * Apply what the escalator came back with. UNAVAILABLE: an ifAvailable
   * request's one attempt failed and it left the queue. Otherwise the
   * caller re-reads the state word (GRANTED, or PENDING behind a stealer).
   * Throws what the outer lock failed with, having left the queue.
   */
  #afterEscalation(node: number, req: QueueRequest, outcome: OuterOutcome): typeof AGAIN | typeof UNAVAILABLE {
    if ('granted' in outcome) {
      const { token, expires, abandoned, wanted = false } = outcome.granted;
      const grant = { mode: modeBits(req.mode), token, expires, ttl: req.ttl, abandoned, wanted };
      const ok = this.withLatch((wakes) => {
        const r = outerGranted(this.#place, node, grant, this.#core.tid, wakes);
        return { value: r.ok, action: r.action };
      });
      // Only the escalator's own cancel takes the role away, and it is this thread.
      if (!ok) throw new Error('latchkey: internal error: an outer grant came back to a request that is not the escalator');
      return AGAIN;
    }
    if ('failed' in outcome) {
      if (this.#giveUp(node)) throw outcome.failed;
      return AGAIN; // granted after all, through another escalator
    }
    if (outcome.gaveUp === 'stood-down') {
      this.withLatch((wakes) => ({ value: undefined, action: escalatorStandsDown(this.#place, node, this.#core.tid, wakes) }));
      return AGAIN;
    }
    return this.#giveUp(node) ? UNAVAILABLE : AGAIN;
  }

  /** Withdraw a request not yet granted; false if it was granted meanwhile (the caller holds it). */
  #giveUp(node: number): boolean {
    const cancelled = this.withLatch((wakes) => {
      const r = cancel(this.#place, node, this.#core.tid, wakes);
      return { value: r.cancelled, action: r.action };
    });
    if (cancelled) freeNode(this.#core, this.#place.p, node);
    return cancelled;
  }

  /** Whether this thread has another request in the queue: a blocking wait behind it could never end. */
  #ownsAnother(node: number): boolean {
    return this.withLatch(() => {
      const p = this.#place.p, w = p.words, tid = this.#core.tid, a = this.#place.a;
      for (const list of [A_HELD, A_HEAD]) {
        for (let n = w[a + list]!, guard = 0; n !== 0 && guard < p.nodes; n = w[nodeAt(p, n - 1) + N_NEXT]!, guard++) {
          if (n - 1 !== node && w[nodeAt(p, n - 1) + N_OWNER] === tid) return { value: true, action: 0 };
        }
      }
      return { value: false, action: 0 };
    });
  }

  #grantOf(node: number): QueueGrant {
    this.#heldHere++;
    const p = this.#place.p, w = p.words, at = nodeAt(p, node);
    return {
      node,
      mode: (w[at + N_MODE]! & MODE_MASK) === MODE_SHARED ? 'shared' : 'exclusive',
      token: p.f64[(at + N_TOKEN) >> 1]!,
      abandoned: (w[at + N_GRANT]! & GRANT_ABANDONED) !== 0,
    };
  }
}

const outerRequest = (req: QueueRequest) => ({ mode: req.mode, wait: req.wait, ttl: req.ttl, once: req.ifAvailable, steal: req.steal });

/** The threads (registry tids) holding the queue in `slot`: for deadlock detection and stats. Racy, bounded. */
export function queueHolders(table: WatchedTable, _base: number, slot: number): number[] {
  if (table.nodes === 0) return [];
  const pool = poolOf(table, nodeRegionOf(table.slots, table.threads), table.nodes), w = table.words;
  const out: number[] = [];
  // Racy walk, bounded: deadlock detection confirms what it finds with a second walk.
  for (let n = Atomics.load(w, anchorOf(pool, slot) + A_HELD), guard = 0; n > 0 && n <= pool.nodes && guard < pool.nodes; guard++) {
    const owner = Atomics.load(w, nodeAt(pool, n - 1) + N_OWNER);
    if (owner !== 0 && !out.includes(owner)) out.push(owner);
    n = Atomics.load(w, nodeAt(pool, n - 1) + N_NEXT);
  }
  return out;
}

