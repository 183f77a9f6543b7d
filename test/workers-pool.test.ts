// Worker pools and latchkey: piscina workers and plain worker_threads reach
// the process's default LockTable and the `locks` lock space with no code of
// ours in the worker (worker_threads environment data, set when latchkey is
// imported in the main thread, which the imports below do before any pool
// starts). A non-atomic read-modify-write of one shared counter under the
// lock, from many tasks on 4 threads, must lose no update.
import { afterEach, describe, expect, test, vi } from 'vitest';
import { Worker } from 'node:worker_threads';
// Named, not default: piscina's .d.ts declares only named exports (its ESM wrapper has both).
import { Piscina } from 'piscina';
import { LockTable, locks } from '../src/index.js';
import { toMessage } from '../src/workers/transfer.js';
import type { Task, TaskResult } from './fixtures/workers-task.js';
import { control, fixture, result, signalWord, until } from './helpers.js';

vi.setConfig({ testTimeout: 20_000 });

const THREADS = 4;
const TASKS = 64;
const ITERATIONS = 500;

let unique = 0;
const uniqueName = (tag: string) => `workers-pool:${tag}:${++unique}`;

const pools: Piscina[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.destroy()));
});

function pool(options: ConstructorParameters<typeof Piscina>[0] = {}): Piscina {
  const p = new Piscina({ filename: fixture('workers-task'), minThreads: THREADS, maxThreads: THREADS, ...options });
  pools.push(p);
  return p;
}

/** TASKS tasks on a piscina pool of THREADS workers; the counter's final value and the threads that ran them. */
async function onPool(p: Piscina, task: Omit<Task, 'counter' | 'iterations'>, iterations = ITERATIONS) {
  const counter = new SharedArrayBuffer(4);
  const runs: Promise<TaskResult>[] = [];
  for (let i = 0; i < TASKS; i++) runs.push(p.run({ ...task, counter, iterations } satisfies Task));
  const done = await Promise.all(runs);
  return { count: new Int32Array(counter)[0], threads: new Set(done.map((r) => r.threadId)).size };
}

describe('piscina workers share the default lock table', () => {
  test('LockTable.default().mutex() in 64 tasks × 500 lockSync() on 4 piscina workers: exact total', async () => {
    const name = uniqueName('mutex');
    const { count, threads } = await onPool(pool(), { via: 'mutex', name });
    expect(count).toBe(TASKS * ITERATIONS);
    expect(threads).toBeGreaterThan(1);
    // The main thread's view of the default table saw every acquisition of the workers.
    expect(LockTable.default().stats(name)!.acquisitions).toBe(TASKS * ITERATIONS);
  });

  test('locks.request() in 64 tasks × 100 requests (await inside the critical section) on 4 piscina workers: exact total', async () => {
    const name = uniqueName('locks');
    const { count } = await onPool(pool(), { via: 'locks', name }, 100);
    expect(count).toBe(TASKS * 100);
    const { held, pending } = await locks.query();
    expect([...held, ...pending].filter((l) => l.name === name)).toEqual([]);
  });

  test('a table passed in piscina workerData, and a Mutex sent in the task with toMessage(): exact total, same slot', async () => {
    const own = LockTable.create({ slots: 16 });
    const m = own.mutex('explicit');
    const p = pool({ workerData: { table: own.buffer } });
    const a = await onPool(p, { via: 'table', name: 'explicit', table: own.buffer });
    expect(a.count).toBe(TASKS * ITERATIONS);
    const b = await onPool(p, { via: 'message', name: 'unused', handle: toMessage(m) });
    expect(b.count).toBe(TASKS * ITERATIONS);
    expect(own.stats('explicit')!.acquisitions).toBe(2 * TASKS * ITERATIONS);
  });

  test('control: the same tasks without a lock lose updates (the check can fail)', async () => {
    const { count } = await onPool(pool(), { via: 'none', name: uniqueName('none') }, 20_000);
    expect(count).toBeLessThan(TASKS * 20_000);
  });
});

describe('plain worker_threads share the default lock table', () => {
  async function plain(via: Task['via'], iterations: number) {
    const name = uniqueName(`plain-${via}`), counter = new SharedArrayBuffer(4), gate = control(2);
    const task: Task = { via, name, counter, iterations };
    const workers = Array.from({ length: THREADS }, () => new Worker(fixture('workers-task'), { workerData: { plain: task, gate: gate.buffer } }));
    try {
      const reports = workers.map((w) => result<TaskResult>(w));
      await until(gate, 0, THREADS);
      signalWord(gate, 1); // all start at once
      await Promise.all(reports);
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
    return { name, count: new Int32Array(counter)[0] };
  }

  test('4 Workers × 20000 LockTable.default().mutex() lockSync(): exact total', async () => {
    const { name, count } = await plain('mutex', 20_000);
    expect(count).toBe(THREADS * 20_000);
    expect(LockTable.default().stats(name)!.acquisitions).toBe(THREADS * 20_000);
  });

  test('4 Workers × 2000 locks.request() with an await inside: exact total', async () => {
    const { count } = await plain('locks', 2000);
    expect(count).toBe(THREADS * 2000);
  });
});
