/**
 * The host tier's backend interface: what a process does with a lock that
 * the other processes of the machine share. A backend keeps, per name, a
 * FIFO queue of the processes that wait; a release hands the lock to the
 * oldest live waiter in place and wakes exactly that process through its
 * FIFO (fifo.ts). Timeouts, cancellation and the cohort live above it
 * (host.ts), once for every backend.
 *
 * One backend instance per thread (each has its own descriptors); grants
 * are the process's (Owner, identity.ts), not a thread's: any thread of the
 * process, and its lease keeper, may renew or release one by name and
 * token. Every call is synchronous (the local stores answer at once, which
 * is what lets a worker block in lockSync() on a host lock), and every
 * failure of the store is ERR_LOCK_BACKEND with the system error as its
 * cause (issue 17 item 8).
 *
 * Names reach a backend as store keys (bridge/keys.ts).
 */
import type { LockMode } from '../../atomics/queue/queue.js';
import type { LossReason } from '../../loss.js';
import type { Message } from './fifo.js';

export interface AcquireRequest {
  readonly name: string;
  readonly mode: LockMode;
  /** Lease, ms: the grant lapses this long after its last renewal. */
  readonly ttl: number;
  /** Take the lock whoever holds it: they are compromised (told on their notice FIFO). */
  readonly steal: boolean;
  /** ifAvailable: granted at once or not at all; never queued. */
  readonly once: boolean;
  /** When this process began to wait for the name (monotonicMs()): its place in line. */
  readonly since: number;
}

export interface Grant {
  /** Strictly increasing per name, across holders, deaths and takeovers; a safe integer (records.ts MAX_TOKEN). */
  readonly token: number;
  /** Lease end, epoch ms. */
  readonly expires: number;
  /** The previous holder died holding it, or lost it to an expired lease or a steal. */
  readonly previousDied: boolean;
}

/**
 * A request waiting in a name's queue. Whoever waits for it parks on its
 * FIFO: async escalators through libuv (arm), a blocking lockSync() with
 * readBlocking() (the lease keeper ticks its FIFO for polls and deadlines,
 * `fifo` says where); then it looks again (step).
 */
export interface Waiter {
  readonly name: string;
  /** The path of the FIFO that wakes it ('' when it has none). */
  readonly fifo: string;
  /**
   * Look again (after a message, a poll, a tick): the grant, the ms to
   * sleep before the next look (a message ends the sleep early), or
   * 'restart' when the name's store went away under the wait (acquire anew).
   */
  step(): Grant | number | 'restart';
  /**
   * Call `onWake` once at the next message on the FIFO, from this thread's
   * event loop; with the grant when the message handed the lock over and
   * it checks out (taken in the read callback, no step needed).
   */
  arm(onWake: (grant: Grant | null) => void): void;
  disarm(): void;
  /** Block this thread until a message comes (a grant, a poke, the keeper's tick). */
  readBlocking(): void;
  /** Read a message that is there without blocking; whether there was one. */
  poll(): boolean;
  /** Stop waiting (timeout, abort, failure): leave the queue; a lock handed to it meanwhile goes on at once. */
  leave(): void;
}

export type Attempt =
  | { readonly granted: Grant }
  | { readonly queued: Waiter }
  /** ifAvailable, and it is taken. */
  | { readonly unavailable: true }
  /** Not now: ask again in this many ms (a store made a moment ago waits for the processes that used the one it replaced). */
  | { readonly later: number };

/** Why a renewal found the grant gone. */
export type CompromiseReason = LossReason;

export type Renewal =
  | { readonly expires: number }
  /** `removed`: the store itself went away (the lock directory or the database removed), not another holder. */
  | { readonly lost: CompromiseReason; readonly detail: string; readonly removed?: boolean };

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

/** What `latchkey prune` did (Backend.prune). */
export interface PruneReport {
  /** Names (store keys) whose entries were removed. */
  readonly removed: string[];
  /** Names left as they were, and why: held, waited for, or busy (another process at work on it), or a store that cannot be trusted. */
  readonly kept: Array<{ readonly name: string; readonly why: 'held' | 'waiting' | 'busy' | 'corrupt' }>;
}

export interface Backend {
  /** 'file', 'sqlite': for messages and the report. */
  readonly kind: string;
  /** Where it keeps its locks (a directory, a database file). */
  readonly location: string;
  /** Take `name` now, or queue for it (or, ifAvailable, neither). */
  acquire(request: AcquireRequest): Attempt;
  /**
   * Give this process's grant of `name` back: to the oldest live waiter in
   * place, or free. A no-op when it holds none of that token (`null`:
   * whatever it holds of the name, as recovery and exit do). `abandoned`:
   * its local holder died holding it (the next holder is told).
   */
  release(name: string, token: number | null, abandoned: boolean): void;
  /** Whether another process waits for `name` (one lstat on the file backend): the cohort gives way when one does. */
  waiting(name: string): boolean;
  /** Extend this process's grant of `name` (the lease keeper's), and say whether it is still ours. */
  renew(name: string, token: number, ttl: number): Renewal;
  /** Every live holder and waiter of every name. */
  query(): HostLockEntry[];
  /**
   * Look at the store itself (the lease keeper, every round): a lock
   * directory or a database whose files were removed or replaced is let go
   * of (issue 17 item 1), so that it can be used again.
   */
  checkStore(): void;
  /**
   * Read the process's notice FIFO: `onMessage` hears that a grant of ours
   * was taken (a steal, a takeover) at once, from this thread's event loop,
   * which it never keeps alive (the lease keeper's).
   */
  notices(onMessage: (m: Message) => void): void;
  /**
   * Call `onChange` (from this thread's event loop, never keeping it alive)
   * when this process's grant of `name` may have been taken or its store
   * removed: the lease keeper then checks at once, not at the next renewal.
   * Returns the unwatch.
   */
  watch(name: string, onChange: () => void): () => void;
  /**
   * Remove the entries of names nobody holds or waits for (`only`: of
   * these names only), raising the store's floor to their last tokens first,
   * so that a name used again later starts above every token it had; and
   * what dead processes left. A process about to use a name that goes
   * meanwhile finds it gone and makes it again.
   */
  prune(only?: ReadonlySet<string>): PruneReport;
  /** This thread is done: close its files; with `names` (the process exits), remove what it keeps for them. */
  close(names?: Iterable<string>): void;
}
