import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';

/** Workers that count themselves in and out of the permits' section; returns the high-water mark. */
async function stress(mode: 'sync' | 'async' | 'mixed' | 'none', workers: number, permits: number, maxN: number, iterations: number) {
  const table = LockTable.create({ slots: 8 });
  const shared = control(8);
  const ws = Array.from({ length: workers }, (_, i) => start('semaphore-stress', {
    table: table.buffer, name: 'pool', permits, iterations, maxN, shared: shared.buffer,
    mode: mode === 'mixed' ? (['sync', 'mixed', 'async'] as const)[i % 3] : mode,
  }));
  const results = ws.map((w) => result<{ available: number }>(w)); // listen first: a worker that fails to start says why
  await until(shared, 0, workers);
  signalWord(shared, 1); // everyone starts at once
  const done = await Promise.all(results);
  return { highWater: Atomics.load(shared, 3), inUse: Atomics.load(shared, 2), mostTasks: Atomics.load(shared, 4), done, table };
}

describe('Semaphore never lets more than `permits` in', () => {
  test('6 workers taking 1 or 2 of 3 permits (sync, async, tryAcquire mixed): the high-water mark is exactly 3', async () => {
    const { highWater, inUse, done, table } = await stress('mixed', 6, 3, 2, 6000);
    expect(highWater).toBeLessThanOrEqual(3);
    expect(highWater).toBe(3); // and they did run side by side
    expect(inUse).toBe(0);
    expect(done.every((d) => d.available >= 0)).toBe(true);
    const s = table.semaphore('pool', 3);
    expect(s.available).toBe(3);
    expect(table.stats('pool')!.holders).toEqual([]);
  });

  test('4 workers with many async tasks each, taking 1 to 3 of 4 permits: never more than 4 inside', async () => {
    const { highWater, inUse, mostTasks, table } = await stress('async', 4, 4, 3, 3000);
    expect(highWater).toBeLessThanOrEqual(4);
    expect(highWater).toBe(4);
    expect(mostTasks).toBeGreaterThan(1); // one thread held permits for several tasks at once
    expect(inUse).toBe(0);
    expect(table.semaphore('pool', 4).available).toBe(4);
  });

  test('the same workers without the semaphore do go past 3 (the test can see too many inside)', async () => {
    const { highWater } = await stress('none', 6, 3, 2, 6000);
    expect(highWater).toBeGreaterThan(3);
  });

  test('async tasks of this thread and a worker share 3 permits: at most 3 tasks inside, and 3 reached', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('tasks', 3);
    const shared = control(8);
    const worker = start('semaphore-stress', {
      table: table.buffer, name: 'tasks', permits: 3, iterations: 2000, maxN: 1, shared: shared.buffer, mode: 'sync',
    });
    const workerDone = result(worker); // listen now: it may finish before this thread's tasks do
    await until(shared, 0, 1);
    signalWord(shared, 1);
    let inside = 0, most = 0;
    await Promise.all(Array.from({ length: 30 }, async () => {
      for (let k = 0; k < 20; k++) {
        const g = await s.acquire();
        Atomics.add(shared, 2, 1);
        inside++;
        most = Math.max(most, inside, Atomics.load(shared, 2));
        await new Promise((r) => setImmediate(r));
        inside--;
        Atomics.sub(shared, 2, 1);
        g.release();
      }
    }));
    await workerDone;
    expect(most).toBeLessThanOrEqual(3);
    expect(Atomics.load(shared, 3)).toBeLessThanOrEqual(3);
    expect(most).toBe(3);
    expect(s.available).toBe(3);
  });
});
