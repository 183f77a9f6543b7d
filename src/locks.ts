/**
 * The front door: `locks.request()` and `locks.query()` as in the Web Locks
 * API (https://w3c.github.io/web-locks/), for every thread of the process
 * (scope 'thread') and every process of the machine (scope 'host'), plus
 * `locks.lock()`/`locks.lockSync()`, the same locks as guards.
 *
 * Every name of a scope has one FIFO request queue in shared memory
 * (atomics/queue/word.ts): thread scope in a table of this process, host
 * scope in the bridge's table, whose queues take a host lock before they
 * grant (bridge/host/host.ts).
 */
import { getEnvironmentData, threadId } from 'node:worker_threads';
import type { Geometry } from './atomics/memory.js';
import type { LockStats } from './atomics/table.js';
import { QueueTable } from './atomics/queue/table.js';
import { type QueueGrant, type QueueRequest, type RequestQueue, StaleQueue } from './atomics/queue/queue.js';
import { type Wait, kNoWait, parseLockOptions } from './atomics/options.js';
import { type LockMode, type LockScope, type LossHandler, Lock, LockGuard } from './lock-guard.js';
import { announceSteal } from './loss.js';
import { hostQuery, hostQueue, hostTable, kDefaultTtl } from './bridge/host/host.js';
import type * as ClusterTier from './bridge/cluster/cluster.js';
import { nameOfStoreKey } from './bridge/keys.js';
import {
  ERR_INVALID_ARG_TYPE, ERR_INVALID_ARG_VALUE, ERR_LOCK_NO_DEFAULT_TABLE, ERR_OUT_OF_RANGE, plainTypeError,
} from './errors.js';
import {
  type LockEventBase, type RequestContext, contentionChannel, debug, observed, requestTracing, stole, waitObserved, traceContext, traceGrant,
  traceCallback, traceRequest, traced, waitFailed,
} from './observe.js';

export interface LockRequestOptions {
  /** `'exclusive'`: one holder at a time; `'shared'`: any number of shared holders, no exclusive one. @default 'exclusive' */
  mode?: LockMode;
  /** Grant only if grantable at once; otherwise the callback gets `null` (lock()/lockSync() return null). @default false */
  ifAvailable?: boolean;
  /**
   * Release every holder of the name and grant this request at once, ahead
   * of the queue. The holders' request() promises reject with an AbortError
   * and their `lock.signal` aborts. Exclusive only; at scope 'cluster', on
   * Redis only (NotSupportedError on PostgreSQL). @default false
   */
  steal?: boolean;
  /** Abort a pending request: it leaves the queue and rejects with the signal's reason. No effect once granted. @default undefined */
  signal?: AbortSignal;
  /**
   * Who the lock excludes. `'thread'`: the threads of this process.
   * `'host'`: every process of this machine (lock directory or SQLite
   * database: bridge/host/host.ts). `'cluster'`: every process of every machine
   * that reaches one server, `LATCHKEY_CLUSTER_URL`: Redis or Valkey
   * (redis://…) or PostgreSQL (postgres://…, also `LATCHKEY_PG_URL`; no
   * `steal`) (bridge/cluster/cluster.ts). The threads of one process share one
   * host or cluster grant between them (cohorting), with the same
   * semantics. @default 'thread'
   */
  scope?: LockScope;
  /** Give up after this many ms: the request leaves the queue and rejects with ERR_LOCK_TIMEOUT. @default Infinity */
  timeout?: number;
  /**
   * Host scope, and cluster scope on Redis: the lease, in ms. A holder
   * process that stops (SIGSTOP, a frozen VM) loses the lock to others this
   * long after its last renewal (on Redis, by the server's clock); leases
   * are renewed by a thread of their own, so a holder blocked in a
   * synchronous call keeps it. A dead holder's lock is taken over at once
   * (on Redis: within 200 ms of its connection closing), whatever the
   * lease. @default 10000
   */
  ttl?: number;
  /**
   * Called once if the lock is lost while held (stolen, or a host lease
   * expired and was taken): the error says why (`reason`). A request()'s
   * promise also rejects with it, and `lock.signal` aborts. @default undefined
   */
  onCompromised?: LossHandler;
}

interface Parsed {
  readonly request: QueueRequest;
  readonly scope: LockScope;
  readonly onLost: LossHandler | undefined;
}

/** Where every thread finds the process's thread-scope queues (worker_threads environment data; src/process.ts). */
export const THREAD_QUEUES_KEY = 'latchkey:locks-table';
/** Thread scope: 4096 names held or waited for at a time, 8192 requests. */
export const kThreadQueuesGeometry: Geometry = { slots: 4096, threads: 256, requests: 8192 };

/**
 * The cluster tier, once process-cluster.ts has set it: index.ts imports
 * that, the latchkey command only for --scope cluster, so that a one-shot
 * `latchkey run` at host scope loads none of it (issue 16).
 */
let clusterTier: typeof ClusterTier | undefined;

/** @internal process-cluster.ts: where the cluster scope's requests go. */
export function setClusterTier(tier: typeof ClusterTier): void {
  clusterTier = tier;
}

function cluster(): typeof ClusterTier {
  // Only an entry point of latchkey's own that forgot process-cluster.ts gets here: a bug, not a usage error.
  if (clusterTier === undefined) throw new Error('latchkey: the cluster tier is not loaded (import process-cluster.js)');
  return clusterTier;
}

let threadTable: QueueTable | undefined;
function threadScope(): QueueTable {
  if (threadTable !== undefined) return threadTable;
  const buffer = getEnvironmentData(THREAD_QUEUES_KEY);
  if (!(buffer instanceof SharedArrayBuffer)) throw new ERR_LOCK_NO_DEFAULT_TABLE();
  return (threadTable = QueueTable.attach(buffer, { onStolen: announceSteal }));
}

const queueOf = (scope: LockScope, name: string): RequestQueue =>
  scope === 'host' ? hostQueue(name) : scope === 'cluster' ? cluster().clusterQueue(name) : threadScope().queue(name);

/**
 * Issue a request on `name`'s queue. A handle can go stale (its slot given
 * back to the table while this thread was not using it, queue/names.ts):
 * the request is refused before anything is queued, and issued again on
 * the name looked up afresh.
 */
function enqueueOn<R>(scope: LockScope, name: string, issue: (q: RequestQueue) => R): { q: RequestQueue; r: R } {
  for (;;) {
    const q = queueOf(scope, name);
    try {
      return { q, r: issue(q) };
    } catch (err) {
      if (!(err instanceof StaleQueue)) throw err;
      (scope === 'host' ? hostTable() : scope === 'cluster' ? cluster().clusterTable() : threadScope()).forget(name);
    }
  }
}

const notSupported = (message: string) => new DOMException(message, 'NotSupportedError');

/**
 * Options in the order the spec checks them
 * (https://w3c.github.io/web-locks/#api-lock-manager-request, steps 6-10),
 * after the WebIDL conversions; latchkey's own options last.
 */
const kDefaults: Parsed = Object.freeze({
  request: Object.freeze({ mode: 'exclusive', ifAvailable: false, steal: false, wait: kNoWait, ttl: kDefaultTtl }),
  scope: 'thread',
  onLost: undefined,
});

function parseOptions(name: string, options: LockRequestOptions | undefined): Parsed {
  if (options === undefined || options === null) {
    if (name.startsWith('-')) throw notSupported(`Names starting with "-" are reserved: ${JSON.stringify(name)}`);
    return kDefaults;
  }
  if (typeof options !== 'object') throw new ERR_INVALID_ARG_TYPE('options', 'an object', options);
  const mode = options.mode === undefined ? 'exclusive' : `${options.mode}`;
  if (mode !== 'exclusive' && mode !== 'shared') {
    throw new TypeError(`The provided value '${mode}' is not a valid enum value of type LockMode`);
  }
  const ifAvailable = Boolean(options.ifAvailable), steal = Boolean(options.steal), { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw plainTypeError('options.signal', 'an AbortSignal', signal); // WebIDL: a plain TypeError, not a subclass
  }
  if (name.startsWith('-')) throw notSupported(`Names starting with "-" are reserved: ${JSON.stringify(name)}`);
  if (steal && ifAvailable) throw notSupported('The "steal" and "ifAvailable" options cannot be used together');
  if (steal && mode !== 'exclusive') throw notSupported('The "steal" option may only be used with "exclusive" locks');
  if (signal !== undefined && (steal || ifAvailable)) {
    throw notSupported('The "signal" option cannot be used with "steal" or "ifAvailable"');
  }
  if (signal?.aborted) throw signal.reason;
  const { scope = 'thread', ttl = kDefaultTtl, onCompromised } = options;
  if (scope !== 'thread' && scope !== 'host' && scope !== 'cluster') {
    throw new ERR_INVALID_ARG_VALUE('options.scope', scope, "it must be 'thread', 'host' or 'cluster'");
  }
  // Where the engine can take a lock from another process (Redis); a PostgreSQL advisory lock cannot be taken from another session.
  if (steal && scope === 'cluster' && !cluster().clusterCanSteal()) throw notSupported('The "steal" option is not supported with scope "cluster" on PostgreSQL');
  if (typeof ttl !== 'number') throw new ERR_INVALID_ARG_TYPE('options.ttl', 'a number', ttl);
  if (!(ttl >= 250 && ttl <= 86_400_000) || !Number.isInteger(ttl)) {
    throw new ERR_OUT_OF_RANGE('options.ttl', 'an integer number of ms from 250 to 86400000', ttl);
  }
  if (onCompromised !== undefined && typeof onCompromised !== 'function') {
    throw new ERR_INVALID_ARG_TYPE('options.onCompromised', 'a function', onCompromised);
  }
  // timeout and signal: the thread tier's parser (TypeError, RangeError, ERR codes).
  const wait: Wait = parseLockOptions({ timeout: options.timeout, signal });
  return { request: { mode, ifAvailable, steal, wait, ttl }, scope, onLost: onCompromised };
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string') throw new ERR_INVALID_ARG_TYPE('name', 'a string', name);
}

function guardOf(name: string, parsed: Parsed, q: RequestQueue, grant: QueueGrant | null, waitedMs = 0, ctx?: RequestContext): LockGuard | null {
  if (ctx !== undefined) traceGrant(ctx, grant, waitedMs);
  if (grant === null) return null;
  const guard = new LockGuard(name, parsed.scope, q, grant, parsed.onLost, waitedMs);
  if (parsed.request.steal && observed()) stole({ ...eventBase(name, parsed), token: guard.token });
  if (guard.held) return guard;
  // Stolen between its grant and now: the caller never had it.
  guard.release();
  throw guard.signal.reason;
}

/** Tell observers a request has to wait; the time it began waiting (0 when nobody observes). */
function contended(name: string, parsed: Parsed): number {
  if (!waitObserved()) return 0;
  const { mode } = parsed.request, { scope } = parsed;
  if (contentionChannel.hasSubscribers) contentionChannel.publish({ name, mode, scope });
  debug('waiting for %s %s lock %s', scope, mode, JSON.stringify(name));
  return performance.now();
}

const since = (start: number) => (start === 0 ? 0 : performance.now() - start);
const eventBase = (name: string, parsed: Parsed): LockEventBase => ({ name, mode: parsed.request.mode, scope: parsed.scope });

/** A wait that ends without the lock: observers hear of a timeout or an abort (when they listened as it began: `start` > 0). */
function failed(err: unknown, name: string, parsed: Parsed, start: number): void {
  if (start !== 0) waitFailed(eventBase(name, parsed), err, parsed.request.wait.timeout, since(start), parsed.request.wait.signal?.aborted === true);
}

/**
 * Take the lock `name`, blocking this thread until it is granted (or
 * `timeout`): a guard, or null with `ifAvailable` when it is taken. Only
 * this thread waits; the others, and this thread's own async requests,
 * cannot run meanwhile, so waiting behind this thread's own request fails
 * at once with ERR_LOCK_DEADLOCK.
 */
function lockSync(name: string, options: IfAvailable): LockGuard | null;
function lockSync(name: string, options?: Waits): LockGuard;
function lockSync(name: string, options?: LockRequestOptions): LockGuard | null;
function lockSync(name: string, options?: LockRequestOptions): LockGuard | null {
  checkName(name);
  const parsed = parseOptions(name, options);
  if (!traced()) return takeSync(name, parsed);
  const ctx = traceContext('lockSync', eventBase(name, parsed), parsed.request);
  return requestTracing.traceSync(() => takeSync(name, parsed, ctx), ctx);
}

function takeSync(name: string, parsed: Parsed, ctx?: RequestContext): LockGuard | null {
  const start = waitObserved() ? performance.now() : 0;
  let issued;
  try {
    issued = enqueueOn(parsed.scope, name, (queue) => queue.requestSync(parsed.request));
  } catch (err) {
    failed(err, name, parsed, start);
    throw err;
  }
  return guardOf(name, parsed, issued.q, issued.r, since(start), ctx);
}

/** Take the lock `name` without blocking the event loop: a guard, or null with `ifAvailable`. */
function lock(name: string, options: IfAvailable): Promise<LockGuard | null>;
function lock(name: string, options?: Waits): Promise<LockGuard>;
function lock(name: string, options?: LockRequestOptions): Promise<LockGuard | null>;
async function lock(name: string, options?: LockRequestOptions): Promise<LockGuard | null> {
  checkName(name);
  const parsed = parseOptions(name, options);
  if (!traced()) return take(name, parsed);
  const ctx = traceContext('lock', eventBase(name, parsed), parsed.request);
  return requestTracing.tracePromise(() => take(name, parsed, ctx), ctx);
}

async function take(name: string, parsed: Parsed, ctx?: RequestContext): Promise<LockGuard | null> {
  const { q, r } = enqueueOn(parsed.scope, name, (queue) => queue.request(parsed.request));
  if (!(r instanceof Promise)) return guardOf(name, parsed, q, r, 0, ctx);
  const start = contended(name, parsed);
  return guardOf(name, parsed, q, await waited(r, name, parsed, start), since(start), ctx);
}

/**
 * The grant a request waited for. An aborted request rejects with the
 * signal's own reason, as the spec's request() does; observers hear of a
 * timeout or an abort.
 */
async function waited<T>(pending: Promise<T>, name: string, parsed: Parsed, start: number): Promise<T> {
  try {
    return await pending;
  } catch (err) {
    const { signal } = parsed.request.wait, reason = signal?.aborted ? signal.reason : err;
    failed(reason, name, parsed, start);
    throw reason;
  }
}

type Callback<T> = (lock: Lock | null) => T | PromiseLike<T>;
type Granted<T> = (lock: Lock) => T | PromiseLike<T>;

// The overloads' option types: `null` (no lock) is possible only with `ifAvailable: true`.
/** Options with `ifAvailable: true`: the callback gets `null`, lock()/lockSync() return null, when the lock is taken. */
export type IfAvailable = LockRequestOptions & { ifAvailable: true };
/** Options without `ifAvailable`: the request waits (or fails), and is never granted `null`. */
export type Waits = LockRequestOptions & { ifAvailable?: false };

// https://w3c.github.io/web-locks/#api-lock-manager-request
/**
 * Request the lock `name` and run `callback` holding it; the lock is
 * released when the callback's promise settles (or it throws), and the
 * returned promise settles as the callback's did. Rejections, never throws.
 */
function request<T>(name: string, callback: Granted<T>): Promise<Awaited<T>>;
function request<T>(name: string, options: IfAvailable, callback: Callback<T>): Promise<Awaited<T>>;
function request<T>(name: string, options: Waits, callback: Granted<T>): Promise<Awaited<T>>;
function request<T>(name: string, options: LockRequestOptions, callback: Callback<T>): Promise<Awaited<T>>;
function request<T>(name: string, optionsOrCallback: LockRequestOptions | Callback<T> | Granted<T>, maybeCallback?: Callback<T> | Granted<T>): Promise<Awaited<T>> {
  let parsed: Parsed, callback: Callback<T>;
  try {
    const options = typeof optionsOrCallback === 'function' ? undefined : optionsOrCallback;
    const cb = typeof optionsOrCallback === 'function' ? optionsOrCallback : maybeCallback;
    name = `${name}`; // WebIDL DOMString
    if (typeof cb !== 'function') throw new TypeError('The "callback" argument must be a function');
    callback = cb as Callback<T>; // given null only with ifAvailable, as the overloads say
    parsed = parseOptions(name, options);
  } catch (err) {
    return Promise.reject(err);
  }
  if (!traced()) return issue(name, parsed, callback);
  const ctx = traceContext('request', eventBase(name, parsed), parsed.request);
  return traceRequest(ctx, () => issue(name, parsed, callback, ctx));
}

/** request(), its arguments checked: queue, wait, run the callback holding the lock, give it back. */
function issue<T>(name: string, parsed: Parsed, callback: Callback<T>, ctx?: RequestContext): Promise<Awaited<T>> {
  return new Promise<Awaited<T>>((resolve, reject) => {
    const { signal } = parsed.request.wait;
    const onLost: LossHandler = (err) => {
      reject(err);
      parsed.onLost?.(err);
    };
    const run = async (): Promise<Awaited<T>> => {
      const { q, r } = enqueueOn(parsed.scope, name, (queue) => queue.request(parsed.request));
      let grant: QueueGrant | null, waitedMs = 0;
      if (r instanceof Promise) {
        const start = contended(name, parsed);
        grant = await waited(r, name, parsed, start);
        waitedMs = since(start);
      } else {
        grant = r;
      }
      const guard = grant === null ? null : new LockGuard(name, parsed.scope, q, grant, onLost, waitedMs);
      if (guard !== null && parsed.request.steal && observed()) stole({ ...eventBase(name, parsed), token: guard.token });
      const grantedAt = ctx === undefined ? 0 : performance.now();
      if (ctx !== undefined) traceGrant(ctx, guard, waitedMs);
      try {
        // The callback never runs inside request() itself, and an abort
        // signalled before it runs still wins (the lock is given back).
        // A grant stolen before its callback ran still runs it, once, as the
        // spec's lock-granted steps do (the callback's task is queued at the
        // grant): its lock.signal is aborted already, and request() has
        // rejected with the steal's AbortError (onLost).
        await null;
        if (signal?.aborted) throw signal.reason;
        if (ctx !== undefined) traceCallback(ctx); // the wait is over; the hold begins
        return await callback(guard === null ? null : guard.view());
      } finally {
        guard?.release(); // a loss was reported through onLost already
        if (ctx !== undefined) ctx.heldMs = performance.now() - grantedAt;
      }
    };
    run().then(resolve, reject);
  });
}

export interface LockInfo {
  name: string;
  mode: LockMode;
  /** `${pid}:${threadId}` of the requesting thread. */
  clientId: string;
}

export interface LockManagerSnapshot {
  held: LockInfo[];
  pending: LockInfo[];
}

// https://w3c.github.io/web-locks/#api-lock-manager-query
/**
 * The held and pending requests of every thread of the process (scope
 * 'thread'), or of every process of the machine (`{ scope: 'host' }`).
 */
async function query(options?: { scope?: LockScope }): Promise<LockManagerSnapshot> {
  const scope = options?.scope ?? 'thread';
  const info = (e: LockInfo) => ({ name: e.name, mode: e.mode, clientId: e.clientId });
  if (scope === 'host') {
    const { held, pending } = hostQuery();
    return { held: held.map(info), pending: pending.map(info) };
  }
  if (scope === 'cluster') {
    const entries = await cluster().clusterQuery(), held: LockInfo[] = [], pending: LockInfo[] = [];
    for (const e of entries) (e.state === 'held' ? held : pending).push(info({ name: nameOfStoreKey(e.name), mode: e.mode, clientId: `${e.host}:${e.pid}` }));
    return { held, pending };
  }
  if (scope !== 'thread') throw new ERR_INVALID_ARG_VALUE('options.scope', scope, "it must be 'thread', 'host' or 'cluster'");
  const held: LockInfo[] = [], pending: LockInfo[] = [];
  for (const q of threadScope().queues()) {
    const name = q.name, snap = q.snapshot();
    const info = (e: { mode: LockMode; client: number }) => ({ name, mode: e.mode, clientId: `${process.pid}:${e.client}` });
    held.push(...snap.held.map(info));
    pending.push(...snap.pending.map(info));
  }
  return { held, pending };
}

/**
 * Counters of the locks taken through `locks` in `scope` (default
 * 'thread'), by name, read from shared memory: every thread's requests,
 * as LockTable.stats() gives them for a table's own locks (acquisitions,
 * contended, waitNs, waitMaxNs, the holders now). For the host and
 * cluster scopes they count this process's grants (the other processes
 * keep their own). A name's counters start when it takes its slot, and
 * start over if an idle name's slot was given back (queue/names.ts).
 * Cost: reading a few words per name in use; nothing is recorded for it.
 */
function stats(options?: { scope?: LockScope }): LockStats[];
function stats(name: string, options?: { scope?: LockScope }): LockStats | undefined;
function stats(nameOrOptions?: string | { scope?: LockScope }, maybeOptions?: { scope?: LockScope }): LockStats[] | LockStats | undefined {
  const byName = typeof nameOrOptions === 'string';
  if (!byName && nameOrOptions !== undefined && (typeof nameOrOptions !== 'object' || nameOrOptions === null)) {
    throw new ERR_INVALID_ARG_TYPE('name', 'a string (or the options, an object)', nameOrOptions);
  }
  const options = byName ? maybeOptions : nameOrOptions;
  if (options !== undefined && (typeof options !== 'object' || options === null)) throw new ERR_INVALID_ARG_TYPE('options', 'an object', options);
  const scope = options?.scope ?? 'thread';
  if (scope !== 'thread' && scope !== 'host' && scope !== 'cluster') {
    throw new ERR_INVALID_ARG_VALUE('options.scope', scope, "it must be 'thread', 'host' or 'cluster'");
  }
  const table = scope === 'host' ? hostTable() : scope === 'cluster' ? cluster().clusterTable() : threadScope();
  return byName ? table.stats(nameOrOptions) : table.stats();
}

/** The lock manager: one for every thread of the process, the same locks in each. */
export const locks = Object.freeze({ request, query, lock, lockSync, stats });

/** @internal The clientId of this thread in query() results. */
export const clientId = `${process.pid}:${threadId}`;
