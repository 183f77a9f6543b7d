/**
 * RequestQueue: one name's queue of lock requests (queue/word.ts owns the
 * words), driven here by a blocking and an async waiter that share one
 * protocol. locks.ts builds the Web Locks front door on it; the bridge makes
 * a gated queue's outer lock (the host tier).
 */
import { threadId } from 'node:worker_threads';
import type { TableCore } from '../core.js';
import { cycleThrough } from '../deadlock.js';
import { defineKind } from '../kinds.js';
import { KIND_QUEUE, T_WAIT_SLOT, nodeRegionOf, threadBase } from '../layout.js';
import type { Wait } from '../options.js';
import {
  ACT_RELEASE_OUTER, A_HEAD, A_HELD, ENQ_UNAVAILABLE, ESCALATE, GRANTED, GRANT_ABANDONED, IF_AVAILABLE,
  MODE_EXCLUSIVE, MODE_MASK, MODE_SHARED, N_CLIENT, N_GRANT, N_MODE, N_NEXT, N_OWNER, N_STATE, N_TOKEN, N_TTL,
  type NodePool, PENDING, STEAL, STOLEN, type Wakes, allocNode, anchorOf, cancel, enqueue, escalatorStandsDown, freeNode,
  latch, latchWord, nodeAt, outerGranted, outerKept, outerReleased, poolOf, recordWait, release, snapshot, tryGrant, unlatch, wake,
} from './word.js';
import './recovery.js';
import { relax, remaining, waitAsyncUntil } from '../wait.js';
import { finishDeferred, recoveriesDeferred } from '../threads.js';
import { StaleQueue, stillNamed } from './names.js';
export { StaleQueue };
import { ERR_LOCK_DEADLOCK, ERR_LOCK_TIMEOUT, abortErrorFor } from '../../errors.js';

export type LockMode = 'exclusive' | 'shared';

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

/** What the outer lock's escalator came back with. */
export type OuterOutcome =
  | { readonly granted: { readonly token: number; readonly expires: number; readonly previousDied: boolean } }
  | { readonly gaveUp: 'stood-down' | 'unavailable' }
  | { readonly failed: unknown };

/**
 * The outer lock of a gated queue (the bridge implements it). The queue
 * calls it from the one thread that is A_OUTER_ACTOR for the name.
 */
export interface OuterLock {
  /** Take the outer lock in `mode` for queue `q`, waiting until `wait.deadline` (unless `once`). Blocks the thread. */
  acquireSync(q: RequestQueue, mode: LockMode, wait: Wait, ttl: number, once: boolean, steal: boolean): OuterOutcome;
  acquire(q: RequestQueue, mode: LockMode, wait: Wait, ttl: number, once: boolean, steal: boolean): Promise<OuterOutcome>;
  /**
   * Give the outer lock back, or keep it with a fresh budget when no other
   * process waits; then report with q.outerReleased() or q.outerKept().
   */
  release(q: RequestQueue): void;
}

/**
 * Told when a steal released other requests' grants (their threads learn
 * out of band). `tokens[i]`: the token of the grant `nodes[i]` had (its node
 * may be reused for another grant before the holder hears).
 */
export type StolenHook = (q: RequestQueue, nodes: number[], tokens: number[]) => void;

let stolenHook: StolenHook = () => {};
export function onStolen(hook: StolenHook): void {
  stolenHook = hook;
}

const outers = new Map<string, OuterLock>();
/** Set the outer lock of every gated queue of table `id` in this thread. */
export function setOuterLock(id: string, outer: OuterLock): void {
  outers.set(id, outer);
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
  readonly #pool: NodePool;
  readonly #a: number;
  readonly #latch: number;
  /** Requests to wake after a release, reused: release() is the hot path. */
  readonly #wakes: Wakes = [];
  /** Grants this thread holds in this queue (this handle is this thread's). */
  #heldHere = 0;
  readonly slot: number;
  readonly name: string | number;
  readonly gated: boolean;

  /** The slot's generation this handle was made for (queue/names.ts): a slot given back invalidates it. */
  readonly gen: number;

  /** @internal Use `table.queue(name)`. */
  constructor(core: TableCore, slot: number, _base: number, name: string | number, gated: boolean, gen: number) {
    this.gen = gen;
    this.#core = core;
    this.#pool = poolOf(core, nodeRegionOf(core.slots, core.threads), core.nodes);
    this.#a = anchorOf(this.#pool, slot);
    this.#latch = latchWord(this.#pool, slot);
    this.slot = slot;
    this.name = name;
    this.gated = gated;
  }

  /** The table's identity (layout H_ID). */
  get tableId(): string {
    return this.#core.id;
  }

  get pool(): NodePool {
    return this.#pool;
  }

  get anchor(): number {
    return this.#a;
  }

  get tid(): number {
    return this.#core.tid;
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
    wake(this.#pool, wakes);
    if (r.action === ACT_RELEASE_OUTER) outers.get(this.#core.id)!.release(this);
    return r.value;
  }

  /** Report from the outer lock's release(): given back. */
  outerReleased(): void {
    this.withLatch((wakes) => ({ value: undefined, action: outerReleased(this.#pool, this.slot, this.#a, this.#core.tid, wakes) }));
  }

  /** Report from the outer lock's release(): kept, with a fresh budget (no other process waits). */
  outerKept(): void {
    this.withLatch((wakes) => ({ value: undefined, action: outerKept(this.#pool, this.slot, this.#a, this.#core.tid, wakes) }));
  }

  /** Blocking request: the grant, or null when `ifAvailable` found it taken. */
  requestSync(req: QueueRequest): QueueGrant | null {
    const node = this.#enqueue(req);
    if (node < 0) return null;
    this.#spin(node);
    const w = this.#core.words, state = nodeAt(this.#pool, node) + N_STATE, start = performance.now();
    const waitSlot = threadBase(this.#core.tid) + T_WAIT_SLOT;
    let waited = false;
    try {
      for (;;) {
        const s = Atomics.load(w, state);
        // STOLEN: granted, then stolen before this thread looked; the front door reports the steal.
        if (s === GRANTED || s === STOLEN) break;
        if (s === ESCALATE) {
          const outcome = outers.get(this.#core.id)!.acquireSync(this, req.mode, req.wait, req.ttl, req.ifAvailable, req.steal);
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
    if (waited) recordWait(this.#pool, this.slot, (performance.now() - start) * 1e6);
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
    const w = this.#core.words, state = nodeAt(this.#pool, node) + N_STATE;
    let s = Atomics.load(w, state);
    // Only the head spins: it is next, and one spinner beside the holder fits
    // on two cores; the others park (spinning behind it only steals the
    // holder's core: measured, 4 workers fell from 35 k to 19 k requests/s).
    if (s !== PENDING || this.#heldHere > 0 || this.gated || Atomics.load(w, this.#a + A_HEAD) !== node + 1) return s;
    for (let round = 0; round < QUEUE_SPIN_ROUNDS; round++) {
      relax(1 << round);
      if ((s = Atomics.load(w, state)) !== PENDING) break;
    }
    return s;
  }

  async #wait(node: number, req: QueueRequest): Promise<QueueGrant | null> {
    const w = this.#core.words, state = nodeAt(this.#pool, node) + N_STATE, { signal } = req.wait;
    let start = 0;
    for (;;) {
      const s = Atomics.load(w, state);
      if (s === GRANTED || s === STOLEN) break; // STOLEN: as in requestSync()
      if (s === ESCALATE) {
        const outcome = await outers.get(this.#core.id)!.acquire(this, req.mode, req.wait, req.ttl, req.ifAvailable, req.steal);
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
    if (start !== 0) recordWait(this.#pool, this.slot, (performance.now() - start) * 1e6);
    return this.#grantOf(node);
  }

  /** Give a grant back. False if it had been stolen: nothing was held any more. */
  release(grant: QueueGrant): boolean {
    const w = this.#core.words, tid = this.#core.tid, wakes = this.#wakes;
    let r: { released: boolean; action: number };
    latch(w, this.#latch, tid, this.#core);
    try {
      r = release(this.#pool, this.slot, this.#a, grant.node, this.gated, tid, wakes);
    } finally {
      unlatch(w, this.#latch, tid);
    }
    if (wakes.length > 0) {
      wake(this.#pool, wakes);
      wakes.length = 0;
    }
    if (r.action === ACT_RELEASE_OUTER) outers.get(this.#core.id)!.release(this);
    freeNode(this.#core, this.#pool, grant.node);
    this.#heldHere--;
    return r.released;
  }

  /** Whether the grant still holds (false once stolen). */
  holds(grant: QueueGrant): boolean {
    return Atomics.load(this.#core.words, nodeAt(this.#pool, grant.node) + N_STATE) === GRANTED;
  }

  /** Held and pending requests, in order; none when the slot no longer names this queue (given back). */
  snapshot(): ReturnType<typeof snapshot> {
    return this.withLatch(() => ({
      value: stillNamed(this.#core, this.slot, this.gen) ? snapshot(this.#pool, this.#a) : { held: [], pending: [] },
      action: 0,
    }));
  }

  /** Enqueue a new request; its node, or -1 when ifAvailable found the lock taken. */
  #enqueue(req: QueueRequest): number {
    const pool = this.#pool, node = allocNode(this.#core, pool), at = nodeAt(pool, node), w = pool.words;
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
        if (!stale) granted = tryGrant(pool, this.slot, this.#a, node);
      } finally {
        unlatch(w, this.#latch, tid);
      }
      if (granted) return node;
    }
    let stolen: number[] = [], tokens: number[] = [];
    const outcome = stale ? ENQ_STALE : this.withLatch((wakes) => {
      if (!stillNamed(this.#core, this.slot, this.gen)) return { value: ENQ_STALE, action: 0 };
      const r = enqueue(pool, this.slot, this.#a, node, this.gated, tid, wakes);
      stolen = r.stolen;
      // Under the latch: once it is let go, a holder may free its stolen node and reuse it.
      tokens = stolen.map((n) => pool.f64[(nodeAt(pool, n) + N_TOKEN) >> 1]!);
      return { value: r.outcome, action: r.action };
    });
    if (outcome === ENQ_STALE) {
      freeNode(this.#core, pool, node);
      throw new StaleQueue();
    }
    if (stolen.length > 0) stolenHook(this, stolen, tokens);
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
      const { token, expires, previousDied } = outcome.granted;
      const ok = this.withLatch((wakes) => {
        const r = outerGranted(this.#pool, this.slot, this.#a, node, modeBits(req.mode), token, expires, req.ttl, previousDied, this.#core.tid, wakes);
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
      this.withLatch((wakes) => ({ value: undefined, action: escalatorStandsDown(this.#pool, this.slot, this.#a, node, this.#core.tid, wakes) }));
      return AGAIN;
    }
    return this.#giveUp(node) ? UNAVAILABLE : AGAIN;
  }

  /** Withdraw a request not yet granted; false if it was granted meanwhile (the caller holds it). */
  #giveUp(node: number): boolean {
    const cancelled = this.withLatch((wakes) => {
      const r = cancel(this.#pool, this.slot, this.#a, node, this.gated, this.#core.tid, wakes);
      return { value: r.cancelled, action: r.action };
    });
    if (cancelled) freeNode(this.#core, this.#pool, node);
    return cancelled;
  }

  /** Whether this thread has another request in the queue: a blocking wait behind it could never end. */
  #ownsAnother(node: number): boolean {
    return this.withLatch(() => {
      const w = this.#pool.words, tid = this.#core.tid;
      for (const list of [A_HELD, A_HEAD]) {
        for (let n = w[this.#a + list], guard = 0; n !== 0 && guard < this.#pool.nodes; n = w[nodeAt(this.#pool, n - 1) + N_NEXT], guard++) {
          if (n - 1 !== node && w[nodeAt(this.#pool, n - 1) + N_OWNER] === tid) return { value: true, action: 0 };
        }
      }
      return { value: false, action: 0 };
    });
  }

  #grantOf(node: number): QueueGrant {
    this.#heldHere++;
    const w = this.#pool.words, at = nodeAt(this.#pool, node);
    return {
      node,
      mode: (w[at + N_MODE] & MODE_MASK) === MODE_SHARED ? 'shared' : 'exclusive',
      token: this.#pool.f64[(at + N_TOKEN) >> 1],
      abandoned: (w[at + N_GRANT] & GRANT_ABANDONED) !== 0,
    };
  }
}

defineKind(KIND_QUEUE, {
  holders: (table, _base, slot) => {
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
  },
});
