/**
 * The bridge threads, main-thread side: one worker per gated table of the
 * process that does what no requesting thread can be trusted with. For the
 * host table, the lease keeper (keeper-thread.ts) renews the host leases
 * the process holds and watches the backend for the names its threads wait
 * on, so that neither depends on any holder's event loop (a thread blocked
 * in its critical section keeps its lease). For the cluster table, the
 * cluster agent (cluster/agent.ts) owns the process's PostgreSQL
 * connections and does every query on them.
 *
 * Only the main thread starts them: a worker's workers die with that
 * worker. A worker that needs one first asks the main thread on a
 * BroadcastChannel; until it runs, host waiters poll (retryAt), cluster
 * requests wait for it.
 *
 * Table word H_KEEPER: KEEPER_NONE → KEEPER_STARTING (one CAS, by whoever
 * needs it first) → KEEPER_RUNNING (the thread, once it works); back to
 * KEEPER_NONE when it exits, so the next need starts another.
 */
import { debuglog } from 'node:util';
import { BroadcastChannel, Worker, getEnvironmentData, isMainThread } from 'node:worker_threads';
import { H_KEEPER, KEEPER_NONE, KEEPER_STARTING } from '../atomics/layout.js';

const debug = debuglog('latchkey');

/** Where every thread finds the process's host table (worker_threads environment data). */
export const HOST_TABLE_KEY = 'latchkey:host-table';
/** …and its cluster table. */
export const CLUSTER_TABLE_KEY = 'latchkey:cluster-table';
const scripts: Record<string, string> = { [HOST_TABLE_KEY]: './host/keeper-thread.js', [CLUSTER_TABLE_KEY]: './cluster/agent.js' };
const CHANNEL = 'latchkey:keeper';
const running = new Map<string, Worker>();

/** Make sure the bridge thread of the table under env key `key` (words `w`) runs, or is being started. */
export function ensureKeeper(w: Int32Array, key = HOST_TABLE_KEY): void {
  if (Atomics.load(w, H_KEEPER) !== KEEPER_NONE) return;
  if (Atomics.compareExchange(w, H_KEEPER, KEEPER_NONE, KEEPER_STARTING) !== KEEPER_NONE) return;
  if (isMainThread) {
    start(key, w);
    return;
  }
  const ask = new BroadcastChannel(CHANNEL);
  ask.postMessage(key);
  ask.close();
}

function start(key: string, w: Int32Array): void {
  if (running.has(key) || scripts[key] === undefined) return;
  const thread = new Worker(new URL(scripts[key]!, import.meta.url));
  running.set(key, thread);
  // Never keeps the process alive: at exit the main thread gives the locks back itself.
  thread.unref();
  thread.on('error', (err) => debug('%s thread failed: %s', key, err.message));
  thread.on('exit', (code) => {
    debug('%s thread exited (code %d)', key, code);
    running.delete(key);
    Atomics.store(w, H_KEEPER, KEEPER_NONE);
    // What lingered for it to give back goes now; the next grant starts another.
    if (key === HOST_TABLE_KEY) {
      void import('./host/host.js').then((host) => host.releaseLingering()).catch((err: Error) => debug('%s', err.message));
    }
  });
}

// The main thread starts the bridge threads workers need.
if (isMainThread) {
  const channel = new BroadcastChannel(CHANNEL);
  channel.unref(); // never keeps the process alive by itself
  channel.onmessage = (event) => {
    const key = (event as { data: unknown }).data;
    if (typeof key !== 'string') return;
    const buffer = getEnvironmentData(key);
    if (buffer instanceof SharedArrayBuffer) start(key, new Int32Array(buffer));
  };
}
