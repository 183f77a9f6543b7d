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
}

/** Why a call failed, for a message the requesting thread can rebuild (cluster.ts agentError). */
export type EngineErrorKind = 'unreachable' | 'refused' | 'rights' | 'query';

export interface ClusterEngine {
  /** 'postgres' …: for messages (ERR_LOCK_BACKEND). */
  readonly kind: string;
  /** Take `key` for this process; waits (as the engine waits: in the server, in a queue) unless `once`. */
  acquire(key: string, options: AcquireOptions): Promise<EngineGrant | null>;
  /** Give this process's grant of `key` back. `abandoned`: its last local holder died holding it (the next holder is told). */
  release(key: string, mode: LockMode, abandoned: boolean): Promise<void>;
  /** Whether another process waits for `key` (the cohort keeps a grant only while none does). */
  othersWaiting(key: string): Promise<boolean>;
  /** Every holder and waiter, of every process and machine. */
  query(): Promise<ClusterEntry[]>;
  /** What kind of failure `err` is. */
  kindOf(err: unknown): EngineErrorKind;
}
