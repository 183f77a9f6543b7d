// One contending process of bench/host.ts, forked with argv
// [kind, lockDir, ms, threads, out]: kind 'latchkey' (scope 'host', the
// backend LATCHKEY_BACKEND names), 'raw-file' (each thread a client of the
// file backend by itself, with an identity of its own: no cohort, no
// lingering; it waits on the lock directory with fs.watch and the
// backend's retryAt) or 'proper-lockfile' (threads must be 1).
// Says 'ready'; on 'go' every thread loops for `ms`: take the lock, stamp
// enter and exit (process.hrtime.bigint(): CLOCK_MONOTONIC, one clock for
// every process), empty section, release. Every 8th wait is kept. The
// intervals go to `out`.<thread> as float64 pairs for the parent's overlap
// check; the reply is { ops, waits, backend } per thread: `backend` the
// distinct host grants its locks came under (token ÷ 1000: queue/word.ts).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, threadId, workerData } from 'node:worker_threads';
import * as lockfile from 'proper-lockfile';
import { locks } from '../../src/index.js';
import { FileBackend } from '../../src/bridge/host/file.js';
import { me, monotonicMs } from '../../src/bridge/identity.js';

interface Job { kind: string; dir: string; ms: number; out: string; goNs: string }
interface Done { ops: number; waits: number[]; backend: number[] }

const now = () => process.hrtime.bigint();

async function loop(job: Job): Promise<Done> {
  const go = BigInt(job.goNs), end = go + BigInt(job.ms) * 1_000_000n;
  const pairs = new Float64Array(1 << 21);
  const waits: number[] = [];
  const seen = new Set<number>();
  let ops = 0;
  const target = join(job.dir, 'target');
  const raw = job.kind === 'raw-file' ? rawClient(job.dir) : undefined;
  for (;;) {
    const t0 = now();
    if (t0 >= end) break;
    let enter: bigint, exit: bigint;
    if (raw !== undefined) {
      const token = await raw.acquire();
      enter = now();
      seen.add(token);
      exit = now();
      raw.release(token);
    } else if (job.kind === 'proper-lockfile') {
      const release = await lockfile.lock(target, { realpath: false, stale: 10_000, retries: { retries: 1000, minTimeout: 1, maxTimeout: 10 } });
      enter = now();
      exit = now();
      await release();
    } else {
      const g = (await locks.lock('bench:host', { scope: 'host' }))!;
      enter = now();
      seen.add(Math.floor(g.token / 1000));
      exit = now();
      g.unlock();
    }
    if (2 * ops + 1 < pairs.length) {
      pairs[2 * ops] = Number(enter - go);
      pairs[2 * ops + 1] = Number(exit - go);
    }
    if ((ops & 7) === 0) waits.push(Number(enter - t0) / 1e6);
    ops++;
  }
  writeFileSync(job.out, pairs.subarray(0, Math.min(2 * ops, pairs.length)));
  return { ops, waits, backend: [...seen] };
}

/** One client of the file backend, as another process would be: attempt, wait for a change or retryAt, retry. */
function rawClient(dir: string) {
  const b = new FileBackend(dir, { ...me(), id: `${me().id}-${threadId}` });
  let wake: (() => void) | undefined;
  b.watch('bench:host', () => wake?.());
  return {
    async acquire(): Promise<number> {
      const since = monotonicMs();
      for (;;) {
        const changed = new Promise<void>((resolve) => (wake = resolve));
        const r = b.attempt({ name: 'bench:host', mode: 'exclusive', ttl: 10_000, steal: false, wait: true, since });
        if (r.granted) return r.token;
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([changed, new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, r.retryAt - Date.now()))))]);
        clearTimeout(timer);
      }
    },
    release(token: number): void {
      b.release('bench:host', token, false);
    },
  };
}

if (isMainThread) {
  const [kind, dir, ms, threads, out] = process.argv.slice(2) as [string, string, string, string, string];
  process.send!('ready');
  process.once('message', async (m: { goNs: string }) => {
    const n = Number(threads);
    const jobs = Array.from({ length: n }, (_, i): Job => ({ kind, dir, ms: Number(ms), out: `${out}.${i}`, goNs: m.goNs }));
    const done = n === 1
      ? [await loop(jobs[0]!)]
      : await Promise.all(jobs.map((job) => new Promise<Done>((resolve, reject) => {
        const w = new Worker(new URL(import.meta.url), { workerData: job });
        w.once('message', resolve);
        w.once('error', reject);
      })));
    process.send!(done, () => process.exit(0));
  });
} else {
  parentPort!.postMessage(await loop(workerData as Job));
}
