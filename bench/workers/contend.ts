// One contender: take the lock, bump a shared counter non-atomically, release,
// until told to stop. Every 16th acquire is timed (wait time), for p50/p99.
import { parentPort, workerData } from 'node:worker_threads';
import { LockTable } from '../../src/index.js';
import { futexLock, futexUnlock } from '../futex.js';

const { kind, table, shared, inside, outside } = workerData as {
  kind: 'latchkey' | 'futex'; table: SharedArrayBuffer; shared: SharedArrayBuffer; inside: number; outside: number;
};
// shared: [0] ready count, [1] go, [2] stop, [3] futex word, [16] counter (own cache line)
const ctl = new Int32Array(shared);
const m = LockTable.attach(table).mutex('bench:contended');
const waits = new Float64Array(1 << 16);
let sampled = 0;
let ops = 0;
let sink = 0;

function section(n: number): void {
  for (let k = 0; k < n; k++) sink = (sink + k) | 0;
}

Atomics.add(ctl, 0, 1);
Atomics.notify(ctl, 0);
Atomics.wait(ctl, 1, 0);
if (kind === 'latchkey') {
  while (Atomics.load(ctl, 2) === 0) {
    const timed = (ops & 15) === 0 && sampled < waits.length;
    const t0 = timed ? performance.now() : 0;
    const g = m.lockSync();
    if (timed) waits[sampled++] = performance.now() - t0;
    ctl[16] = ctl[16] + 1;
    section(inside);
    g.unlock();
    section(outside);
    ops++;
  }
} else {
  while (Atomics.load(ctl, 2) === 0) {
    const timed = (ops & 15) === 0 && sampled < waits.length;
    const t0 = timed ? performance.now() : 0;
    futexLock(ctl, 3);
    if (timed) waits[sampled++] = performance.now() - t0;
    ctl[16] = ctl[16] + 1;
    section(inside);
    futexUnlock(ctl, 3);
    section(outside);
    ops++;
  }
}
parentPort!.postMessage({ ops, waits: waits.slice(0, sampled), sink });
