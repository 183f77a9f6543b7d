/**
 * Uncontended cost on one thread.
 *
 * The sync forms are measured as a caller's loop runs them
 * (workers/caller-loop.ts): in a worker that imports the package, loops of
 * 200 000 iterations of `m.lockSync(); m.unlock()`, of
 * `const g = m.lockSync(); g.unlock()` and of `m.tryLock()!.unlock()`,
 * interleaved with the floor (one Atomics.compareExchange + one
 * Atomics.store in the same loop shape) and the futex reference; CPU time,
 * median over rounds. The cost of a few ns moves with where V8 happened to
 * place the objects a loop touches (a third, with the old fast path, from
 * one mutex name to the next), so the loop runs for several names, each in
 * a worker of its own, and the figure is the median ratio over them (the
 * note gives the spread).
 *
 * The async form stays on tinybench (batches of 100 awaited acquires, p50):
 * there the microtask hop, not placement, dominates.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { Mutex as AsyncMutex } from 'async-mutex';
import { LockTable } from '../src/index.js';
import { type Figure, figure, median } from './report.js';

const ASYNC_BATCH = 100;
const script = fileURLToPath(new URL('./workers/caller-loop.js', import.meta.url));
/** Mutex names the caller's loop runs with, each in a fresh worker (placement differs by name). */
const NAMES = ['x', 'cache:users', 'bench:uncontended', 'jobs', 'a:b'];

type LoopResult = Record<string, { wallNs: number; cpuNs: number }>;

function callerLoop(name: string, rounds: number, n: number): Promise<LoopResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(script, { workerData: { name, rounds, n } });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

async function syncFigures(quick: boolean): Promise<Figure[]> {
  LockTable.default(); // the default table exists before the workers start (environment data)
  const runs: LoopResult[] = [];
  for (const name of quick ? NAMES.slice(0, 2) : NAMES) runs.push(await callerLoop(name, quick ? 9 : 21, 200_000));
  const ns = (form: string) => median(runs.map((r) => r[form]!.cpuNs));
  const ratio = (form: string, anchor: string) => runs.map((r) => r[form]!.cpuNs / r[anchor]!.cpuNs).sort((a, b) => a - b);
  const spread = (form: string, anchor: string) => {
    const r = ratio(form, anchor);
    return `median over ${runs.length} mutex names, each a worker's loop of 200k (CPU time); ratios ${r[0]!.toFixed(2)}–${r[r.length - 1]!.toFixed(2)}`;
  };
  const row = (label: string, form: string, anchorName: string, anchor: string, target?: string): Figure => {
    const f = figure({ figure: label, unit: 'ns', latchkey: ns(form), anchorName, anchor: ns(anchor), better: 'lower', note: spread(form, anchor) });
    // The ratio is the median of the per-name ratios, not the ratio of the medians.
    f.ratio = median(ratio(form, anchor));
    if (target !== undefined) f.target = target;
    return f;
  };
  return [
    row('uncontended m.lockSync(); m.unlock() (caller\'s loop)', 'm.lockSync(); m.unlock()', 'CAS+store floor', 'floor', '≤ 1.3×'),
    row('uncontended const g = m.lockSync(); g.unlock() (caller\'s loop)', 'const g = m.lockSync(); g.unlock()', 'CAS+store floor', 'floor', '≤ 1.3×'),
    row('uncontended lockSync()+unlock()', 'const g = m.lockSync(); g.unlock()', 'futex reference', 'futex'),
    row('uncontended tryLock()+unlock()', 'm.tryLock()!.unlock()', 'CAS+store floor', 'floor'),
  ];
}

async function asyncFigures(time: number): Promise<Figure[]> {
  const table = LockTable.create({ slots: 16 });
  const m = table.mutex('bench:uncontended');
  const am = new AsyncMutex();
  let sink = 0;
  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench
    .add('await null', async () => {
      for (let i = 0; i < ASYNC_BATCH; i++) sink += (await null) === null ? 1 : 0;
    })
    .add('latchkey await lock() + unlock()', async () => {
      for (let i = 0; i < ASYNC_BATCH; i++) (await m.lock()).unlock();
    })
    .add('async-mutex await acquire() + release()', async () => {
      for (let i = 0; i < ASYNC_BATCH; i++) (await am.acquire())();
    });
  await bench.run();
  const perOp = (name: string) => {
    const r = bench.getTask(name)!.result;
    if (r.state !== 'completed') throw new Error(`bench task ${name} did not complete: ${r.state}`);
    return (r.latency.p50 * 1e6) / ASYNC_BATCH; // ms → ns, per operation
  };
  const asyncNs = perOp('latchkey await lock() + unlock()');
  if (sink < 0) console.log(sink);
  return [
    figure({ figure: 'uncontended await lock()+unlock()', unit: 'ns', latchkey: asyncNs, anchorName: 'await null', anchor: perOp('await null'), better: 'lower', target: '≤ 3×' }),
    figure({ figure: 'uncontended await lock()+unlock()', unit: 'ns', latchkey: asyncNs, anchorName: 'async-mutex acquire+release', anchor: perOp('async-mutex await acquire() + release()'), better: 'lower' }),
  ];
}

/** The first figure is the lockSync row against the floor (run.ts reuses its anchor). */
export async function uncontended(time: number): Promise<Figure[]> {
  return [...await syncFigures(time < 1000), ...await asyncFigures(time)];
}
