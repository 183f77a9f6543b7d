import { expect } from 'vitest';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

/** Compiled fixtures: `npm test` builds first, and workers run the JS. */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`../dist/test/fixtures/${name}.js`, import.meta.url));
}

export function start(name: string, workerData: unknown): Worker {
  return new Worker(fixture(name), { workerData });
}

/** The worker's first message (its result), rejecting on error. */
export function result<T = Record<string, unknown>>(worker: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`worker exited with code ${code} before reporting`)));
  });
}

export function exited(worker: Worker): Promise<number> {
  return new Promise((resolve) => worker.once('exit', resolve));
}

/** Wait (without blocking this thread's loop) until `words[index]` reaches at least `value`. */
export async function until(words: Int32Array, index: number, value: number, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  for (;;) {
    const seen = Atomics.load(words, index);
    if (seen >= value) return;
    const left = deadline - performance.now();
    if (left <= 0) throw new Error(`timed out waiting for word ${index} to reach ${value} (it is ${seen})`);
    const r = Atomics.waitAsync(words, index, seen, left);
    if (r.async) await r.value;
  }
}

export function control(words = 8): Int32Array {
  return new Int32Array(new SharedArrayBuffer(words * 4));
}

/** Set a word and wake whoever waits on it. */
export function signalWord(words: Int32Array, index: number, value = 1): void {
  Atomics.store(words, index, value);
  Atomics.notify(words, index);
}

/** Run `fn` and check it changed no byte of the table's buffer; returns what it threw. */
export function untouched(table: { buffer: SharedArrayBuffer }, fn: () => unknown): unknown {
  const before = new Uint8Array(table.buffer).slice();
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(Buffer.compare(Buffer.from(before), Buffer.from(new Uint8Array(table.buffer).slice()))).toBe(0);
  return thrown;
}
