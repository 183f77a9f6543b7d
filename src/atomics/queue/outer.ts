/**
 * The seam between a gated request queue and its outer lock: the one door
 * through which the host and cluster tiers (src/bridge) meet the queue.
 *
 * - OuterLock is what the queue asks of an outer lock: fetch a grant for the
 *   process (acquire, acquireSync), give it back or keep it (release), and,
 *   after a thread died in the way, give back what nobody local will use
 *   (giveBack). The queue calls it from the one thread that is the name's
 *   outer actor (word.ts, "Outer lock").
 * - OuterSeat is what an outer lock may see and do of one name's queue: its
 *   grant (token, lease, compromised), whether local requests still want it,
 *   the name's bell, the helper thread's mailbox, and the reports that move
 *   the queue on (released, kept, renewed, compromised). The outer tier never
 *   reads or writes a queue word itself: every access is named here.
 *
 * The words behind these names are drawn in word.ts (A_OUTER_*).
 */
import type { Wait } from '../options.js';
import { remaining, waitAsyncUntil } from '../wait.js';
import { S_BELL, slotBase } from '../layout.js';
import {
  ABANDONED_NEXT, A_FLAGS, A_HEAD, A_OUTER, A_OUTER_EXPIRES, A_OUTER_FLAGS, A_OUTER_IDLE, A_OUTER_MODE, A_OUTER_NODE,
  A_OUTER_REP, A_OUTER_REP_RESULT, A_OUTER_REP_TOKEN, A_OUTER_REQ, A_OUTER_REQ_OP, A_OUTER_TOKEN, A_OUTER_TTL,
  A_OUTER_WAITERS, ACT_NONE, type CohortPolicy, MODE_EXCLUSIVE, MODE_MASK, MODE_SHARED, N_MODE, N_TTL, OUTER_ACQUIRING,
  OUTER_COMPROMISED, OUTER_HELD, OUTER_RELEASING, OUTER_WANTED, type LockMode, type NodePool, type Place, heldGrants, lingerDue,
  mayKeepOuter, nodeAt, ringOuterBell, stealerWaiting,
} from './word.js';

/** What an escalation asks the outer lock for. */
export interface OuterRequest {
  readonly mode: LockMode;
  /** Deadline and signal of the local request that escalates. */
  readonly wait: Wait;
  /** Lease, ms (the host tier, and Redis at the cluster tier, through OuterSeat.leaseAsked; PostgreSQL's sessions need none). */
  readonly ttl: number;
  /** ifAvailable: one attempt, never wait. */
  readonly once: boolean;
  readonly steal: boolean;
}

export type { CohortPolicy };

/** The process's grant of the outer lock. */
export interface OuterGrant {
  /** Strictly increasing per name across processes; local tokens are token × TOKEN_SPAN + the pass. */
  readonly token: number;
  /** Lease end, epoch ms (Infinity where the grant lasts as long as a session). */
  readonly expires: number;
  /** The previous holder died holding it, or lost it: the first local grant is told. */
  readonly abandoned: boolean;
  /** Another process waits for it already (as OuterSeat.wanted() says later). */
  readonly wanted?: boolean;
}

/** What an escalation came back with. */
export type OuterOutcome =
  | { readonly granted: OuterGrant }
  | { readonly gaveUp: 'stood-down' | 'unavailable' }
  | { readonly failed: unknown };

export interface OuterLock {
  /** How the tier's grants are shared among the process's threads (word.ts CohortPolicy). */
  readonly cohort: CohortPolicy;
  /** Take the outer lock for `seat`'s name, blocking this thread until granted or `req.wait.deadline`. */
  acquireSync(seat: OuterSeat, req: OuterRequest): OuterOutcome;
  /** The same without blocking the event loop; it ends early when `req.wait.signal` aborts. */
  acquire(seat: OuterSeat, req: OuterRequest): Promise<OuterOutcome>;
  /**
   * As the name's releaser (seat.state is 'releasing'): keep the grant with
   * a fresh budget when local requests still want it and no other process
   * waits (then seat.kept()), else give it back (then seat.released()).
   * Either report may come later, from another thread.
   */
  release(seat: OuterSeat): void;
  /**
   * Recovery: a thread died in the middle of the outer lock's I/O, or its
   * death left a grant nobody local will use. Give back whatever this
   * process holds of `name`, at once; safe when it holds nothing.
   * `abandoned`: its last local holder died holding it (the next holder is told).
   */
  giveBack(name: string, abandoned: boolean): void;
}

/** The lease of the grant a name's queue holds. */
export interface OuterLease {
  readonly token: number;
  readonly expires: number;
  readonly ttl: number;
}

/** The lost grants of a compromised outer grant, as loss notices name them (loss.ts). */
export interface LostGrants {
  readonly nodes: number[];
  readonly tokens: number[];
}

export type OuterState = 'none' | 'acquiring' | 'held' | 'releasing';
const STATES: readonly OuterState[] = ['none', 'acquiring', 'held', 'releasing'];

/** What the queue offers its seat: its words and its latch. */
export interface SeatHost {
  readonly place: Place;
  readonly pool: NodePool;
  readonly anchor: number;
  readonly slot: number;
  readonly tid: number;
  /** Run `fn` under the queue's latch; `action` is what the transition asks of the outer lock (word.ts ACT_*). */
  withLatch<T>(fn: (wakes: number[]) => { value: T; action: number }): T;
  /** Report from the outer lock's release(): given back, or kept with a fresh budget. */
  outerReleased(): void;
  outerKept(): void;
}

/**
 * One name's queue as its outer lock sees it. Reads without the latch are
 * racy snapshots (what a keeper's round or a releaser's decision needs);
 * what must not race (renewal, compromise) takes the latch.
 */
export class OuterSeat {
  readonly #q: SeatHost;
  readonly #w: Int32Array;
  readonly #f: Float64Array;
  readonly #a: number;
  readonly #bell: number;

  /** @internal Made by the queue (RequestQueue.seat). */
  constructor(q: SeatHost, readonly name: string, readonly tableId: string, readonly gen: number) {
    this.#q = q;
    this.#w = q.pool.words;
    this.#f = q.pool.f64;
    this.#a = q.anchor;
    this.#bell = slotBase(q.pool.threads, q.slot) + S_BELL;
  }

  get slot(): number {
    return this.#q.slot;
  }

  get state(): OuterState {
    return STATES[Atomics.load(this.#w, this.#a + A_OUTER)]!;
  }

  /** The grant's token and lease (meaningful while held or releasing). */
  get lease(): OuterLease {
    const f = this.#f, a = this.#a;
    return { token: f[(a + A_OUTER_TOKEN) >> 1]!, expires: f[(a + A_OUTER_EXPIRES) >> 1]!, ttl: this.#w[a + A_OUTER_TTL]! };
  }

  get mode(): LockMode {
    return this.#w[this.#a + A_OUTER_MODE] === MODE_SHARED ? 'shared' : 'exclusive';
  }

  get compromised(): boolean {
    return (this.#w[this.#a + A_OUTER_FLAGS]! & OUTER_COMPROMISED) !== 0;
  }

  /** A local holder died holding it and no local grant was told: the next process must be. */
  get abandonedNext(): boolean {
    return (this.#w[this.#a + A_FLAGS]! & ABANDONED_NEXT) !== 0;
  }

  /**
   * For the releaser: whether the grant is worth keeping for the local
   * requests waiting for it (the first one is of a mode it covers, it is not
   * compromised, and its token space has room for another budget).
   */
  get worthKeeping(): boolean {
    const w = this.#w, a = this.#a, head = w[a + A_HEAD]!;
    if (head === 0 || this.compromised || this.wantedElsewhere || !mayKeepOuter(this.#q.pool, a)) return false;
    return w[a + A_OUTER_MODE] === MODE_EXCLUSIVE || (w[nodeAt(this.#q.pool, head - 1) + N_MODE]! & MODE_MASK) === MODE_SHARED;
  }

  /**
   * For a helper thread serving an escalation: the lease (ms) the escalating
   * request asked for (its `ttl`), or 0 when no escalation is on its way.
   * The escalator's node is read while the seat is acquiring: its N_TTL was
   * written before it was queued.
   */
  get leaseAsked(): number {
    const node = Atomics.load(this.#w, this.#a + A_OUTER_NODE);
    return node === 0 ? 0 : Atomics.load(this.#w, nodeAt(this.#q.pool, node - 1) + N_TTL);
  }

  /** For an escalator: a stealer waits ahead of it, so it stands down (unless it steals too). */
  get stealerAhead(): boolean {
    return stealerWaiting(this.#q.pool, this.#a, Atomics.load(this.#w, this.#a + A_OUTER_NODE) - 1);
  }

  /** Someone waits for the outer grant: an escalator, or a watch (watch()). */
  get waited(): boolean {
    return Atomics.load(this.#w, this.#a + A_OUTER_WAITERS) > 0 || Atomics.load(this.#w, this.#a + A_OUTER) === OUTER_ACQUIRING;
  }

  /** Epoch ms at which a held grant that serves nobody (lingering) is due to go back, or 0 when it does not linger. */
  get lingersUntil(): number {
    const idle = this.#f[(this.#a + A_OUTER_IDLE) >> 1]!;
    return idle === 0 ? 0 : idle + this.#q.place.cohort.lingerMs;
  }

  /** Another process waits for the name (as the tier has just learned). */
  get wantedElsewhere(): boolean {
    return (this.#w[this.#a + A_OUTER_FLAGS]! & OUTER_WANTED) !== 0;
  }

  /**
   * The tier learned that another process waits for the name: from now on
   * the process's turn is short (CohortPolicy), a grant nobody local uses
   * goes back at once, and the releaser keeps nothing. Meaningful while the
   * process holds a grant, or while it is acquiring one: the grant on its
   * way (answered, not yet taken up) starts wanted. A new escalation starts
   * without it.
   */
  wanted(): void {
    this.#q.withLatch(() => {
      const w = this.#w, a = this.#a, outer = w[a + A_OUTER];
      if (outer !== OUTER_HELD && outer !== OUTER_RELEASING && outer !== OUTER_ACQUIRING) return { value: undefined, action: ACT_NONE };
      w[a + A_OUTER_FLAGS]! |= OUTER_WANTED;
      return { value: undefined, action: lingerDue(this.#q.place, this.#q.tid, Infinity) };
    });
  }

  /** An escalator that sleeps asks the table's helper thread to watch for the outer lock changing hands. */
  watch(): void {
    Atomics.add(this.#w, this.#a + A_OUTER_WAITERS, 1);
  }

  unwatch(): void {
    Atomics.sub(this.#w, this.#a + A_OUTER_WAITERS, 1);
  }

  // --- the name's bell: rung when the outer lock may have changed hands -------

  /** Read the bell before looking: a change after the look rings a new value. */
  get bell(): number {
    return Atomics.load(this.#w, this.#bell);
  }

  ring(): void {
    ringOuterBell(this.#q.pool, this.#q.slot);
  }

  /** Sleep while the bell reads `value`, until `until` (performance.now() ms). */
  sleep(value: number, until: number): void {
    Atomics.wait(this.#w, this.#bell, value, remaining(until));
  }

  sleepAsync(value: number, until: number, signal: AbortSignal | undefined): Promise<unknown> {
    return waitAsyncUntil(this.#w, this.#bell, value, until, signal);
  }

  // --- reports that move the queue on ------------------------------------------

  /** The releaser gave the grant back. */
  released(): void {
    this.#q.outerReleased();
  }

  /** The releaser kept the grant, with a fresh budget. */
  kept(): void {
    this.#q.outerKept();
  }

  /** Releasing on a helper thread's word: the report applies only while the seat is still releasing. */
  releasedIfReleasing(kept: boolean): void {
    if (Atomics.load(this.#w, this.#a + A_OUTER) !== OUTER_RELEASING) return;
    if (kept) this.kept();
    else this.released();
  }

  /**
   * Renew the held grant: `renew` gets its lease and answers a new expiry,
   * or that the grant was lost. Under the latch, so the grant cannot be
   * given back or replaced meanwhile. Returns the lost grants when it was
   * lost (the grant is marked compromised), else null.
   */
  renew(renew: (lease: OuterLease) => { expires: number } | { lost: true } | null): LostGrants | null {
    return this.#q.withLatch<LostGrants | null>(() => {
      const w = this.#w, a = this.#a;
      if (w[a + A_OUTER] !== OUTER_HELD || this.compromised) return { value: null, action: ACT_NONE };
      const r = renew(this.lease);
      if (r === null) return { value: null, action: ACT_NONE };
      if ('expires' in r) {
        this.#f[(a + A_OUTER_EXPIRES) >> 1] = r.expires;
        return { value: null, action: ACT_NONE };
      }
      w[a + A_OUTER_FLAGS]! |= OUTER_COMPROMISED;
      return { value: heldGrants(this.#q.pool, a), action: ACT_NONE };
    });
  }

  /**
   * The grant of `token` was lost (its session ended): mark it compromised.
   * Returns the lost grants; 'not-taken-up' when that grant was answered to
   * the escalator and not applied yet (ask again soon: its holder must be
   * told too); null when the seat holds another grant or none.
   */
  compromise(token: number): LostGrants | 'not-taken-up' | null {
    return this.#q.withLatch<LostGrants | 'not-taken-up' | null>(() => {
      const w = this.#w, f = this.#f, a = this.#a, outer = w[a + A_OUTER];
      if (outer === OUTER_ACQUIRING && f[(a + A_OUTER_REP_TOKEN) >> 1] === token) return { value: 'not-taken-up' as const, action: ACT_NONE };
      if ((outer !== OUTER_HELD && outer !== OUTER_RELEASING) || f[(a + A_OUTER_TOKEN) >> 1] !== token) return { value: null, action: ACT_NONE };
      w[a + A_OUTER_FLAGS]! |= OUTER_COMPROMISED;
      return { value: heldGrants(this.#q.pool, a), action: ACT_NONE };
    });
  }

  /** Give the grant back if it has lingered (served nobody) long enough by `now` (epoch ms), or its budget is spent. */
  releaseIfIdle(now: number): void {
    this.#q.withLatch(() => ({ value: undefined, action: lingerDue(this.#q.place, this.#q.tid, now) }));
  }

  // --- the helper thread's mailbox (one request and one answer at a time) -------

  readonly mailbox = {
    /** Post request `op` (the outer tier's code); its number. Called by the name's one outer actor. */
    post: (op: number): number => {
      const w = this.#w, a = this.#a, seq = (Atomics.load(w, a + A_OUTER_REQ) + 1) | 0;
      Atomics.store(w, a + A_OUTER_REQ_OP, op);
      Atomics.store(w, a + A_OUTER_REQ, seq); // last: the helper reads the number, then the op
      return seq;
    },
    /** The latest request: its number (0: none ever) and op. */
    request: (): { seq: number; op: number } => {
      const seq = Atomics.load(this.#w, this.#a + A_OUTER_REQ);
      return { seq, op: Atomics.load(this.#w, this.#a + A_OUTER_REQ_OP) };
    },
    /** Answer request `seq`, and ring the bell. */
    reply: (seq: number, result: number, token = 0): void => {
      const w = this.#w, a = this.#a;
      this.#f[(a + A_OUTER_REP_TOKEN) >> 1] = token;
      Atomics.store(w, a + A_OUTER_REP_RESULT, result);
      Atomics.store(w, a + A_OUTER_REP, seq); // last: the requester reads the number, then the result
      this.ring();
    },
    /** The answer to request `seq`, or null while there is none. */
    answer: (seq: number): { result: number; token: number } | null => {
      const w = this.#w, a = this.#a;
      if (Atomics.load(w, a + A_OUTER_REP) !== seq) return null;
      return { result: Atomics.load(w, a + A_OUTER_REP_RESULT), token: this.#f[(a + A_OUTER_REP_TOKEN) >> 1]! };
    },
    /** Whether the latest request has been answered. */
    idle: (): boolean => Atomics.load(this.#w, this.#a + A_OUTER_REP) === Atomics.load(this.#w, this.#a + A_OUTER_REQ),
  };
}

