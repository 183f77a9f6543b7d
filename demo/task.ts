/**
 * The demo's piscina task: until `until` (epoch ms), update random keys of
 * the shared cache, each under its host lock (`scope: 'host'`: every
 * process of the demo), and count each update in this process's tally
 * under a thread-scope lock. When the process asks (control words), one
 * task dies inside its update: its worker thread exits, or the whole
 * process is SIGKILLed, holding the lock.
 */
import { locks } from '../src/index.js';
import { KEYS, keyName, update } from './store.js';

export interface TaskInput {
  dir: string;
  until: number;
  seed: number;
  /** Int32 words, see C_* */
  control: SharedArrayBuffer;
  /** Int32 per key: this process's updates, counted under thread-scope lock 'tally'. */
  tally: SharedArrayBuffer;
}

export interface TaskOutput {
  ops: number;
  /** Wait for the host lock, ms, every update. */
  waits: number[];
  fencingFailures: number;
}

/** Control words shared by a demo process and its tasks. */
export const C_OPS = 0;
/** 1: a task should exit its worker thread mid-update (2 once taken). */
export const C_DIE_WORKER = 1;
/** 1: a task should SIGKILL the process mid-update. */
export const C_DIE_PROCESS = 2;
export const C_WORDS = 4;

export default async function task(t: TaskInput): Promise<TaskOutput> {
  const ctl = new Int32Array(t.control), tally = new Int32Array(t.tally);
  let x = t.seed | 1;
  const rand = (n: number) => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) % n; };
  const out: TaskOutput = { ops: 0, waits: [], fencingFailures: 0 };
  while (Date.now() < t.until) {
    const k = rand(KEYS), t0 = performance.now();
    await locks.request(keyName(k), { scope: 'host' }, async (lock) => {
      out.waits.push(performance.now() - t0);
      const die = Atomics.compareExchange(ctl, C_DIE_WORKER, 1, 2) === 1 ? () => process.exit(1)
        : Atomics.compareExchange(ctl, C_DIE_PROCESS, 1, 2) === 1 ? () => process.kill(process.pid, 'SIGKILL')
          : undefined;
      if (update(t.dir, k, lock!.token, lock!.abandoned, die)) out.fencingFailures++;
      await locks.request('tally', () => {
        const v = tally[k]!;
        tally[k] = v + 1;
      });
    });
    out.ops++;
    Atomics.add(ctl, C_OPS, 1);
  }
  return out;
}
