/**
 * The timed multi-worker run every contended benchmark shares. Workers get
 * `shared` (128 bytes) in their workerData and follow one protocol on it:
 * ctl[0] += 1 and notify when ready, wait for ctl[1] (go), loop until ctl[2]
 * (stop), then post their result. Words 16.. are the workload's own.
 */
import { Worker } from 'node:worker_threads';

export interface GatedRun<T> {
  results: T[];
  /** Milliseconds from go to the last result. */
  elapsed: number;
  ctl: Int32Array;
}

export async function gatedRun<T>(
  script: string, threads: number, ms: number, workerData: (shared: SharedArrayBuffer, index: number) => object,
): Promise<GatedRun<T>> {
  const shared = new SharedArrayBuffer(128);
  const ctl = new Int32Array(shared);
  const workers = Array.from({ length: threads }, (_, i) => new Worker(script, { workerData: workerData(shared, i) }));
  const pending = workers.map((w) => new Promise<T>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  }));
  while (Atomics.load(ctl, 0) < threads) await new Promise((r) => setTimeout(r, 1));
  const t0 = performance.now();
  Atomics.store(ctl, 1, 1);
  Atomics.notify(ctl, 1);
  await new Promise((r) => setTimeout(r, ms));
  Atomics.store(ctl, 2, 1);
  const results = await Promise.all(pending);
  return { results, elapsed: performance.now() - t0, ctl };
}
