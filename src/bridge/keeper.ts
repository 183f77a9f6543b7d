/**
 * The lease keeper, main-thread side: one worker per process (keeper-thread.ts)
 * that renews the host leases the process holds and watches the backend for
 * the names its threads wait on, so that neither depends on any holder's
 * event loop (a thread blocked in its critical section keeps its lease).
 *
 * Only the main thread starts it: a worker's workers die with that worker.
 * A worker that needs it first asks the main thread on a BroadcastChannel;
 * until it runs, waiters poll (retryAt) and nothing is lost but speed.
 *
 * Host table word H_KEEPER: KEEPER_NONE → KEEPER_STARTING (one CAS, by
 * whoever needs it first) → KEEPER_RUNNING (the keeper, once it watches);
 * back to KEEPER_NONE when it exits, so the next need starts another.
 */
import { debuglog } from 'node:util';
import { BroadcastChannel, Worker, getEnvironmentData, isMainThread } from 'node:worker_threads';
import { H_KEEPER, KEEPER_NONE, KEEPER_STARTING } from '../atomics/layout.js';

const debug = debuglog('latchkey');

/** Where every thread finds the process's host table (worker_threads environment data). */
export const HOST_TABLE_KEY = 'latchkey:host-table';
const CHANNEL = 'latchkey:keeper';
let keeper: Worker | undefined;

/** Make sure the keeper runs, or is being started, for the host table `w`. */
export function ensureKeeper(w: Int32Array): void {
  if (Atomics.load(w, H_KEEPER) !== KEEPER_NONE) return;
  if (Atomics.compareExchange(w, H_KEEPER, KEEPER_NONE, KEEPER_STARTING) !== KEEPER_NONE) return;
  if (isMainThread) {
    start(w);
    return;
  }
  const ask = new BroadcastChannel(CHANNEL);
  ask.postMessage('start');
  ask.close();
}

function start(w: Int32Array): void {
  if (keeper !== undefined) return;
  keeper = new Worker(new URL('./keeper-thread.js', import.meta.url));
  // Never keeps the process alive: at exit the main thread gives the leases back itself.
  keeper.unref();
  keeper.on('error', (err) => debug('lease keeper failed: %s', err.message));
  keeper.on('exit', (code) => {
    debug('lease keeper exited (code %d)', code);
    keeper = undefined;
    Atomics.store(w, H_KEEPER, KEEPER_NONE);
    // What lingered for it to give back goes now; the next grant starts another keeper.
    void import('./host.js').then((host) => host.releaseLingering()).catch((err: Error) => debug('%s', err.message));
  });
}

// The main thread starts the keeper for workers that need it.
if (isMainThread) {
  const channel = new BroadcastChannel(CHANNEL);
  channel.unref(); // never keeps the process alive by itself
  channel.onmessage = () => {
    const buffer = getEnvironmentData(HOST_TABLE_KEY);
    if (buffer instanceof SharedArrayBuffer) start(new Int32Array(buffer));
  };
}
