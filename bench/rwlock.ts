/**
 * RWLock figures, each beside its anchor from the same run:
 * - read-mostly throughput: 4 workers (and 2, one per core), 95 % reads of
 *   an 8-word record (and 100 %, no writer at all), an empty or a ~1 µs
 *   critical section, under the RWLock versus the same workload serialised
 *   on one Mutex. Runs alternate (mutex, rwlock,
 *   mutex, ...), median of `trials` runs; every run checks that no reader
 *   saw a torn record and that the writes add up.
 * - uncontended cost on one thread (tinybench, batches of 1000):
 *   readLockSync()+unlock(), writeLockSync()+unlock() and tryReadLock()+unlock()
 *   versus Mutex lockSync()+unlock().
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { LockTable } from '../src/index.js';
import { type Figure, figure, median } from './report.js';
import { gatedRun } from './gate.js';

const script = fileURLToPath(new URL('./workers/rwlock-mix.js', import.meta.url));
const BATCH = 1000;

interface MixRun { opsPerSec: number; reads: number; ops: number }

async function mixRun(kind: 'rwlock' | 'mutex', threads: number, ms: number, readPct: number, inside: number): Promise<MixRun> {
  const table = LockTable.create({ slots: 16 });
  const { results, elapsed, ctl } = await gatedRun<{ ops: number; reads: number; torn: number }>(script, threads, ms,
    (shared, i) => ({ kind, table: table.buffer, shared, readPct, inside, seed: 0x9e3779b9 * (i + 1) }));
  const ops = results.reduce((n, r) => n + r.ops, 0), reads = results.reduce((n, r) => n + r.reads, 0);
  const torn = results.reduce((n, r) => n + r.torn, 0);
  const written = ctl[16];
  if (torn !== 0 || written !== ops - reads) throw new Error(`${kind} read-mostly run is not exact: ${torn} torn reads, ${written} of ${ops - reads} writes`);
  return { opsPerSec: (ops / elapsed) * 1000, reads, ops };
}

/**
 * How much two threads of pure computation get done beside one, in this run:
 * read sections can only overlap as far as the machine runs threads in
 * parallel (a shared 2-vCPU VM may not). Median of 3.
 */
async function parallelism(): Promise<number> {
  const code = `const { parentPort } = require('node:worker_threads');
    let s = 0; const t0 = performance.now(); for (let i = 0; i < 5e7; i++) s = (s + i) | 0;
    parentPort.postMessage(performance.now() - t0 + (s & 0));`;
  const run = (n: number) => Promise.all(Array.from({ length: n }, () => new Promise<number>((resolve, reject) => {
    const w = new Worker(code, { eval: true });
    w.once('message', resolve);
    w.once('error', reject);
  })));
  const speedups: number[] = [];
  for (let t = 0; t < 3; t++) {
    const one = median(await run(1)), two = median(await run(2));
    speedups.push((2 * one) / two);
  }
  return median(speedups);
}

async function readMostly(quick: boolean): Promise<Figure[]> {
  const trials = quick ? 3 : 9, ms = quick ? 150 : 250;
  const speedup = await parallelism();
  const figures: Figure[] = [];
  const workloads = [[95, 4, 0, 'empty section'], [95, 4, 500, '~1 µs section'], [95, 2, 500, '~1 µs section'], [100, 2, 500, '~1 µs section']] as const;
  for (const [readPct, threads, inside, label] of workloads) {
    const rw: MixRun[] = [], mu: MixRun[] = [];
    for (let t = 0; t < trials; t++) {
      // Alternate so drift on a shared machine hits both alike.
      mu.push(await mixRun('mutex', threads, ms, readPct, inside));
      rw.push(await mixRun('rwlock', threads, ms, readPct, inside));
    }
    figures.push(figure({
      figure: `read-mostly (${readPct} % reads), ${threads} workers, ${label}: throughput`, unit: 'M ops/s', better: 'higher',
      latchkey: median(rw.map((r) => r.opsPerSec)) / 1e6, anchorName: 'latchkey Mutex, same workload', anchor: median(mu.map((r) => r.opsPerSec)) / 1e6,
      note: `RWLock, median of ${trials} alternating ${ms} ms runs; 2 compute threads did ${speedup.toFixed(2)}× the work of 1 here`,
    }));
  }
  return figures;
}

async function uncontendedRw(time: number): Promise<Figure[]> {
  const table = LockTable.create({ slots: 16 });
  const rw = table.rwlock('bench:rw-uncontended');
  const m = table.mutex('bench:rw-uncontended-mutex');
  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench
    .add('Mutex lockSync() + unlock()', () => {
      for (let i = 0; i < BATCH; i++) m.lockSync().unlock();
    })
    .add('RWLock readLockSync() + unlock()', () => {
      for (let i = 0; i < BATCH; i++) rw.readLockSync().unlock();
    })
    .add('RWLock writeLockSync() + unlock()', () => {
      for (let i = 0; i < BATCH; i++) rw.writeLockSync().unlock();
    })
    .add('RWLock tryReadLock() + unlock()', () => {
      for (let i = 0; i < BATCH; i++) rw.tryReadLock()!.unlock();
    });
  await bench.run();
  const perOp = (name: string) => {
    const r = bench.getTask(name)!.result;
    if (r.state !== 'completed') throw new Error(`bench task ${name} did not complete: ${r.state}`);
    return (r.latency.p50 * 1e6) / BATCH; // ms → ns, per operation
  };
  const mutexNs = perOp('Mutex lockSync() + unlock()');
  const anchor = { anchorName: 'Mutex lockSync()+unlock()', anchor: mutexNs, unit: 'ns', better: 'lower' as const };
  return [
    figure({ figure: 'uncontended RWLock readLockSync()+unlock()', latchkey: perOp('RWLock readLockSync() + unlock()'), ...anchor }),
    figure({ figure: 'uncontended RWLock writeLockSync()+unlock()', latchkey: perOp('RWLock writeLockSync() + unlock()'), ...anchor }),
    figure({ figure: 'uncontended RWLock tryReadLock()+unlock()', latchkey: perOp('RWLock tryReadLock() + unlock()'), ...anchor }),
  ];
}

export async function rwlockBench(quick: boolean): Promise<Figure[]> {
  return [...await uncontendedRw(quick ? 200 : 1000), ...await readMostly(quick)];
}
