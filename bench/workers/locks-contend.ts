// One contender of bench/locks.ts: loop `await locks.request('bench:locks',
// cb)` with a non-atomic increment of a shared counter inside, until told to
// stop (the bench/gate.ts protocol). Every 16th request is timed.
import { parentPort, workerData } from 'node:worker_threads';
import { locks } from '../../src/index.js';

const { shared } = workerData as { shared: SharedArrayBuffer };
const ctl = new Int32Array(shared); // [0] ready, [1] go, [2] stop, [16] counter
const waits: number[] = [];
let ops = 0;

Atomics.add(ctl, 0, 1);
Atomics.notify(ctl, 0);
Atomics.wait(ctl, 1, 0);
const bump = () => {
  const v = ctl[16]!;
  ctl[16] = v + 1;
};
while (Atomics.load(ctl, 2) === 0) {
  const t0 = (ops & 15) === 0 ? performance.now() : 0;
  await locks.request('bench:locks', bump);
  if (t0 !== 0) waits.push(performance.now() - t0);
  ops++;
}
parentPort!.postMessage({ ops, waits });
