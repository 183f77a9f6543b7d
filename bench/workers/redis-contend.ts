// One contending process of bench/redis.ts, forked with argv [kind, name,
// ms, sectionMs, requesters, out]: kind 'latchkey' (locks.lock() scope
// 'cluster' on LATCHKEY_CLUSTER_URL; with several requesters, each is a
// worker thread: they share the process's grant, the cohort), 'redlock' or
// 'redis-semaphore' (the npm packages over ioredis, same server; several
// requesters are concurrent async loops of the main thread: they cannot
// share a grant). Says 'ready' after one warm-up grant; on {goNs} each
// requester loops for `ms`: take the lock, stamp enter, the section (empty,
// or `sectionMs` of waiting: an I/O call), stamp exit, release. Stamps on
// process.hrtime.bigint() (CLOCK_MONOTONIC: one clock for every process of
// the host). Each requester's intervals go to `${out}-${r}` as float64 pairs
// (ns since go) for the parent's overlap check; the reply is { ops, waits (ms) }.
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Redis } from 'ioredis';
import Redlock from 'redlock';
import { Mutex } from 'redis-semaphore';
import { locks } from '../../src/index.js';

type Kind = 'latchkey' | 'redlock' | 'redis-semaphore';
interface Job { kind: Kind; name: string; ms: number; sectionMs: number; out: string; goNs: string }
const now = () => process.hrtime.bigint();

/** How this process takes and gives back the lock: a release function per grant. */
function taker(kind: Kind, name: string): { lock(): Promise<() => Promise<void> | void>; close(): void } {
  if (kind === 'latchkey') {
    return {
      async lock() {
        const g = (await locks.lock(name, { scope: 'cluster' }))!;
        return () => g.unlock();
      },
      close() {},
    };
  }
  const io = new Redis(process.env.LATCHKEY_CLUSTER_URL!, { maxRetriesPerRequest: 0 });
  if (kind === 'redlock') {
    // Defaults (retryDelay 200 ms, jitter 200 ms) but retryCount -1: else it gives up after 10 tries under contention.
    const rl = new Redlock([io], { retryCount: -1 });
    rl.on('error', () => {});
    return {
      async lock() {
        const l = await rl.acquire([name], 10_000);
        return async () => void (await l.release());
      },
      close: () => io.disconnect(),
    };
  }
  // Defaults (retryInterval 10 ms, lockTimeout 10 s) but acquireTimeout 60 s.
  return {
    async lock() {
      const m = new Mutex(io, name, { acquireTimeout: 60_000 });
      await m.acquire();
      return () => m.release();
    },
    close: () => io.disconnect(),
  };
}

/** One requester's loop from goNs for ms; its intervals to `out`. */
async function loop(t: ReturnType<typeof taker>, job: Job): Promise<{ ops: number; waits: number[] }> {
  const goNs = BigInt(job.goNs), end = goNs + BigInt(job.ms) * 1_000_000n;
  const pairs = new Float64Array(1 << 20);
  const waits: number[] = [];
  while (now() < goNs) await new Promise((r) => setImmediate(r));
  let ops = 0;
  for (;;) {
    const t0 = now();
    if (t0 >= end) break;
    const release = await t.lock();
    const enter = now();
    if (job.sectionMs > 0) await sleep(job.sectionMs);
    const exit = now();
    await release();
    if (2 * ops + 1 < pairs.length) {
      pairs[2 * ops] = Number(enter - goNs);
      pairs[2 * ops + 1] = Number(exit - goNs);
    }
    waits.push(Number(enter - t0) / 1e6);
    ops++;
  }
  writeFileSync(job.out, pairs.subarray(0, Math.min(2 * ops, pairs.length)));
  return { ops, waits };
}

if (!isMainThread) {
  // A requester thread: warm up (its first lock), say so, loop from the go it is given.
  const job = workerData as Omit<Job, 'goNs'>;
  const t = taker(job.kind, job.name);
  await (await t.lock())();
  parentPort!.postMessage('ready');
  parentPort!.once('message', async (goNs: string) => parentPort!.postMessage(await loop(t, { ...job, goNs })));
} else {
  const [kind, name, ms, sectionMs, requesters, out] = process.argv.slice(2) as [Kind, string, string, string, string, string];
  const n = Number(requesters);
  const t = taker(kind, name);
  const job = (r: number): Omit<Job, 'goNs'> => ({ kind, name, ms: Number(ms), sectionMs: Number(sectionMs), out: `${out}-${r}` });
  // Warm up before 'ready': latchkey's agent thread starts and connects on the first request.
  await (await t.lock())();
  // latchkey with several requesters: real threads, each its own requester, started now; they share the process's grant.
  const threads = kind === 'latchkey' && n > 1 ? Array.from({ length: n }, (_, r) => new Worker(new URL(import.meta.url), { workerData: job(r) })) : [];
  await Promise.all(threads.map((w) => new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  })));
  process.send!('ready');
  process.once('message', async (m: { goNs: string }) => {
    const results = threads.length > 0
      ? await Promise.all(threads.map((w) => new Promise<{ ops: number; waits: number[] }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
        w.postMessage(m.goNs);
      })))
      : await Promise.all(Array.from({ length: n }, (_, r) => loop(t, { ...job(r), goNs: m.goNs })));
    t.close();
    // unlock() hands the release to the agent thread: let it reach the server before the process exits.
    await new Promise((res) => setTimeout(res, 100));
    process.send!({ ops: results.reduce((a, r) => a + r.ops, 0), waits: results.flatMap((r) => r.waits) }, () => process.exit(0));
  });
}
