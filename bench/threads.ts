/**
 * Multi-thread workloads: contended throughput and hand-off latency, each
 * latchkey run beside its anchor run, same workers, same machine, same minute.
 * These are timed runs of real workers rather than tinybench tasks: one
 * sample is a whole run of N threads, repeated `trials` times (median).
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { LockTable } from '../src/index.js';
import { type Figure, figure, median, percentile } from './report.js';
import { gatedRun } from './gate.js';

const script = (name: string) => fileURLToPath(new URL(`./workers/${name}.js`, import.meta.url));

function collect<T>(w: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
}

interface ContendedRun { opsPerSec: number; p50Ms: number; p99Ms: number; exact: boolean }

async function contendedRun(kind: 'latchkey' | 'futex', threads: number, ms: number, inside: number, outside: number): Promise<ContendedRun> {
  const table = LockTable.create({ slots: 16 });
  const { results, elapsed, ctl } = await gatedRun<{ ops: number; waits: Float64Array }>(
    script('contend'), threads, ms, (shared) => ({ kind, table: table.buffer, shared, inside, outside }));
  const ops = results.reduce((n, r) => n + r.ops, 0);
  const waits = Float64Array.from(results.flatMap((r) => Array.from(r.waits))).sort();
  return { opsPerSec: (ops / elapsed) * 1000, p50Ms: percentile(waits, 0.5), p99Ms: percentile(waits, 0.99), exact: ctl[16] === ops };
}

export async function contended(ms: number, trials: number): Promise<Figure[]> {
  const figures: Figure[] = [];
  for (const threads of [2, 4]) {
    for (const [inside, outside, label] of [[0, 0, 'empty section'], [50, 200, '~50 ns in, ~200 ns out']] as const) {
      const lk: ContendedRun[] = [], fx: ContendedRun[] = [];
      for (let t = 0; t < trials; t++) {
        // Alternate so drift on a shared machine hits both alike.
        fx.push(await contendedRun('futex', threads, ms, inside, outside));
        lk.push(await contendedRun('latchkey', threads, ms, inside, outside));
      }
      if (![...lk, ...fx].every((r) => r.exact)) throw new Error(`contended ${threads} threads: counter is not exact`);
      const name = `contended, ${threads} workers, ${label}`;
      figures.push(figure({
        figure: `${name}: throughput`, unit: 'M ops/s', better: 'higher', target: '≥ 1.0×',
        latchkey: median(lk.map((r) => r.opsPerSec)) / 1e6, anchorName: 'futex reference', anchor: median(fx.map((r) => r.opsPerSec)) / 1e6,
      }));
      figures.push(figure({
        figure: `${name}: wait p99`, unit: 'µs', better: 'lower', target: 'p99 ≤ 2 ms',
        latchkey: median(lk.map((r) => r.p99Ms)) * 1000, anchorName: 'futex reference', anchor: median(fx.map((r) => r.p99Ms)) * 1000,
        note: `p50 ${(median(lk.map((r) => r.p50Ms)) * 1000).toFixed(2)} µs vs ${(median(fx.map((r) => r.p50Ms)) * 1000).toFixed(2)} µs`,
      }));
    }
  }
  return figures;
}

async function handoffRun(kind: 'latchkey' | 'raw', rounds: number): Promise<number[]> {
  const table = LockTable.create({ slots: 16 });
  const shared = new SharedArrayBuffer(128);
  const workers = [0, 1].map((me) =>
    new Worker(script('handoff'), { workerData: { kind, table: table.buffer, shared, me, rounds } }));
  const done = await Promise.all(workers.map((w) => collect<{ latencies: number[] }>(w)));
  return done.flatMap((r) => r.latencies);
}

export async function handoff(rounds: number): Promise<Figure[]> {
  const raw = await handoffRun('raw', rounds);
  const lk = await handoffRun('latchkey', rounds);
  return [figure({
    figure: 'hand-off to a parked waiter: release → waiter running (median)', unit: 'µs', better: 'lower',
    latchkey: median(lk) / 1000, anchorName: 'raw Atomics.notify → wait', anchor: median(raw) / 1000,
  })];
}
