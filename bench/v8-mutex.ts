/**
 * V8's own Atomics.Mutex, for comparison. Only exists behind
 * `node --harmony-struct` (a command-line flag only) and is not stable on
 * Node 20, so run.ts runs this file in its own process and tolerates failure.
 * Prints one JSON line: { lockNs } per uncontended lock+unlock.
 */
type V8Mutex = object;
interface V8Atomics { Mutex: { new(): V8Mutex; lock(m: V8Mutex, fn: () => void): void } }

const A = Atomics as unknown as Partial<V8Atomics>;
if (typeof A.Mutex !== 'function') {
  console.log(JSON.stringify({ error: 'Atomics.Mutex is not available (needs --harmony-struct)' }));
} else {
  const { Mutex } = A as V8Atomics;
  const mu = new Mutex();
  let sink = 0;
  const batch = 100_000;
  const samples: number[] = [];
  for (let round = 0; round < 30; round++) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) Mutex.lock(mu, () => { sink++; });
    samples.push(((performance.now() - t0) * 1e6) / batch);
  }
  samples.sort((a, b) => a - b);
  console.log(JSON.stringify({ lockNs: samples[samples.length >> 1], sink }));
}
