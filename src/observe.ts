/**
 * What latchkey tells an observer: diagnostics_channel channels an APM
 * tool subscribes to, a TracingChannel that wraps every front-door request
 * (so that lock waits can be drawn as spans), and `NODE_DEBUG=latchkey`
 * lines (util.debuglog). The two are independent: events flow to
 * subscribers whether or not NODE_DEBUG is set, and the debug lines print
 * whether or not anybody subscribes.
 *
 * Cost: while nobody listens, a publishing site pays a few property reads
 * (`hasSubscribers`, `debug.enabled`) and builds nothing. The host tier's
 * helper threads (the lease keeper, the cluster agent) add one Atomics.load.
 *
 * Where events are published: in the thread where they happen, as
 * diagnostics_channel always does (subscribe in each thread you want to
 * see: an APM agent loaded with --import does). The exception is
 * `latchkey:host`, the host and cluster tiers' events, which belong to the
 * process: an event published in one thread is also published in every
 * other thread of the process that subscribes to `latchkey:host`
 * (renewals and lost leases happen in the lease keeper, a thread of
 * latchkey's own, where nobody subscribes).
 *
 * Channels, and their messages (types below):
 *   latchkey:acquire      AcquireEvent    a front-door lock was granted
 *   latchkey:release      ReleaseEvent    … and given back
 *   latchkey:contention   ContentionEvent a request has to wait
 *   latchkey:timeout      TimeoutEvent    a request gave up after `timeout` ms (it rejects with ERR_LOCK_TIMEOUT)
 *   latchkey:abort        AbortEvent      a pending request's signal aborted it
 *   latchkey:steal        StealEvent      a request with `steal` was granted (its victims each get a LostEvent)
 *   latchkey:lost         LostEvent       a held lock was lost: stolen, or a host lease expired or taken
 *   latchkey:host         HostEvent       the host (and cluster) tier: grants, takeovers, waits, renewals, losses, hand-offs
 *
 * Tracing: `diagnostics_channel.tracingChannel('latchkey:request')`, one
 * RequestContext per request (request(), lock(), lockSync()), whose
 * events follow Node's TracingChannel conventions:
 *   start       the request is issued (options valid); bound stores
 *               (AsyncLocalStorage) entered here reach the callback
 *   end         request() / lock() returned its promise, lockSync() returned or threw
 *   asyncStart  request(): the lock is granted and the callback is about to run
 *               (start → asyncStart is the wait); lock(): its promise settles
 *   asyncEnd    request(): the callback's promise settled and the lock is
 *               given back (asyncStart → asyncEnd is the hold); lock(): right after asyncStart
 *   error       the request failed (ERR_LOCK_TIMEOUT, an abort, a steal, the callback's throw);
 *               published before asyncStart (if not granted) and asyncEnd, as tracePromise does
 * The context carries `error` or `result` as TracingChannel contexts do,
 * and latchkey's fields (RequestContext) filled in as the request goes.
 */
import { channel, tracingChannel } from 'node:diagnostics_channel';
import { BroadcastChannel, getEnvironmentData, isMainThread, setEnvironmentData } from 'node:worker_threads';
import type { LockMode, LockScope } from './scopes.js';
import type { LossReason } from './loss.js';

import { debug } from './debug.js';

export { debug };

// --- the messages -------------------------------------------------------------

/** What every front-door event says about its lock. */
export interface LockEventBase {
  name: string;
  mode: LockMode;
  scope: LockScope;
}

/** latchkey:acquire */
export interface AcquireEvent extends LockEventBase {
  /** The grant's fencing token (lock.token). */
  token: number;
  /** The previous holder died holding it. */
  abandoned: boolean;
  /** How long the request waited, ms; 0 when it was granted at once. */
  waitedMs: number;
}

/** latchkey:release */
export interface ReleaseEvent extends LockEventBase {
  token: number;
  /** How long it was held, ms. */
  heldMs: number;
}

/** latchkey:contention: the request waits (published once, when it starts to). */
export type ContentionEvent = LockEventBase;

/** latchkey:timeout */
export interface TimeoutEvent extends LockEventBase {
  /** The request's `timeout`, ms. */
  timeout: number;
  waitedMs: number;
}

/** latchkey:abort */
export interface AbortEvent extends LockEventBase {
  waitedMs: number;
  /** The signal's reason (what the request rejects with). */
  reason: unknown;
}

/** latchkey:steal: the stealer's grant. */
export interface StealEvent extends LockEventBase {
  token: number;
}

/** latchkey:lost: published in the holder's thread when it learns of the loss. */
export interface LostEvent extends LockEventBase {
  token: number;
  /** 'stolen' (another request's `steal`), 'expired', 'owner-changed', 'marker-missing', 'renew-failed'. */
  reason: LossReason;
  detail: string;
  /** How long it had been held when the loss was learnt, ms. */
  heldMs: number;
}

/** latchkey:host: one of the host (or, with `scope: 'cluster'`, the cluster) tier's events. */
export type HostEvent =
  /** This process got the host lock from the backend. */
  | { event: 'grant'; name: string; token: number; mode: LockMode }
  /** … taking it over from a holder that died (or whose lease ran out). */
  | { event: 'takeover'; name: string; token: number }
  /** This process waits for another process; it retries in `retryInMs` at the latest. */
  | { event: 'wait'; name: string; retryInMs: number }
  /** The lease keeper renewed a lease (to epoch ms `expires`). */
  | { event: 'renew'; name: string; token: number; expires: number }
  /** A host (or cluster) lock of this process was lost while held. */
  | { event: 'lost'; name: string; reason?: LossReason; detail: string; scope?: 'cluster' }
  /** The process gave the host lock back while its own threads still wait: other processes go first. */
  | { event: 'handoff'; name: string; token: number }
  /** Two names share a cluster advisory-lock key: they exclude each other. */
  | { event: 'collision'; name: string; with: string; scope: 'cluster' };

/** The context of one traced request (TracingChannel 'latchkey:request'). */
export interface RequestContext {
  /** Which front-door call. */
  kind: 'request' | 'lock' | 'lockSync';
  name: string;
  mode: LockMode;
  scope: LockScope;
  ifAvailable: boolean;
  steal: boolean;
  /** ms; Infinity when the request waits as long as it takes. */
  timeout: number;
  /** Set at the grant: false when ifAvailable found it taken (granted null). */
  granted?: boolean;
  token?: number;
  abandoned?: boolean;
  waitedMs?: number;
  /** request(): set when the lock is given back. */
  heldMs?: number;
  /** Set by the tracing: what the call resolved with, or the error it failed with. */
  result?: unknown;
  error?: unknown;
}

// --- the channels ---------------------------------------------------------------

export const acquireChannel = channel('latchkey:acquire');
export const releaseChannel = channel('latchkey:release');
export const contentionChannel = channel('latchkey:contention');
export const timeoutChannel = channel('latchkey:timeout');
export const abortChannel = channel('latchkey:abort');
export const stealChannel = channel('latchkey:steal');
export const lostChannel = channel('latchkey:lost');
export const hostChannel = channel('latchkey:host');
export const requestTracing = tracingChannel<unknown, RequestContext>('latchkey:request');

// Who listens, asked where it matters: each question reads only the channels
// that need what it pays for (a clock reading), a few property reads in all.

/** Whether a grant should note its time: for its acquire, release or lost event, or a debug line. */
export const grantObserved = (): boolean => debug.enabled || acquireChannel.hasSubscribers || releaseChannel.hasSubscribers
  || lostChannel.hasSubscribers;

/** Whether a wait should note its start: for the contention, timeout, abort or acquire event, the tracing's waitedMs, or a debug line. */
export const waitObserved = (): boolean => debug.enabled || acquireChannel.hasSubscribers || contentionChannel.hasSubscribers
  || timeoutChannel.hasSubscribers || abortChannel.hasSubscribers || requestTracing.hasSubscribers;

/** Whether anybody listens to the front door in this thread, for a rare event (a steal, a loss). */
export const observed = (): boolean => grantObserved() || waitObserved() || stealChannel.hasSubscribers;

/** Whether a request should be traced: a TracingChannel subscriber in this thread. */
export const traced = (): boolean => requestTracing.hasSubscribers;

// --- debug lines ---------------------------------------------------------------

/** A duration for a debug line: 0.42 ms, 3.1 ms, 250 ms, 12.3 s. */
export function ms(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const v = Math.max(0, value);
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 10) return `${v.toFixed(1)} ms`;
  if (v < 10_000) return `${Math.round(v)} ms`;
  return `${(v / 1000).toFixed(1)} s`;
}

/** Renewals (and other per-lease repeats) print at most one line per name per this many ms, with a count. */
export const kDebugSummaryMs = 5000;
const summaries = new Map<string, { since: number; count: number }>();

/** Whether a repeating debug line for `key` prints now, and how many it stands for (0: not now). */
function summarised(key: string): number {
  const now = performance.now(), s = summaries.get(key);
  if (s === undefined || now - s.since >= kDebugSummaryMs) {
    const count = (s?.count ?? 0) + 1;
    if (summaries.size > 1024) summaries.clear(); // a process may use any number of names
    summaries.set(key, { since: now, count: 0 });
    return count;
  }
  s.count++;
  return 0;
}

function hostDebugLine(e: HostEvent): void {
  const n = JSON.stringify(e.name);
  switch (e.event) {
    case 'renew': {
      const count = summarised(`renew ${e.name}`);
      if (count === 0) return;
      const times = count === 1 ? '' : ` (${count} renewals in the last ${ms(kDebugSummaryMs)})`;
      debug('host renew %s (host token %d): lease left %s%s', n, e.token, ms(e.expires - Date.now()), times);
      return;
    }
    case 'wait':
      debug('host wait %s: held by another process, retry in %s at the latest', n, ms(e.retryInMs));
      return;
    case 'lost':
      debug('host lost %s%s: %s', n, e.reason === undefined ? '' : ` (${e.reason})`, e.detail);
      return;
    case 'collision':
      debug('cluster collision %s shares its advisory key with %s', n, JSON.stringify(e.with));
      return;
    default:
      debug('host %s %s (host token %d%s)', e.event, n, e.token, e.event === 'grant' ? `, ${e.mode}` : '');
  }
}

// --- latchkey:host, process-wide -------------------------------------------------

/**
 * How host events reach the other threads: a BroadcastChannel, used only
 * while some thread of the process subscribes to latchkey:host. Word 0 of a
 * small shared buffer (worker_threads environment data, like the tables)
 * counts the threads listening on the channel: a thread starts to listen
 * when it subscribes to latchkey:host (or publishes a host event and finds
 * a subscriber of its own), and stops when it exits; a publisher posts only
 * while another thread listens. A thread that unsubscribes keeps
 * listening (and drops what it receives).
 */
/** Where every thread finds the count of listening threads (worker_threads environment data). */
export const OBSERVE_KEY = 'latchkey:observe';
/** Threads listening on the relay (word 0): the main thread shares it (watchObservers()), every thread finds it on first use. */
let listenersWord: Int32Array | undefined;
function listeners(): Int32Array {
  if (listenersWord !== undefined) return listenersWord;
  const shared = getEnvironmentData(OBSERVE_KEY);
  return (listenersWord = shared instanceof SharedArrayBuffer ? new Int32Array(shared) : new Int32Array(1));
}
let relay: BroadcastChannel | undefined;
let listening = false;

function relayChannel(): BroadcastChannel {
  if (relay === undefined) {
    relay = new BroadcastChannel('latchkey:observe');
    relay.unref(); // never keeps a thread alive
  }
  return relay;
}

/** Start receiving the other threads' host events (this thread has a subscriber). */
function listen(): void {
  if (listening) return;
  listening = true;
  Atomics.add(listeners(), 0, 1);
  // A thread that exits stops listening: the others need not post for it.
  process.once('exit', () => Atomics.sub(listeners(), 0, 1));
  relayChannel().onmessage = (message) => {
    if (hostChannel.hasSubscribers) hostChannel.publish((message as { data: HostEvent }).data);
  };
}

/**
 * At import (src/process.ts): the main thread puts the count of listening
 * threads in environment data (4 bytes); every thread finds it, and from
 * now on a thread that subscribes to latchkey:host (diagnostics_channel.
 * subscribe and channel.subscribe both go through this object's subscribe)
 * listens; one that subscribed before importing latchkey, from now.
 */
export function watchObservers(): void {
  if (isMainThread && !(getEnvironmentData(OBSERVE_KEY) instanceof SharedArrayBuffer)) setEnvironmentData(OBSERVE_KEY, new SharedArrayBuffer(4));
  Object.defineProperty(hostChannel, 'subscribe', {
    configurable: true,
    writable: true,
    value: function subscribe(this: object, onMessage: (message: unknown, name: string | symbol) => void): void {
      listen();
      (Object.getPrototypeOf(this) as { subscribe(f: typeof onMessage): void }).subscribe.call(this, onMessage);
    },
  });
  if (hostChannel.hasSubscribers) listen();
}

/**
 * A host-tier event: to this thread's latchkey:host subscribers, to the
 * other threads' (when some thread listens), and to the debug log. A caller
 * that builds its detail first checks hostObserved().
 */
export function hostEvent<E extends HostEvent['event']>(
  event: E, name: string, detail: Omit<Extract<HostEvent, { event: E }>, 'event' | 'name'>,
): void {
  const e = { event, name, ...detail } as unknown as HostEvent;
  if (hostChannel.hasSubscribers) {
    hostChannel.publish(e);
    listen();
  }
  // Others listen: all of them when this thread does not, else all but this one.
  if (Atomics.load(listeners(), 0) > (listening ? 1 : 0)) relayChannel().postMessage(e);
  if (debug.enabled) hostDebugLine(e);
}

/** Whether anybody (in any thread) or NODE_DEBUG wants host events: for a publisher that must build one first. */
export const hostObserved = (): boolean => debug.enabled || hostChannel.hasSubscribers || Atomics.load(listeners(), 0) > 0;

// --- the front door's events ------------------------------------------------------

/** A request failed before its grant: a timeout or an abort, told to observers. */
export function waitFailed(base: LockEventBase, err: unknown, timeout: number, waitedMs: number, aborted: boolean): void {
  if (aborted) {
    if (abortChannel.hasSubscribers) abortChannel.publish({ ...base, waitedMs, reason: err } satisfies AbortEvent);
    debug('aborted the wait for %s %s lock %s after %s', base.scope, base.mode, JSON.stringify(base.name), ms(waitedMs));
  } else if ((err as { code?: unknown })?.code === 'ERR_LOCK_TIMEOUT') {
    if (timeoutChannel.hasSubscribers) timeoutChannel.publish({ ...base, timeout, waitedMs } satisfies TimeoutEvent);
    debug('timed out waiting for %s %s lock %s after %s', base.scope, base.mode, JSON.stringify(base.name), ms(waitedMs));
  }
}

/** A held lock was lost (in its holder's thread). */
export function lockLost(e: LostEvent): void {
  if (lostChannel.hasSubscribers) lostChannel.publish(e);
  debug('lost %s %s lock %s (token %d, %s, held %s): %s', e.scope, e.mode, JSON.stringify(e.name), e.token, e.reason, ms(e.heldMs), e.detail);
}

/** A request with `steal` was granted. */
export function stole(e: StealEvent): void {
  if (stealChannel.hasSubscribers) stealChannel.publish(e);
  debug('stole %s %s lock %s (token %d)', e.scope, e.mode, JSON.stringify(e.name), e.token);
}

// --- tracing the front door ------------------------------------------------------

/** A request's tracing context, before it is issued. */
export function traceContext(
  kind: RequestContext['kind'], base: LockEventBase, req: { ifAvailable: boolean; steal: boolean; wait: { timeout: number } },
): RequestContext {
  return { kind, ...base, ifAvailable: req.ifAvailable, steal: req.steal, timeout: req.wait.timeout };
}

/** The grant, on a traced request's context: `lock` null when ifAvailable found it taken. */
export function traceGrant(ctx: RequestContext, lock: { token: number; abandoned: boolean } | null, waitedMs: number): void {
  ctx.granted = lock !== null;
  if (lock !== null) {
    ctx.token = lock.token;
    ctx.abandoned = lock.abandoned;
  }
  ctx.waitedMs = waitedMs;
}

/** Contexts whose asyncStart was published (request(): as its callback begins). */
const asyncStarted = new WeakSet<RequestContext>();

/** request(): the lock is held and the callback begins (after start and end: never inside request() itself). */
export function traceCallback(ctx: RequestContext): void {
  asyncStarted.add(ctx);
  requestTracing.asyncStart.publish(ctx);
}

/**
 * Trace a request(): start (and its bound stores) around issuing it, end
 * when request() returns; asyncStart as the callback begins (traceCallback),
 * asyncEnd when the promise settles (the lock given back), error before it
 * when it rejects.
 */
export function traceRequest<T>(ctx: RequestContext, issue: () => Promise<T>): Promise<T> {
  const { start, end, asyncStart, asyncEnd, error } = requestTracing;
  return start.runStores(ctx, () => {
    try {
      return issue().then((result) => {
        ctx.result = result;
        asyncEnd.publish(ctx);
        return result;
      }, (err: unknown) => {
        ctx.error = err;
        error.publish(ctx);
        if (!asyncStarted.has(ctx)) asyncStart.publish(ctx); // failed before its callback: as tracePromise does
        asyncEnd.publish(ctx);
        throw err;
      });
    } finally {
      end.publish(ctx);
    }
  });
}
