// One contender: take the semaphore's one permit (or the mutex), bump a shared
// counter non-atomically, give it back, until told to stop.
import { parentPort, workerData } from 'node:worker_threads';
import { LockTable } from '../../src/index.js';

const { kind, table, shared } = workerData as { kind: 'semaphore' | 'mutex'; table: SharedArrayBuffer; shared: SharedArrayBuffer };
// shared: [0] ready count, [1] go, [2] stop, [16] counter (own cache line)
const ctl = new Int32Array(shared);
const t = LockTable.attach(table);
let ops = 0;

Atomics.add(ctl, 0, 1);
Atomics.notify(ctl, 0);
Atomics.wait(ctl, 1, 0);
if (kind === 'semaphore') {
  const s = t.semaphore('bench:contended-semaphore', 1);
  while (Atomics.load(ctl, 2) === 0) {
    const g = s.acquireSync();
    ctl[16] = ctl[16] + 1;
    g.release();
    ops++;
  }
} else {
  const m = t.mutex('bench:contended-mutex');
  while (Atomics.load(ctl, 2) === 0) {
    const g = m.lockSync();
    ctl[16] = ctl[16] + 1;
    g.unlock();
    ops++;
  }
}
parentPort!.postMessage({ ops });
