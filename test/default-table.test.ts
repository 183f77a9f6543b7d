import { expect, test } from 'vitest';
import { Worker } from 'node:worker_threads';
import { LockTable } from '../src/index.js';
import { fixture } from './helpers.js';

// The worker is started by plain worker_threads code that never mentions
// latchkey; it imports latchkey itself and starts a worker of its own.
test('LockTable.default() is the same table in the main thread, a plain Worker and its nested Worker', async () => {
  const table = LockTable.default();
  const worker = new Worker(fixture('default-table'), { workerData: { depth: 1 } });
  const reports: Array<{ depth: number; tid: number }> = [];
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (m) => reports.push(m));
    worker.on('error', reject);
    worker.on('exit', () => resolve());
  });
  expect(reports.map((r) => r.depth).sort()).toEqual([1, 2]);
  // Each worker took 'default:probe' once in the shared table, and each has its own thread id.
  expect(table.stats('default:probe')!.acquisitions).toBe(2);
  expect(new Set([table.threadId, ...reports.map((r) => r.tid)]).size).toBe(3);
});
