/**
 * The host tier's backend interface: what a process does with a lock that
 * other processes (or, later, machines) share. A backend makes atomic,
 * non-waiting attempts and tells when it may be worth another; waiting,
 * timeouts, cancellation and the cohort live above it (host.ts), once for
 * every backend.
 *
 * Grants are the process's (Owner, identity.ts), not a thread's: any thread
 * of the process, and its lease keeper, may renew or release one by name
 * and token. Every method may return a promise, so that a networked backend
 * (PostgreSQL, Redis) fits unchanged; the local ones (file.ts, sqlite.ts)
 * answer synchronously, which is what lets a worker block in lockSync()
 * on a host lock.
 */
import type { LockMode } from '../../atomics/queue/queue.js';
import type { LossReason } from '../../loss.js';

export type MaybePromise<T> = T | Promise<T>;

export interface AttemptRequest {
  readonly name: string;
  readonly mode: LockMode;
  /** Lease, ms: the grant lapses this long after its last renewal. */
  readonly ttl: number;
  /** Take the lock whoever holds it: they are compromised. */
  readonly steal: boolean;
  /**
   * Publish this process as waiting when it cannot be granted now (query()
   * shows it, cohorts yield to it, and after HOST_FAIR_MS it goes first).
   * False for a one-off attempt (ifAvailable).
   */
  readonly wait: boolean;
  /** When this process began to wait for the name (monotonicMs()), for its place in line. */
  readonly since: number;
}

export type Attempt =
  | {
    readonly granted: true;
    /** Strictly increasing per name, across holders, deaths and takeovers. */
    readonly token: number;
    /** Lease end, epoch ms. */
    readonly expires: number;
    /** The previous holder died holding it, or lost it to an expired lease or a steal. */
    readonly previousDied: boolean;
  }
  | {
    readonly granted: false;
    /** Epoch ms at which to try again even without a wake-up (a lease runs out, a liveness check is due). */
    readonly retryAt: number;
  };

/** Why a renewal found the grant gone. */
export type CompromiseReason = LossReason;

export type Renewal = { readonly expires: number } | { readonly lost: CompromiseReason; readonly detail: string };

export interface HostLockEntry {
  readonly name: string;
  readonly mode: LockMode;
  readonly state: 'held' | 'pending';
  readonly owner: string;
  readonly pid: number;
  readonly host: string;
  /** Held: the grant's token; pending: 0. */
  readonly token: number;
  /** Held: lease end, epoch ms. */
  readonly expires: number;
  /** Epoch ms the grant was made or the wait began. */
  readonly since: number;
}

export interface Backend {
  /** 'file', 'sqlite' …: for messages and the report. */
  readonly kind: string;
  /** Where it keeps its locks (a directory, a database file). */
  readonly location: string;
  /** One atomic attempt; never waits for another holder. */
  attempt(request: AttemptRequest): MaybePromise<Attempt>;
  /** Extend this process's grant of `name`. */
  renew(name: string, token: number, ttl: number): MaybePromise<Renewal>;
  /**
   * Give this process's grant back; a no-op when it holds none of that
   * token (`null`: whatever grant it holds, as recovery and exit do).
   * `abandoned`: its local holder died holding it (the next holder is
   * told). Withdraws a published wait too.
   */
  release(name: string, token: number | null, abandoned: boolean): MaybePromise<void>;
  /** Stop waiting: take back what attempt() published, and any half-taken grant. */
  withdraw(name: string): MaybePromise<void>;
  /** Whether another process waits for `name` (the cohort gives way when one does). */
  othersWaiting(name: string): MaybePromise<boolean>;
  /** Every live holder and waiter of every name. */
  query(): MaybePromise<HostLockEntry[]>;
  /** Call `onChange` when `name` may have changed hands; returns the unwatch. */
  watch(name: string, onChange: () => void): () => void;
  /** This process is done (it exits): remove all it keeps for `names`, and close. */
  close(names?: Iterable<string>): void;
}
