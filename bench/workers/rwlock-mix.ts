// One worker of the read-mostly workload: loop until told to stop, each
// operation a read (readPct %) or a write of an 8-word record, under the
// RWLock ('rwlock': read share or write lock) or under one Mutex ('mutex':
// the same workload serialised). Readers check every snapshot is whole.
import { parentPort, workerData } from 'node:worker_threads';
import { LockTable } from '../../src/index.js';

const { kind, table, shared, readPct, inside, seed } = workerData as {
  kind: 'rwlock' | 'mutex'; table: SharedArrayBuffer; shared: SharedArrayBuffer; readPct: number; inside: number; seed: number;
};
// shared: [0] ready count, [1] go, [2] stop; record at [16..23] (its own cache line)
const ctl = new Int32Array(shared);
const rec = new Int32Array(shared, 64, 8);
const t = LockTable.attach(table);
const rw = t.rwlock('bench:rw');
const m = t.mutex('bench:rw-mutex');
let sink = 0, ops = 0, reads = 0, torn = 0;
let x = seed | 1;
const rand100 = () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) % 100; };

function section(n: number): void {
  for (let k = 0; k < n; k++) sink = (sink + k) | 0;
}

function read(): void {
  const v = rec[0];
  for (let k = 1; k < 8; k++) if (rec[k] !== v) torn++;
  section(inside);
}

function write(): void {
  const v = rec[0]! + 1;
  for (let k = 0; k < 8; k++) rec[k] = v;
  section(inside);
}

Atomics.add(ctl, 0, 1);
Atomics.notify(ctl, 0);
Atomics.wait(ctl, 1, 0);
if (kind === 'rwlock') {
  while (Atomics.load(ctl, 2) === 0) {
    if (rand100() < readPct) {
      const g = rw.readLockSync();
      read();
      g.unlock();
      reads++;
    } else {
      const g = rw.writeLockSync();
      write();
      g.unlock();
    }
    ops++;
  }
} else {
  while (Atomics.load(ctl, 2) === 0) {
    const g = m.lockSync();
    if (rand100() < readPct) {
      read();
      reads++;
    } else {
      write();
    }
    g.unlock();
    ops++;
  }
}
parentPort!.postMessage({ ops, reads, torn, sink });
