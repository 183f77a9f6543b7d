/**
 * The front door's figures: `locks.request()` uncontended beside `await
 * null` (the least an async call can cost) and beside Node 24's
 * navigator.locks, and contended across 2 and 4 workers beside
 * navigator.locks under the same workload (bench/navigator-locks.ts runs it
 * in a Node 24 process of its own).
 */
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { locks } from '../src/index.js';
import { gatedRun } from './gate.js';
import { navigatorLocks } from './navigator-locks.js';
import { type Figure, figure, median, percentile } from './report.js';

const BATCH = 100;
const script = fileURLToPath(new URL('./workers/locks-contend.js', import.meta.url));

async function perOpUs(name: string, fn: () => Promise<void> | void, time: number): Promise<number> {
  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench.add(name, fn);
  await bench.run();
  const r = bench.tasks[0]!.result;
  if (r.state !== 'completed') throw new Error(`bench ${name}: ${r.state}`);
  return (r.latency.p50 * 1000) / BATCH;
}

interface Run { opsPerSec: number; p99Ms: number; exact: boolean }

async function contendedRun(workers: number, ms: number): Promise<Run> {
  const { results, elapsed, ctl } = await gatedRun<{ ops: number; waits: number[] }>(script, workers, ms, (shared) => ({ shared }));
  const ops = results.reduce((n, r) => n + r.ops, 0);
  const waits = Float64Array.from(results.flatMap((r) => r.waits)).sort();
  return { opsPerSec: (ops / elapsed) * 1000, p99Ms: percentile(waits, 0.99), exact: ctl[16] === ops };
}

export async function locksBench(quick: boolean, log: (s: string) => void): Promise<Figure[]> {
  const figures: Figure[] = [];
  const time = quick ? 200 : 1000;
  const noop = () => {};
  const request = await perOpUs('locks.request()', async () => {
    for (let i = 0; i < BATCH; i++) await locks.request('bench:uncontended', noop);
  }, time);
  const awaitNull = await perOpUs('await null', async () => {
    for (let i = 0; i < BATCH; i++) await null;
  }, time);
  const lockSync = await perOpUs('locks.lockSync()', () => {
    for (let i = 0; i < BATCH; i++) locks.lockSync('bench:uncontended')!.unlock();
  }, time);
  const node24 = await navigatorLocks();
  if ('skipped' in node24) log(`Node 24 navigator.locks skipped: ${node24.skipped}`);
  figures.push(figure({
    figure: 'locks.request() uncontended, thread scope', unit: 'µs', better: 'lower', target: '≤ 1 µs',
    latchkey: request, anchorName: 'await null', anchor: awaitNull,
  }));
  if (!('skipped' in node24)) {
    figures.push(figure({
      figure: 'locks.request() uncontended (anchor: Node 24)', unit: 'µs', better: 'lower',
      latchkey: request, anchorName: `Node 24 navigator.locks.request()`, anchor: node24.uncontendedUs,
    }));
  }
  figures.push(figure({
    figure: 'locks.lockSync() + unlock() uncontended, thread scope', unit: 'µs', better: 'lower',
    latchkey: lockSync, anchorName: 'locks.request()', anchor: request,
  }));
  for (const workers of [2, 4]) {
    const runs: Run[] = [];
    for (let t = 0; t < (quick ? 1 : 5); t++) runs.push(await contendedRun(workers, quick ? 150 : 300));
    if (!runs.every((r) => r.exact)) throw new Error(`locks.request() contended, ${workers} workers: the counter is not exact`);
    const anchor = 'skipped' in node24 ? undefined : node24.contended.find((c) => c.workers === workers);
    figures.push(figure({
      figure: `locks.request() contended, ${workers} workers, non-atomic increment inside: throughput`, unit: 'k ops/s', better: 'higher', target: '≥ 10×',
      latchkey: median(runs.map((r) => r.opsPerSec)) / 1e3,
      anchorName: anchor === undefined ? 'Node 24 navigator.locks (skipped)' : 'Node 24 navigator.locks', anchor: (anchor?.opsPerSec ?? NaN) / 1e3,
      note: `wait p99 ${median(runs.map((r) => r.p99Ms)).toFixed(3)} ms; exact${anchor !== undefined && !anchor.exact ? `; Node 24 let two workers in at once ${anchor.overlaps} times` : ''}`,
    }));
  }
  return figures;
}
