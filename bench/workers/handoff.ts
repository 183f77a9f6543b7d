// Hand-off latency between two threads, A and B, taking turns: the holder
// waits until the other has parked, stamps the time, releases; the other
// stamps the time it got through. Clock: process.hrtime (one clock for all threads).
import { parentPort, workerData } from 'node:worker_threads';
import { LockTable } from '../../src/index.js';

const { kind, table, shared, me, rounds } = workerData as {
  kind: 'latchkey' | 'raw'; table: SharedArrayBuffer; shared: SharedArrayBuffer; me: 0 | 1; rounds: number;
};
// ctl: [1] round being waited for, [2] raw bell, [3] start barrier, [4] rounds done; f64 at byte 64: release stamp
const ctl = new Int32Array(shared);
const stamps = new Float64Array(shared, 64, 2);
const m = LockTable.attach(table).mutex('bench:handoff');
const now = () => Number(process.hrtime.bigint());
const latencies: number[] = [];
const spinFor = (us: number) => { const end = now() + us * 1000; while (now() < end); };

let guard = me === 0 ? m.lockSync() : null; // A holds first
Atomics.add(ctl, 3, 1);
while (Atomics.load(ctl, 3) < 2);
for (let r = 0; r < rounds; r++) {
  if ((r + 1) % 2 === me) {
    // Waiter: start only once the previous round's waiter holds the lock.
    while (Atomics.load(ctl, 4) !== r);
    if (kind === 'latchkey') {
      Atomics.store(ctl, 1, r + 1);
      guard = m.lockSync();
    } else {
      const bell = Atomics.load(ctl, 2);
      Atomics.store(ctl, 1, r + 1);
      Atomics.wait(ctl, 2, bell);
    }
    latencies.push(now() - stamps[0]);
    Atomics.store(ctl, 4, r + 1);
  } else {
    // Holder: wait until the other thread waits, let it park, then release.
    while (Atomics.load(ctl, 1) !== r + 1);
    spinFor(300); // past the 64-read spin, well under the 1 ms heir threshold
    stamps[0] = now();
    if (kind === 'latchkey') {
      guard!.unlock();
      guard = null;
    } else {
      Atomics.add(ctl, 2, 1);
      Atomics.notify(ctl, 2);
    }
  }
}
guard?.unlock();
parentPort!.postMessage({ latencies });
