/**
 * One process of the demo, forked by main.ts with argv [dir, threads,
 * index]: a piscina pool of `threads` workers running task.ts. Says
 * 'ready'; on { go: until } runs one task per worker until then (a task
 * whose worker died is started again); reports { progress } every 200 ms
 * and { done } at the end. { kill: 'worker' | 'process' } arms a death.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { locks } from '../src/index.js'; // first: its tables reach the pool's workers
import { C_DIE_PROCESS, C_DIE_WORKER, C_OPS, C_WORDS, type TaskInput, type TaskOutput } from './task.js';
import { KEYS } from './store.js';

export interface ProcessReport {
  pid: number;
  ops: number;
  waits: number[];
  fencingFailures: number;
  /** This process's updates per key, counted under the thread-scope lock 'tally'. */
  tally: number[];
  workerDeaths: number;
  /** What the failed tasks failed with. */
  errors: string[];
}

void locks;
const [dir, threads, index] = process.argv.slice(2) as [string, string, string];
const control = new SharedArrayBuffer(C_WORDS * 4), tallyBuffer = new SharedArrayBuffer(KEYS * 4);
const ctl = new Int32Array(control);
const pool = new Piscina({ filename: fileURLToPath(new URL('./task.js', import.meta.url)), minThreads: Number(threads), maxThreads: Number(threads) });
const report: ProcessReport = { pid: process.pid, ops: 0, waits: [], fencingFailures: 0, tally: [], workerDeaths: 0, errors: [] };
let seed = Number(index) * 1000 + 1;

async function runUntil(until: number): Promise<void> {
  while (Date.now() < until) {
    const input: TaskInput = { dir, until, seed: seed++, control, tally: tallyBuffer };
    try {
      const r = (await pool.run(input)) as TaskOutput;
      report.waits.push(...r.waits);
      report.fencingFailures += r.fencingFailures;
    } catch (err) {
      report.workerDeaths++; // its thread exited mid-update, as asked: piscina starts another
      report.errors.push((err as Error).message);
    }
  }
}

process.on('message', async (m: { go?: number; kill?: 'worker' | 'process' }) => {
  if (m.kill !== undefined) Atomics.store(ctl, m.kill === 'worker' ? C_DIE_WORKER : C_DIE_PROCESS, 1);
  if (m.go === undefined) return;
  const progress = setInterval(() => process.send!({ progress: Atomics.load(ctl, C_OPS) }), 200);
  await Promise.all(Array.from({ length: Number(threads) }, () => runUntil(m.go!)));
  clearInterval(progress);
  await pool.destroy();
  // Counted as they happen: a task whose worker died never returned its own count.
  report.ops = Atomics.load(ctl, C_OPS);
  report.tally = Array.from(new Int32Array(tallyBuffer));
  process.send!({ done: report }, () => process.exit(0));
});
process.send!('ready');
