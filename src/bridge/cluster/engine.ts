/**
 * What the cluster agent (agent.ts) asks of a cluster engine: a server that
 * keeps the locks of every machine that reaches it (PostgreSQL:
 * postgres.ts; Redis: redis.ts). The agent is one thread per process and owns the engine and
 * its connections; requesting threads never talk to the server. The threads
 * of a process share one grant per name (cohorting), so the engine is asked
 * for a name only by the agent, at most one acquisition per name at a time,
 * and holds at most one grant per name.
 *
 * Names reach the engine as store keys (bridge/keys.ts): always well-formed.
 *
 * Additions for Redis (issue 15), each marked ADDED or CHANGED below:
 * EngineEvents.wanted, othersWaiting answered without I/O where the engine
 * can, EngineError and the kinds 'config', 'version', 'eviction',
 * 'readonly', ClusterEntry.expires, close(). None is Redis-specific: an
 * engine that has no use for one leaves it out (optional) or never calls it.
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
  /** Take it from whoever holds it (they are told); only where the engine supports it. */
  readonly steal: boolean;
  /** Lease, ms, where the engine has leases (renewed by the engine itself, in the agent thread). */
  readonly ttl: number;
  /** A timeout or the requester's abort: leave the queue, hold nothing, reject with the signal's reason. */
  readonly signal: AbortSignal;
}

export type EngineLoss = 'owner-changed' | 'expired' | 'stolen' | 'renew-failed';

/** What the engine tells the agent on its own (from its connections), at any time. */
export interface EngineEvents {
  /** This process's grant of `key` (its token) was lost: its holders are told ERR_LOCK_COMPROMISED at once. */
  lost(key: string, token: number, reason: EngineLoss, detail: string): void;
  /**
   * ADDED: another process now waits for `key`, which this process holds
   * (othersWaiting(key) is true from now on). The agent tells the cohort: a
   * grant nobody local uses goes back at once, and the releaser keeps
   * nothing. At most once per grant; an engine that cannot tell never calls it.
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
  /** ADDED: a held entry's lease end, epoch ms on the server's clock, where the engine has leases. */
  readonly expires?: number;
}

/**
 * Why a call failed, for a message the requesting thread can rebuild (cluster.ts agentError):
 *   unreachable  connect failed, the connection was lost, the server went silent
 *   refused      authentication
 *   rights       the user or role lacks what latchkey needs
 *   config       ADDED: the URL names nothing usable (a database that does not exist)
 *   version      ADDED: the server is too old for the engine
 *   eviction     ADDED: the server may evict lock state (Redis: maxmemory-policy allkeys-*)
 *   readonly     ADDED: the server is a read-only replica
 *   query        anything else
 */
export type EngineErrorKind = 'unreachable' | 'refused' | 'rights' | 'query' | 'config' | 'version' | 'eviction' | 'readonly';

/** ADDED: what an engine rejects with when it knows the kind itself (kindOf() then just reads it). */
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
  /** Take `key` for this process; waits (as the engine waits: in the server, in a queue) unless `once`. */
  acquire(key: string, options: AcquireOptions): Promise<EngineGrant | null>;
  /** Give this process's grant of `key` back. `abandoned`: its last local holder died holding it (the next holder is told). */
  release(key: string, mode: LockMode, abandoned: boolean): Promise<void>;
  /**
   * Whether another process waits for `key` (the cohort keeps a grant only
   * while none does). CHANGED: a boolean where the engine knows without
   * I/O (Redis: it was told, events.wanted), a promise where it must ask.
   */
  othersWaiting(key: string): boolean | Promise<boolean>;
  /** Every holder and waiter, of every process and machine. */
  query(): Promise<ClusterEntry[]>;
  /** What kind of failure `err` is. */
  kindOf(err: unknown): EngineErrorKind;
  /**
   * ADDED: the process exits (cluster.ts clusterExit, through the agent).
   * Finish the releases sent, give back what is still held (abandoned: its
   * holders never let go), leave every queue, and disconnect. Bounded:
   * the exit waits for it at most EXIT_MS.
   */
  close?(): Promise<void>;
}
