/**
 * Everything that happens when latchkey is imported, in order. Nothing here
 * makes a table, opens a lock directory or a database, loads a driver or
 * starts a thread: each of those happens on first use, in whichever thread
 * needs it. What import does (this file, then the two tiers that have a
 * file of their own, process-cluster.ts and process-default.ts: index.ts
 * imports all three; the latchkey command imports this one, and
 * process-cluster.ts only for --scope cluster, so that a one-shot
 * `latchkey run` loads neither the cluster tier nor the primitives: issue 16):
 *
 * 0. Observers: the main thread shares a 4-byte count of the threads that
 *    listen for host events, and this thread notices when it subscribes to
 *    `latchkey:host` (observe.ts watchObservers).
 * 1. Threads: this thread starts watching the workers it starts and its own
 *    end, so that a thread that dies holding locks is recovered
 *    (atomics/threads.ts watchThreads).
 * 2. The process's tables, in the main thread: four tables reserved unborn
 *    (atomics/memory.ts: a growable SharedArrayBuffer of 64 bytes each) and
 *    put in worker_threads environment data, so that every worker started
 *    after this import reaches the same ones. Each is made, at its full
 *    size, by the first thread that uses it:
 *      the thread-scope queues        locks.request()            ~1.8 MB
 *      the host-scope queues          { scope: 'host' }          ~0.5 MB
 *      the cluster-scope queues       { scope: 'cluster' }       ~0.5 MB  (process-cluster.ts)
 *      the default LockTable          LockTable.default()        ~0.8 MB  (process-default.ts)
 *    If another copy of latchkey in the process reserved them first, its
 *    tables are used.
 * 3. Recovery: every thread watches the process's tables, born or not, for
 *    the workers it starts (a gated table's recovery gives back what its
 *    outer lock held for a dead thread).
 * 4. Helper threads, in the main thread: it starts the lease keeper, or
 *    the cluster agent (process-cluster.ts), when a worker asks
 *    (bridge/helper-threads.ts).
 * 5. Exit: the main thread gives back the host locks it holds, and then
 *    waits (up to 1 s) for the cluster agent's last releases
 *    (process-cluster.ts); a worker closes its host backend's files. Each
 *    does nothing for a tier never used.
 */
import { getEnvironmentData, isMainThread, setEnvironmentData } from 'node:worker_threads';
import { watchReserved, watchThreads } from './atomics/threads.js';
import { type Geometry, reserveBuffer } from './atomics/memory.js';
import { QUEUE_KINDS, helperState } from './atomics/queue/table.js';
import type { KindOps, TableRecovery } from './atomics/core.js';
import { queueRecovery } from './atomics/queue/recovery.js';
import type { OuterLock } from './atomics/queue/outer.js';
import { THREAD_QUEUES_KEY, kThreadQueuesGeometry } from './locks.js';
import { HOST_TABLE_KEY, hostExit, hostOuter, kHostGeometry, keeperSpec } from './bridge/host/host.js';
import { type HelperSpec, serveHelpers } from './bridge/helper-threads.js';
import { watchObservers } from './observe.js';

// 0. Observers.
watchObservers();

// 1. Threads.
watchThreads();

/**
 * Steps 2 and 3 for one of the process's tables: reserve it (main thread,
 * unless a copy of latchkey did) and watch it for the workers this thread
 * starts. `kinds`: what its recovery needs of each kind it holds.
 */
export function reserveTable(key: string, geometry: Geometry, kinds: ReadonlyArray<KindOps | undefined>, recover?: TableRecovery): void {
  if (isMainThread && !(getEnvironmentData(key) instanceof SharedArrayBuffer)) setEnvironmentData(key, reserveBuffer(geometry));
  const buffer = getEnvironmentData(key);
  // A worker started before the main thread imported latchkey has none: its requests say so.
  if (buffer instanceof SharedArrayBuffer) watchReserved(buffer, kinds, recover);
}

/** Step 4 for `specs`: in the main thread, start their helpers when a worker asks. */
export function serveHelpersOf(specs: readonly HelperSpec[]): void {
  if (!isMainThread) return;
  serveHelpers(specs, (spec) => {
    const buffer = getEnvironmentData(spec.key);
    return buffer instanceof SharedArrayBuffer ? helperState(buffer) : undefined;
  });
}

// 2 and 3. The thread-scope and host-scope queue tables, reserved (main thread) and watched (every thread).
const tables: Array<{ key: string; geometry: Geometry; outer?: OuterLock }> = [
  { key: THREAD_QUEUES_KEY, geometry: kThreadQueuesGeometry },
  { key: HOST_TABLE_KEY, geometry: kHostGeometry, outer: hostOuter },
];
for (const { key, geometry, outer } of tables) reserveTable(key, geometry, QUEUE_KINDS, queueRecovery(outer && (() => outer)));

// 4. Helper threads.
serveHelpersOf([keeperSpec]);

// 5. Exit.
process.once('exit', () => hostExit(isMainThread));
