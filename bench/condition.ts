/**
 * Condition round trip: two workers play ping-pong through one Mutex and one
 * Condition (wait for my turn in a predicate loop, hand the turn over,
 * notify(1)), beside the same ping-pong on a bare Atomics.wait/notify word,
 * the floor for any wake-up between two threads. One sample is one run of
 * `rounds` round trips (two wake-ups each) timed by side 0; runs alternate
 * latchkey and anchor so drift hits both alike; median of `trials`.
 *
 * Two notify patterns: holding the mutex (the usual one), and after
 * releasing it. Holding it, the woken thread is often scheduled onto the
 * notifier's core before the notifier has released the mutex (in its own
 * wait), finds it held and parks on it: a second wake-up for some hand-offs.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { LockTable } from '../src/index.js';
import { type Figure, figure, median } from './report.js';

const script = fileURLToPath(new URL('./workers/condition-pingpong.js', import.meta.url));

type Pattern = 'holding' | 'after-unlock';

async function pingPong(kind: 'latchkey' | 'raw', how: 'sync' | 'async', rounds: number, pattern: Pattern = 'holding'): Promise<number> {
  const table = LockTable.create({ slots: 8 });
  const shared = new SharedArrayBuffer(64);
  const workers = [0, 1].map((me) => new Worker(script, { workerData: { kind, how, pattern, table: table.buffer, shared, me, rounds } }));
  const done = await Promise.all(workers.map((w) => new Promise<{ us: number }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  })));
  return done[0]!.us;
}

export async function conditionBench(quick: boolean): Promise<Figure[]> {
  const rounds = quick ? 500 : 3000, trials = quick ? 1 : 7;
  const figures: Figure[] = [];
  const runs: Array<['sync' | 'async', Pattern]> = [['sync', 'holding'], ['sync', 'after-unlock'], ['async', 'holding']];
  for (const [how, pattern] of runs) {
    const lk: number[] = [], raw: number[] = [];
    for (let t = 0; t < trials; t++) {
      raw.push(await pingPong('raw', how, rounds));
      lk.push(await pingPong('latchkey', how, rounds, pattern));
    }
    const api = how === 'sync' ? 'cv.waitSync()/notify()' : 'await cv.wait()/notify()';
    const when = pattern === 'holding' ? 'notify holding the mutex' : 'notify after unlock';
    figures.push(figure({
      figure: `condition ping-pong round trip, 2 workers, ${api}, ${when} (median)`, unit: 'µs', better: 'lower',
      latchkey: median(lk), anchorName: how === 'sync' ? 'raw Atomics.wait/notify ping-pong' : 'raw Atomics.waitAsync/notify ping-pong',
      anchor: median(raw), note: `${trials} runs × ${rounds} round trips`,
    }));
  }
  return figures;
}

// `node dist/bench/condition.js [--quick]` runs it alone.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { markdown } = await import('./report.js');
  console.log(markdown(await conditionBench(process.argv.includes('--quick'))));
}
