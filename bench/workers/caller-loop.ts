/**
 * The uncontended fast path as a caller's own loop sees it: a worker that
 * imports the package's entry point, takes LockTable.default().mutex(name)
 * and runs loops of N iterations of each form, interleaved with the floor
 * (one CAS + one store on a shared word, in the same loop shape), for
 * `rounds` rounds. It posts, per form, the median over the rounds (the first
 * quarter dropped: optimisation) of the wall time and of the CPU time per
 * iteration. CPU time is process.cpuUsage() while the loop runs, the main
 * thread idling: on a shared machine it leaves out the slices other
 * processes take, and still counts the GC this thread's garbage costs.
 *
 * Long loops on purpose: a per-iteration allocation (the guard a caller
 * keeps) is paid back in scavenges, which the median of short batches
 * (tinybench's p50 of 1000 operations) leaves out.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { LockTable } from '../../src/index.js';
import { futexLock, futexUnlock } from '../futex.js';

const { name, rounds, n } = workerData as { name: string; rounds: number; n: number };
const m = LockTable.default().mutex(name);
const word = new Int32Array(new SharedArrayBuffer(64));

// Each its own function: a caller's loop is monomorphic, and so is each of these.
const forms: Record<string, (n: number) => void> = {
  floor(count) {
    for (let i = 0; i < count; i++) {
      if (Atomics.compareExchange(word, 0, 0, 1) === 0) Atomics.store(word, 0, 0);
    }
  },
  futex(count) {
    for (let i = 0; i < count; i++) {
      futexLock(word, 4);
      futexUnlock(word, 4);
    }
  },
  'm.lockSync(); m.unlock()'(count) {
    for (let i = 0; i < count; i++) {
      m.lockSync();
      m.unlock();
    }
  },
  'const g = m.lockSync(); g.unlock()'(count) {
    for (let i = 0; i < count; i++) {
      const g = m.lockSync();
      g.unlock();
    }
  },
  'm.tryLock()!.unlock()'(count) {
    for (let i = 0; i < count; i++) m.tryLock()!.unlock();
  },
};

const names = Object.keys(forms);
const wall: Record<string, number[]> = {}, cpu: Record<string, number[]> = {};
for (const k of names) {
  wall[k] = [];
  cpu[k] = [];
}
for (let r = 0; r < rounds; r++) {
  for (const k of names) {
    const c0 = process.cpuUsage(), t0 = performance.now();
    forms[k]!(n);
    const t1 = performance.now(), c = process.cpuUsage(c0);
    wall[k]!.push(((t1 - t0) * 1e6) / n);
    cpu[k]!.push(((c.user + c.system) * 1e3) / n);
  }
}
const median = (xs: number[]) => {
  const s = xs.slice(rounds >> 2).sort((a, b) => a - b);
  return s[s.length >> 1]!;
};
parentPort!.postMessage(Object.fromEntries(names.map((k) => [k, { wallNs: median(wall[k]!), cpuNs: median(cpu[k]!) }])));
