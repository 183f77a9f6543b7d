/**
 * Semaphore figures, each beside the Mutex measured in the same run: a
 * semaphore does more than a mutex (a count, a per-thread holding record so
 * that release can refuse permits the thread does not hold and recovery can
 * give back a dead thread's permits), and these say what that costs.
 *
 * - uncontended, one thread, tinybench p50 of a batch ÷ batch size:
 *   acquireSync()+release() vs lockSync()+unlock(), tryAcquire()+release()
 *   vs tryLock()+unlock(), await acquire()+release() vs await lock()+unlock();
 * - contended: N workers loop take / non-atomic increment / give back on a
 *   semaphore of 1 permit vs a mutex, alternating runs, median throughput;
 *   the counter must equal the operations (checked every run).
 */
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { LockTable } from '../src/index.js';
import { type Figure, figure, median } from './report.js';
import { gatedRun } from './gate.js';

const SYNC_BATCH = 1000;
const ASYNC_BATCH = 100;

async function uncontendedFigures(time: number): Promise<Figure[]> {
  const table = LockTable.create({ slots: 16 });
  const s = table.semaphore('bench:semaphore', 4);
  const m = table.mutex('bench:mutex');
  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench
    .add('mutex lockSync()+unlock()', () => {
      for (let i = 0; i < SYNC_BATCH; i++) m.lockSync().unlock();
    })
    .add('semaphore acquireSync()+release()', () => {
      for (let i = 0; i < SYNC_BATCH; i++) s.acquireSync().release();
    })
    .add('mutex tryLock()+unlock()', () => {
      for (let i = 0; i < SYNC_BATCH; i++) m.tryLock()!.unlock();
    })
    .add('semaphore tryAcquire()+release()', () => {
      for (let i = 0; i < SYNC_BATCH; i++) s.tryAcquire()!.release();
    })
    .add('semaphore acquireSync(2)+release() beside 1 held', () => {
      // The count is not 0 on entry: the fast path's second CAS, and the record is kept.
      for (let i = 0; i < SYNC_BATCH; i++) s.acquireSync(2).release();
    }, { beforeAll: () => { held = s.acquireSync(1); }, afterAll: () => { held?.release(); } })
    .add('mutex await lock()+unlock()', async () => {
      for (let i = 0; i < ASYNC_BATCH; i++) (await m.lock()).unlock();
    })
    .add('semaphore await acquire()+release()', async () => {
      for (let i = 0; i < ASYNC_BATCH; i++) (await s.acquire()).release();
    });
  let held: { release(): void } | undefined;
  await bench.run();
  const perOp = (name: string, batch: number) => {
    const r = bench.getTask(name)!.result;
    if (r.state !== 'completed') throw new Error(`bench task ${name} did not complete: ${r.state}`);
    return (r.latency.p50 * 1e6) / batch; // ms → ns, per operation
  };
  const mutexSync = perOp('mutex lockSync()+unlock()', SYNC_BATCH);
  const mutexAsync = perOp('mutex await lock()+unlock()', ASYNC_BATCH);
  return [
    figure({ figure: 'uncontended semaphore acquireSync()+release()', unit: 'ns', better: 'lower', target: '≤ 2×',
      latchkey: perOp('semaphore acquireSync()+release()', SYNC_BATCH), anchorName: 'Mutex lockSync()+unlock()', anchor: mutexSync }),
    figure({ figure: 'uncontended semaphore tryAcquire()+release()', unit: 'ns', better: 'lower',
      latchkey: perOp('semaphore tryAcquire()+release()', SYNC_BATCH), anchorName: 'Mutex tryLock()+unlock()', anchor: perOp('mutex tryLock()+unlock()', SYNC_BATCH) }),
    figure({ figure: 'uncontended semaphore acquireSync(2)+release(), 1 already held', unit: 'ns', better: 'lower',
      latchkey: perOp('semaphore acquireSync(2)+release() beside 1 held', SYNC_BATCH), anchorName: 'Mutex lockSync()+unlock()', anchor: mutexSync }),
    figure({ figure: 'uncontended semaphore await acquire()+release()', unit: 'ns', better: 'lower', target: '≤ 1.5×',
      latchkey: perOp('semaphore await acquire()+release()', ASYNC_BATCH), anchorName: 'Mutex await lock()+unlock()', anchor: mutexAsync }),
  ];
}

const script = fileURLToPath(new URL('./workers/semaphore-contend.js', import.meta.url));

async function contendedRun(kind: 'semaphore' | 'mutex', threads: number, ms: number): Promise<{ opsPerSec: number; exact: boolean }> {
  const table = LockTable.create({ slots: 16 });
  const { results, elapsed, ctl } = await gatedRun<{ ops: number }>(script, threads, ms, (shared) => ({ kind, table: table.buffer, shared }));
  const ops = results.reduce((n, r) => n + r.ops, 0);
  return { opsPerSec: (ops / elapsed) * 1000, exact: ctl[16] === ops };
}

async function contendedFigures(ms: number, trials: number): Promise<Figure[]> {
  const figures: Figure[] = [];
  for (const threads of [2, 4]) {
    const sem: number[] = [], mtx: number[] = [];
    for (let t = 0; t < trials; t++) {
      // Alternate so drift on a shared machine hits both alike.
      for (const [kind, into] of [['mutex', mtx], ['semaphore', sem]] as const) {
        const r = await contendedRun(kind, threads, ms);
        if (!r.exact) throw new Error(`contended ${kind}, ${threads} workers: counter is not exact`);
        into.push(r.opsPerSec / 1e6);
      }
    }
    figures.push(figure({
      figure: `contended semaphore(1 permit), ${threads} workers, empty section: throughput`, unit: 'M ops/s', better: 'higher',
      latchkey: median(sem), anchorName: 'Mutex, same workload', anchor: median(mtx),
    }));
  }
  return figures;
}

export async function semaphoreBench(quick: boolean): Promise<Figure[]> {
  return [
    ...await uncontendedFigures(quick ? 200 : 1000),
    ...await contendedFigures(quick ? 150 : 250, quick ? 1 : 7),
  ];
}
