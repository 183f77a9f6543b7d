/**
 * What the cluster agent (agent.ts) asks of a cluster engine: a server that
 * keeps the locks of every machine that reaches it (PostgreSQL:
 * postgres.ts). The agent is one thread per process and owns the engine and
 * its connections; requesting threads never talk to the server. The threads
 * of a process share one grant per name (cohorting), so the engine is asked
 * for a name only by the agent, at most one acquisition per name at a time,
 * and holds at most one grant per name.
 *
 * Names reach the engine as store keys (bridge/keys.ts): always well-formed.
 *
 * Changes for issue 14 (each is marked below, with why):
 * - AcquireOptions.deadline: the engine ends a wait at the request's
 *   deadline itself (PostgreSQL: lock_timeout in the server, exact and with
 *   no message), and rejects with EngineError kind 'timeout'. `signal` is
 *   now only the requester's abort (a cancel).
 * - release(key, token, abandoned): by token, and its effect is immediate
 *   (the grant is forgotten at once, the key may be acquired again at
 *   once); the promise says when the server has it, and the agent does not
 *   wait for it: a release is never on anybody's path.
 * - othersWaiting(key) is local and synchronous (what the engine has
 *   learned: knocks, a grant that came after a wait); othersWaitingExact(key)
 *   asks the server (one round trip), once per cohort budget.
 * - EngineEvents.wanted(key): another process started to wait for a name
 *   this process holds (PostgreSQL: a knock), so that a grant nobody local
 *   uses goes back at once and no new local pass starts.
 * - EngineError and its kinds 'config', 'timeout', 'version', 'unsupported'.
 * - close(): the process exits.
 * And for Redis (issue 15): the kinds 'eviction' and 'readonly', and
 * ClusterEntry.expires (a lease's end, where the engine has leases). None
 * is engine-specific: an engine that has no use for one never produces it.
 */
export type LockMode = 'exclusive' | 'shared';

export interface EngineGrant {
  /** Fencing token from the server: strictly increasing per name, across holders, crashes and restarts. */
  readonly token: number;
  /** The previous holder died holding it (or lost it): what it guarded may be half-written. */
  readonly abandoned: boolean;
}

export interface AcquireOptions {
  readonly mode: LockMode;
  /** ifAvailable: one attempt; resolve null when it cannot be granted now. */
  readonly once: boolean;
  /** Take it from whoever holds it (they are told); only where the engine supports it (else EngineError 'unsupported'). */
  readonly steal: boolean;
  /** Lease, ms, where the engine has leases (renewed by the engine itself, in the agent thread). */
  readonly ttl: number;
  /**
   * When the request times out, as this thread's
   * performance.now() ms (Infinity: never). The engine ends the wait then,
   * having left every queue and holding nothing, and rejects with
   * EngineError kind 'timeout'. Why: a server can end a wait by itself at
   * the right moment (PostgreSQL's lock_timeout), where a timeout sent as
   * an abort costs a cancel on another connection and races the grant.
   */
  readonly deadline: number;
  /**
   * The requester's abort (a cancel; the timeout is `deadline`): leave
   * the queue, hold nothing, reject with the signal's reason.
   */
  readonly signal: AbortSignal;
}

export type EngineLoss = 'owner-changed' | 'expired' | 'stolen' | 'renew-failed';

/** What the engine tells the agent on its own (from its connections), at any time. */
export interface EngineEvents {
  /** This process's grant of `key` (its token) was lost: its holders are told ERR_LOCK_COMPROMISED at once. */
  lost(key: string, token: number, reason: EngineLoss, detail: string): void;
  /**
   * Another process now waits for `key`, which this process holds (othersWaiting(key) is true from now on). The agent tells
   * the cohort: a grant nobody local uses goes back at once, and no new
   * local pass starts. At most once per grant; an engine that cannot tell
   * never calls it.
   */
  wanted(key: string): void;
}

export interface ClusterEntry {
  readonly name: string;
  readonly mode: LockMode;
  readonly state: 'held' | 'pending';
  readonly owner: string;
  readonly pid: number;
  readonly host: string;
  readonly token: number;
  readonly since: number;
  /** a held entry's lease end, epoch ms on the server's clock, where the engine has leases. */
  readonly expires?: number;
}

/**
 * Why a call failed, for a message the requesting thread can rebuild
 * (cluster.ts agentError):
 *   unreachable  connect failed, the connection was lost, the server went silent
 *   refused      authentication
 *   rights       the role cannot create or use latchkey's tables and functions
 *   config       the URL names no usable server or database (a database that does not exist)
 *   version      the server is too old for the engine
 *   timeout      the deadline passed while waiting (→ ERR_LOCK_TIMEOUT)
 *   unsupported  an option the engine cannot do (steal, on PostgreSQL)
 *   eviction     the server may evict lock state (Redis: maxmemory-policy allkeys-*)
 *   readonly     the server is a read-only replica
 *   query        anything else
 */
export type EngineErrorKind =
  'unreachable' | 'refused' | 'rights' | 'config' | 'version' | 'timeout' | 'unsupported' | 'eviction' | 'readonly' | 'query';

/** what an engine rejects with, when it knows the kind itself. */
export class EngineError extends Error {
  readonly kind: EngineErrorKind;
  constructor(kind: EngineErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
  }
}

export interface ClusterEngine {
  /** 'postgres' …: for messages (ERR_LOCK_BACKEND). */
  readonly kind: string;
  /**
   * How long the agent waits before it answers a grant that follows a
   * holder's death (`abandoned`), so that a holder whose process still runs
   * hears of its loss first. PostgreSQL: 100 ms (when the server ends a
   * holder's session, pg_terminate_backend or a dropped connection, it wakes
   * the next waiter as it frees the lock, before the holder's socket closes;
   * measured: the waiter first by up to 15 ms). 0 where the robbed holder is
   * told by the engine itself before the grant (Redis: a revocation message,
   * or its own connection gone). Best effort: tokens fence a late hearer.
   */
  readonly abandonedGraceMs: number;
  /** Take `key` for this process; waits (as the engine waits: in the server, in a queue) unless `once`, until `deadline`. */
  acquire(key: string, options: AcquireOptions): Promise<EngineGrant | null>;
  /**
   * Give this process's grant of `key` (of `token`) back; nothing if it
   * holds no such grant (lost already). At once: when release() returns, the engine no longer holds the grant
   * for the agent (a new acquire() of `key` may follow at once); the
   * promise resolves when the server has it (the agent need not wait).
   * `abandoned`: its last local holder died holding it (the next holder is told).
   */
  release(key: string, token: number, abandoned: boolean): Promise<void>;
  /**
   * Whether another process waits for `key`, as far as this process knows without asking (no I/O): it said so
   * (a knock: events.wanted), or the grant came after a wait. The cohort
   * keeps a grant, and passes it on locally, only while this is false.
   */
  othersWaiting(key: string): boolean;
  /**
   * The same, asked of the server (one round trip): the agent asks it before it renews a cohort budget, so that a waiter the
   * engine could not hear of (a race) waits at most one budget.
   */
  othersWaitingExact(key: string): Promise<boolean>;
  /** Every holder and waiter, of every process and machine. */
  query(): Promise<ClusterEntry[]>;
  /** What kind of failure `err` is. */
  kindOf(err: unknown): EngineErrorKind;
  /**
   * the process exits. Settle what the releases left
   * behind (so that no released grant reads as a death to the next
   * holder), then end the connections. Grants still held are not given
   * back: their holders never let go (the next holder is told, abandoned).
   */
  close(): Promise<void>;
}
