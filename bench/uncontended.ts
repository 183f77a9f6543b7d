/**
 * Uncontended cost on one thread, with tinybench. Each task runs a batch of
 * operations so that the timer's own cost (tens of ns) does not swamp the
 * nanoseconds being measured; figures are per operation.
 */
import { Bench } from 'tinybench';
import { Mutex as AsyncMutex } from 'async-mutex';
import { LockTable } from '../src/index.js';
import { futexLock, futexUnlock } from './futex.js';
import { type Figure, figure } from './report.js';

const SYNC_BATCH = 1000;
const ASYNC_BATCH = 100;

export async function uncontended(time: number): Promise<Figure[]> {
  const table = LockTable.create({ slots: 16 });
  const m = table.mutex('bench:uncontended');
  const floor = new Int32Array(new SharedArrayBuffer(64));
  const am = new AsyncMutex();
  let sink = 0;

  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench
    .add('floor: Atomics CAS + store', () => {
      for (let i = 0; i < SYNC_BATCH; i++) {
        if (Atomics.compareExchange(floor, 0, 0, 1) === 0) Atomics.store(floor, 0, 0);
      }
    })
    .add('futex reference lock + unlock', () => {
      for (let i = 0; i < SYNC_BATCH; i++) {
        futexLock(floor, 4);
        futexUnlock(floor, 4);
      }
    })
    .add('latchkey lockSync() + unlock()', () => {
      for (let i = 0; i < SYNC_BATCH; i++) m.lockSync().unlock();
    })
    .add('latchkey tryLock() + unlock()', () => {
      for (let i = 0; i < SYNC_BATCH; i++) m.tryLock()!.unlock();
    })
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

  const perOp = (name: string, batch: number) => {
    const task = bench.getTask(name)!;
    const r = task.result;
    if (r.state !== 'completed') throw new Error(`bench task ${name} did not complete: ${r.state}`);
    return (r.latency.p50 * 1e6) / batch; // ms → ns, per operation
  };
  const floorNs = perOp('floor: Atomics CAS + store', SYNC_BATCH);
  const futexNs = perOp('futex reference lock + unlock', SYNC_BATCH);
  const lockSyncNs = perOp('latchkey lockSync() + unlock()', SYNC_BATCH);
  const tryNs = perOp('latchkey tryLock() + unlock()', SYNC_BATCH);
  const awaitNullNs = perOp('await null', ASYNC_BATCH);
  const asyncNs = perOp('latchkey await lock() + unlock()', ASYNC_BATCH);
  const asyncMutexNs = perOp('async-mutex await acquire() + release()', ASYNC_BATCH);
  if (sink < 0) console.log(sink);
  return [
    figure({ figure: 'uncontended lockSync()+unlock()', unit: 'ns', latchkey: lockSyncNs, anchorName: 'CAS+store floor', anchor: floorNs, better: 'lower', target: '≤ 1.3×' }),
    figure({ figure: 'uncontended lockSync()+unlock()', unit: 'ns', latchkey: lockSyncNs, anchorName: 'futex reference', anchor: futexNs, better: 'lower' }),
    figure({ figure: 'uncontended tryLock()+unlock()', unit: 'ns', latchkey: tryNs, anchorName: 'CAS+store floor', anchor: floorNs, better: 'lower' }),
    figure({ figure: 'uncontended await lock()+unlock()', unit: 'ns', latchkey: asyncNs, anchorName: 'await null', anchor: awaitNullNs, better: 'lower', target: '≤ 3×' }),
    figure({ figure: 'uncontended await lock()+unlock()', unit: 'ns', latchkey: asyncNs, anchorName: 'async-mutex acquire+release', anchor: asyncMutexNs, better: 'lower' }),
  ];
}
