/**
 * The bridge's helper threads: one worker per gated table of the process,
 * doing what no requesting thread can be trusted with. For the host table,
 * the lease keeper (host/keeper-thread.ts) renews the host leases the
 * process holds, off every holder's event loop (a thread blocked in its
 * critical section keeps its lease), and watches the backend for the names
 * its threads wait on. For the cluster table, the cluster agent
 * (cluster/agent.ts) owns the process's server connections.
 *
 * Only the main thread starts them: a worker's workers die with that
 * worker. A worker that needs one asks the main thread on a
 * BroadcastChannel (src/process.ts has the main thread serve it).
 *
 * A helper starts in every way Node runs a program (`-e`, `--input-type`,
 * stdin, `--import`, a CommonJS caller): it gets no execArgv of the
 * program's (a Worker inherits them by default, and `--input-type` makes a
 * worker fail at once, `--import` would run the program's preload in it),
 * and its script is found next to this file. Where it cannot start (no
 * script there: latchkey bundled into one file), the table's helper state
 * says so (HELPER_FAILED) and the tier fails its requests with
 * ERR_LOCK_BACKEND: never a grant on a lease nobody renews.
 *
 * Table state (QueueTable.helper): NONE → STARTING (one CAS, by whoever
 * needs it first) → RUNNING or SERVING (set by the thread itself, once it
 * works); FAILED if it could not start; back to NONE when it exits, so the
 * next need starts another.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BroadcastChannel, Worker, getEnvironmentData, isMainThread } from 'node:worker_threads';
import { HELPER_FAILED, HELPER_NONE, HELPER_STARTING, type HelperState } from '../atomics/queue/table.js';
import { debug } from '../observe.js';
import { ERR_LOCK_BACKEND } from '../errors.js';

/** A helper thread, as process.ts wires it. */
export interface HelperSpec {
  /** Where every thread finds the helper's table (worker_threads environment data). */
  readonly key: string;
  /** Its script, relative to this file. */
  readonly script: string;
  /** What it is, for messages ('lease keeper', 'cluster agent'). */
  readonly title: string;
  /** The tier's backend, for ERR_LOCK_BACKEND. */
  readonly backend: string;
  /** After it exits (in the main thread): what it left undone. */
  readonly onExit?: () => void;
  /** It failed to start or died with an error (in the main thread): tell those who relied on it. */
  readonly onFailure?: (message: string) => void;
}

const CHANNEL = 'latchkey:helpers';
const running = new Map<string, Worker>();
/** Helpers whose start this (main) thread puts off: key → ms (deferHelper). */
const deferred = new Map<string, number>();

/**
 * Start the helper of `key` on a timer of `ms` once it is needed in this
 * thread, not within the call that needs it (main thread only; a worker's
 * ask is served at once). `new Worker` takes 4–40 ms of the caller's
 * thread here: the latchkey command (cli/run.ts) so spawns COMMAND first.
 * Only for a program whose event loop turns soon after it takes a host
 * lock: until the keeper runs, the host tier renews the process's leases
 * from the granting thread's event loop (host.ts renewUntilKeeperRuns), and
 * a lockSync() caller that then blocks would keep the keeper from starting
 * at all. Its state is STARTING meanwhile, as while any helper starts.
 */
export function deferHelper(key: string, ms: number): void {
  deferred.set(key, ms);
}

/** The helper's script, or why it cannot be found. */
function scriptOf(spec: HelperSpec): URL | string {
  const base = typeof import.meta.url === 'string' ? import.meta.url : undefined;
  if (base === undefined || !base.startsWith('file:')) return `latchkey's own files cannot be found (import.meta.url is ${String(base)}: bundled?)`;
  const url = new URL(spec.script, base);
  return existsSync(fileURLToPath(url)) ? url : `its script ${fileURLToPath(url)} is missing (latchkey bundled into one file?)`;
}

/**
 * Make sure the helper of `spec` runs, or is being started: a CAS on the
 * table's helper state. Throws ERR_LOCK_BACKEND when it cannot run.
 */
export function ensureHelper(spec: HelperSpec, helper: HelperState): void {
  const state = helper.state;
  if (state === HELPER_FAILED) throw new ERR_LOCK_BACKEND(spec.backend, `the ${spec.title} thread could not start (NODE_DEBUG=latchkey says why)`);
  if (state !== HELPER_NONE) return;
  const script = scriptOf(spec);
  if (typeof script === 'string') {
    helper.set(HELPER_FAILED);
    throw new ERR_LOCK_BACKEND(spec.backend, `cannot start the ${spec.title} thread: ${script}`);
  }
  if (!helper.claim(HELPER_NONE, HELPER_STARTING)) return;
  if (isMainThread) {
    const delay = deferred.get(spec.key);
    if (delay === undefined) start(spec, helper, script);
    // Unless a worker's ask started it meanwhile (or it came and went: NONE, not needed now).
    else setTimeout(() => helper.state === HELPER_STARTING && start(spec, helper, script), delay).unref();
    return;
  }
  const ask = new BroadcastChannel(CHANNEL);
  ask.postMessage(spec.key);
  ask.close();
}

function start(spec: HelperSpec, helper: HelperState, script: URL): void {
  if (running.has(spec.key)) return;
  let thread: Worker;
  try {
    // No execArgv of the program's: see the top of this file.
    thread = new Worker(script, { execArgv: [] });
  } catch (err) {
    fail(spec, helper, (err as Error).message);
    return;
  }
  running.set(spec.key, thread);
  // Never keeps the process alive: at exit the main thread gives the locks back itself.
  thread.unref();
  let failed = false;
  thread.on('error', (err) => {
    failed = true;
    fail(spec, helper, err.message);
  });
  thread.on('exit', (code) => {
    debug('%s thread exited (code %d)', spec.title, code);
    running.delete(spec.key);
    if (!failed) helper.set(HELPER_NONE);
    spec.onExit?.();
  });
}

function fail(spec: HelperSpec, helper: HelperState, message: string): void {
  debug('%s thread failed: %s', spec.title, message);
  helper.set(HELPER_FAILED);
  spec.onFailure?.(message);
}

/**
 * In the main thread: start the helpers workers ask for. `specs` by key;
 * `helperOf(spec, buffer)` is the table's helper state.
 */
export function serveHelpers(specs: readonly HelperSpec[], helperOf: (spec: HelperSpec) => HelperState | undefined): void {
  const channel = new BroadcastChannel(CHANNEL);
  channel.unref(); // never keeps the process alive by itself
  channel.onmessage = (event) => {
    const spec = specs.find((s) => s.key === (event as { data: unknown }).data);
    if (spec === undefined || !(getEnvironmentData(spec.key) instanceof SharedArrayBuffer)) return;
    const helper = helperOf(spec), script = scriptOf(spec);
    if (helper === undefined) return;
    if (typeof script === 'string') fail(spec, helper, script);
    else start(spec, helper, script);
  };
}
