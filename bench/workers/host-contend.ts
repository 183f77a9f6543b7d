// One contending process of bench/host.ts, forked with argv
//   [kind, counterFile, run, threads, logFile]
// kind: 'latchkey' (locks.request(name, { scope: 'host' }, cb), LATCHKEY_DIR/LATCHKEY_BACKEND),
//       'latchkey-warm' (the same, after one request before the run: its table, lock directory and lease
//       keeper are up; what the steady state costs),
//       'thread' (the same at thread scope: one process's threads only),
//       'none' (no lock at all, the section called through one await as a request's callback is: the
//       ceiling any Node lock is held to; the counter is then not exact),
//       'proper-lockfile' (it polls: retries 1–10 ms).
// run: 'iters:N' (N sequential requests per thread) or 'ms:N' (for N ms).
// Imports and opens everything, says 'ready'; on {goNs} every thread waits
// for that instant (CLOCK_MONOTONIC, one clock for every process) and loops:
// take the lock → pread the counter, +1, pwrite it → stamp → release. The
// first request is inside the timed run. Each thread writes [enter, exit,
// token] float64 triples (ns since go) to logFile.<thread>; the reply is
// one { ops, waitsMs, endNs } per thread.
import * as fs from 'node:fs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import * as lockfile from 'proper-lockfile';
import { locks } from '../../src/index.js';

interface Job { kind: string; counter: string; run: string; out: string; goNs: string }
interface Done { ops: number; waitsMs: number[]; endNs: string }

const NAME = 'bench:host';
const now = () => process.hrtime.bigint();

async function loop(job: Job): Promise<Done> {
  const [what, n] = job.run.split(':') as ['iters' | 'ms', string];
  const go = BigInt(job.goNs), end = what === 'ms' ? go + BigInt(n) * 1_000_000n : 0n, iters = what === 'iters' ? Number(n) : Infinity;
  const counter = fs.openSync(job.counter, 'r+');
  const buf = Buffer.alloc(8);
  const log = new Float64Array(3 * Math.min(iters, 1 << 20));
  const waits: number[] = [];
  const target = `${job.counter}.target`;
  const section = (token: number): [bigint, bigint, number] => {
    const enter = now();
    fs.readSync(counter, buf, 0, 8, 0);
    buf.writeBigUInt64LE(buf.readBigUInt64LE(0) + 1n, 0);
    fs.writeSync(counter, buf, 0, 8, 0);
    return [enter, now(), token];
  };
  // Sleep most of the lead, spin the rest: every thread of every process starts at one instant.
  const lead = Number(go - now()) / 1e6;
  if (lead > 3) await new Promise((r) => setTimeout(r, lead - 2));
  while (now() < go);
  let ops = 0;
  for (; ops < iters; ops++) {
    const t0 = now();
    if (end !== 0n && t0 >= end) break;
    let s: [bigint, bigint, number];
    if (job.kind === 'latchkey' || job.kind === 'latchkey-warm' || job.kind === 'thread') {
      s = await locks.request(NAME, job.kind === 'thread' ? {} : { scope: 'host' }, (l) => section(l!.token));
    } else if (job.kind === 'proper-lockfile') {
      const release = await lockfile.lock(target, { realpath: false, stale: 10_000, retries: { retries: 100_000, minTimeout: 1, maxTimeout: 10 } });
      s = section(0);
      await release();
    } else {
      s = await (async () => section(0))();
    }
    if (3 * ops + 2 < log.length) log.set([Number(s[0] - go), Number(s[1] - go), s[2]], 3 * ops);
    if (ops % 4 === 0 || iters !== Infinity) waits.push(Number(s[0] - t0) / 1e6);
  }
  fs.writeFileSync(job.out, log.subarray(0, Math.min(3 * ops, log.length)));
  return { ops, waitsMs: waits, endNs: now().toString() };
}

if (isMainThread) {
  const [kind, counter, run, threads, out] = process.argv.slice(2) as [string, string, string, string, string];
  if (kind === 'proper-lockfile') fs.writeFileSync(`${counter}.target`, '');
  if (kind === 'latchkey-warm') {
    await locks.request(NAME, { scope: 'host' }, () => {});
    await new Promise((r) => setTimeout(r, 300)); // the lease keeper runs
  }
  const n = Number(threads);
  // The threads start before 'ready' (a worker takes tens of ms to start): all of them wait for the go.
  const go: Array<(goNs: string) => void> = [];
  const done: Array<Promise<Done>> = [];
  if (n === 1) {
    done.push(new Promise<Done>((resolve, reject) => go.push((goNs) => loop({ kind, counter, run, out: `${out}.0`, goNs }).then(resolve, reject))));
  } else {
    const ready: Array<Promise<unknown>> = [];
    for (let i = 0; i < n; i++) {
      const w = new Worker(new URL(import.meta.url), { workerData: { kind, counter, run, out: `${out}.${i}` } });
      ready.push(new Promise((r) => w.once('message', r)));
      done.push(new Promise<Done>((resolve, reject) => {
        w.once('error', reject);
        go.push((goNs) => {
          w.once('message', resolve);
          w.postMessage(goNs);
        });
      }));
    }
    await Promise.all(ready);
  }
  process.send!('ready');
  process.once('message', async (m: { goNs: string }) => {
    for (const g of go) g(m.goNs);
    const results = await Promise.all(done);
    process.send!(results.map((r) => ({ ...r, goNs: m.goNs })), () => process.exit(0));
  });
} else {
  parentPort!.postMessage('ready');
  const goNs = await new Promise<string>((r) => parentPort!.once('message', r));
  parentPort!.postMessage(await loop({ ...(workerData as Omit<Job, 'goNs'>), goNs }));
}
