/**
 * The host tier's figures, as issue 13 lists them, each beside its floor
 * measured in the same run (bench/README.md explains every row):
 * hand-over to a waiting process, 4 processes × sequential requests with a
 * read-modify-write of a counter (each process's first request inside the
 * run), CPU per uncontended request, `latchkey run NAME -- true`, the 2 × 4
 * cohort, and SQLite's attempt + release. Floors: flock(2) in C
 * (host-floors.ts, skipped without a C compiler), the FIFO → libuv wake,
 * Node with no lock at all, proper-lockfile, `node -e 0`, the same threads
 * at thread scope, raw SQLite transactions. Every comparison is run R times
 * interleaved; each figure is the median, its spread in the note.
 */
import { execFileSync, fork } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { SqliteBackend } from '../src/bridge/host/sqlite.js';
import { monotonicMs } from '../src/bridge/identity.js';
import { startTogether } from './processes.js';
import { sqliteTxnFloorUs } from './host-anchors.js';
import { fifoWakeUs, flockContend, flockFloor, flockHandoverUs, wallMs } from './host-floors.js';
import { type Figure, figure, median, percentile } from './report.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BATCH = 100;

/** A tmpfs for the counters and lock directories when there is one (the workload), else the temp dir. */
function base(): string {
  return existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
}

/** median [min–max] of `xs`, for a note. */
function spread(xs: number[], digits = 0): string {
  const s = [...xs].sort((a, b) => a - b);
  return `median of ${s.length}: ${median(s).toFixed(digits)} [${s[0]!.toFixed(digits)}–${s.at(-1)!.toFixed(digits)}]`;
}

interface Contend {
  opsPerSec: number;
  waitP99Ms: number;
  minShare: number;
  exact: boolean;
  /** Gap from one holder's exit to the next one's enter at each change of process, µs. */
  handoverUs: number[];
}

/**
 * `procs` processes × `threads` threads of workers/host-contend.ts, `run`
 * ('iters:N' or 'ms:N'), started at one instant: ops/s over [go, last end],
 * the wait p99, each process's share, exclusion (a counter read-modified-
 * written under the lock, exact unless kind 'none').
 */
export async function contend(kind: string, procs: number, threads: number, run: string, env: NodeJS.ProcessEnv = {}): Promise<Contend> {
  const dir = mkdtempSync(join(base(), 'latchkey-bench-'));
  const counter = join(dir, 'counter');
  writeFileSync(counter, Buffer.alloc(8));
  let exits: Array<Promise<void>> = [];
  try {
    const children = Array.from({ length: procs }, (_, i) => fork(here('./workers/host-contend.js'), [kind, counter, run, String(threads), join(dir, `log-${i}`)], {
      env: { ...process.env, LATCHKEY_DIR: join(dir, 'locks'), ...env }, execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }));
    exits = children.map((c) => new Promise<void>((r) => c.once('exit', () => r())));
    const results = await startTogether<Array<{ ops: number; waitsMs: number[]; endNs: string; goNs: string }>>(children, 50_000_000n);
    const t0 = BigInt(results[0]![0]!.goNs);
    const end = results.flat().reduce((m, r) => (BigInt(r.endNs) > m ? BigInt(r.endNs) : m), 0n);
    const perProcess = results.map((r) => r.reduce((n, t) => n + t.ops, 0));
    const ops = perProcess.reduce((a, b) => a + b, 0);
    const seconds = Number(end - t0) / 1e9;
    const all: Array<[number, number, number, number]> = [];
    results.forEach((r, p) => r.forEach((_, t) => {
      const b = readFileSync(join(dir, `log-${p}.${t}`));
      const f = new Float64Array(b.buffer, b.byteOffset, b.byteLength / 8);
      for (let i = 0; i + 2 < f.length; i += 3) all.push([f[i]!, f[i + 1]!, f[i + 2]!, p]);
    }));
    all.sort((a, b) => a[0] - b[0]);
    let exact = kind === 'none' || Number(readFileSync(counter).readBigUInt64LE(0)) === ops;
    const handoverUs: number[] = [];
    for (let i = 1; i < all.length; i++) {
      if (kind !== 'none' && all[i]![0] < all[i - 1]![1]) exact = false;
      if (kind !== 'none' && kind !== 'proper-lockfile' && !(all[i]![2] > all[i - 1]![2])) exact = false; // tokens in grant order
      if (all[i]![3] !== all[i - 1]![3]) handoverUs.push((all[i]![0] - all[i - 1]![1]) / 1000);
    }
    const waits = results.flat().flatMap((t) => t.waitsMs).sort((a, b) => a - b);
    return { opsPerSec: ops / seconds, waitP99Ms: percentile(waits, 0.99), minShare: Math.min(...perProcess.map((n) => n / ops)), exact, handoverUs };
  } finally {
    await Promise.all(exits);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Hand-over to a parked waiting process, p50 µs (workers/host-pingpong.ts). */
export async function handoverUs(rounds: number): Promise<number> {
  const dir = mkdtempSync(join(base(), 'latchkey-bench-'));
  const env = { ...process.env, LATCHKEY_DIR: join(dir, 'locks'), LATCHKEY_BACKEND: 'file' };
  const parent = fork(here('./workers/host-pingpong.js'), ['parent-helper'], { env, execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const child = fork(here('./workers/host-pingpong.js'), ['child'], { env, execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const queue = (c: typeof child) => {
    const q: unknown[] = [];
    let wake: (() => void) | undefined;
    c.on('message', (m) => {
      q.push(m);
      wake?.();
    });
    return async () => {
      while (q.length === 0) await new Promise<void>((r) => (wake = r));
      return q.shift();
    };
  };
  const fromParent = queue(parent), fromChild = queue(child);
  try {
    await fromParent();
    await fromChild();
    const lat: number[] = [];
    for (let r = 0; r < rounds; r++) {
      parent.send('hold');
      await fromParent(); // holds
      child.send('take');
      await fromChild(); // asking
      await sleep(20); // it has queued and its event loop sleeps
      parent.send('release');
      const { t0 } = (await fromParent()) as { t0: string };
      const { t } = (await fromChild()) as { t: string };
      lat.push(Number(BigInt(t) - BigInt(t0)) / 1000);
    }
    return percentile(lat.sort((a, b) => a - b), 0.5);
  } finally {
    parent.kill('SIGKILL');
    child.kill('SIGKILL');
    await Promise.all([parent, child].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  }
}

async function attemptReleaseUs(backend: SqliteBackend, time: number): Promise<number> {
  const bench = new Bench({ time, warmupTime: 100 });
  const req = { name: 'bench:uncontended', mode: 'exclusive' as const, ttl: 10_000, steal: false, once: true, since: monotonicMs() };
  bench.add('attempt + release', () => {
    for (let i = 0; i < BATCH; i++) {
      const r = backend.acquire(req);
      if (!('granted' in r)) throw new Error('uncontended attempt was refused');
      backend.release(req.name, r.granted.token, false);
    }
  });
  await bench.run();
  const r = bench.tasks[0]!.result;
  if (r.state !== 'completed') throw new Error(`bench: ${r.state}`);
  return (r.latency.p50 * 1000) / BATCH;
}

export async function hostBench(quick: boolean, log: (s: string) => void = () => {}): Promise<Figure[]> {
  const figures: Figure[] = [];
  const rounds = quick ? 1 : 3, iters = quick ? 100 : 250, dir = mkdtempSync(join(base(), 'latchkey-bench-'));
  try {
    // --- hand-over and 4 × sequential requests, interleaved with their floors -----------------
    const r: Record<string, number[]> = {};
    const add = (k: string, v: number) => (r[k] ??= []).push(v);
    const hasFlock = flockFloor() !== null;
    for (let round = 0; round < rounds; round++) {
      log(`  host round ${round + 1}/${rounds} …`);
      if (hasFlock) {
        const f = flockContend(dir, 4, iters)!;
        add('flock', f.opsPerSec);
        add('flockHandover', flockHandoverUs(dir, quick ? 50 : 200)!);
      }
      const wake = await fifoWakeUs(dir, quick ? 50 : 200);
      add('fifoLibuv', wake.libuv);
      add('fifoSync', wake.sync);
      add('none', (await contend('none', 4, 1, `iters:${iters}`)).opsPerSec);
      const lk = await contend('latchkey', 4, 1, `iters:${iters}`, { LATCHKEY_BACKEND: 'file' });
      if (!lk.exact) throw new Error('host contended: two holders overlapped, or tokens went backwards');
      add('latchkey', lk.opsPerSec);
      add('latchkeyP99', lk.waitP99Ms);
      add('latchkeyShare', lk.minShare * 100);
      add('latchkeyGap', median(lk.handoverUs));
      const warm = await contend('latchkey-warm', 4, 1, `iters:${iters}`, { LATCHKEY_BACKEND: 'file' });
      if (!warm.exact) throw new Error('host contended (warm): two holders overlapped, or tokens went backwards');
      add('warm', warm.opsPerSec);
      add('warmP99', warm.waitP99Ms);
      add('warmGap', median(warm.handoverUs));
      const pl = await contend('proper-lockfile', 4, 1, `iters:${iters}`);
      if (!pl.exact) throw new Error('proper-lockfile overlapped');
      add('properLockfile', pl.opsPerSec);
      add('properLockfileP99', pl.waitP99Ms);
      add('handover', await handoverUs(quick ? 30 : 100));
    }
    const m = (k: string) => median(r[k]!);
    const note = (k: string, digits = 0) => spread(r[k]!, digits);
    const handover = m('handover');
    if (hasFlock) {
      figures.push(figure({
        figure: 'host hand-over to a waiting process, p50 (issue 13: ≤ 4× flock)', unit: 'µs', better: 'lower', target: '≤ 4×',
        latchkey: handover, anchorName: 'flock(2) in C: hand-over to a waiter parked in flock()', anchor: m('flockHandover'),
        note: `latchkey ${note('handover')} µs; flock ${note('flockHandover', 1)} µs`,
      }));
    }
    figures.push(figure({
      figure: 'host hand-over to a waiting process, p50 (restated: ≤ 4× the FIFO wake floor)', unit: 'µs', better: 'lower', target: '≤ 4×',
      latchkey: handover, anchorName: 'a byte on a FIFO → libuv read callback in another Node process', anchor: m('fifoLibuv'),
      note: `FIFO → libuv ${note('fifoLibuv')} µs; FIFO → blocking readSync ${note('fifoSync')} µs`,
    }));
    const shares = `smallest process share ${note('latchkeyShare')} %; hand-over gap at a change of process ${note('latchkeyGap')} µs`;
    if (hasFlock) {
      figures.push(figure({
        figure: `host: 4 processes × ${iters} sequential requests, counter read-modify-write (first requests in the run): throughput`,
        unit: 'k ops/s', better: 'higher', target: '≥ 0.33×', latchkey: m('latchkey') / 1e3, anchorName: 'flock(2) in C, same workload', anchor: m('flock') / 1e3,
        note: `latchkey ${note('latchkey')} ops/s; flock ${note('flock')}`,
      }));
    }
    figures.push(figure({
      figure: `host: 4 × ${iters} read-modify-write: throughput (restated: beside the no-lock Node ceiling)`, unit: 'k ops/s', better: 'higher', target: '≥ 0.33×',
      latchkey: m('latchkey') / 1e3, anchorName: 'the same 4 Node processes with no lock at all', anchor: m('none') / 1e3, note: `no lock ${note('none')} ops/s`,
    }));
    figures.push(figure({
      figure: `host: 4 × ${iters} read-modify-write: throughput (beside proper-lockfile)`, unit: 'k ops/s', better: 'higher', target: '≥ 10×',
      latchkey: m('latchkey') / 1e3, anchorName: 'proper-lockfile, same workload', anchor: m('properLockfile') / 1e3, note: `proper-lockfile ${note('properLockfile')} ops/s; ${shares}`,
    }));
    figures.push(figure({
      figure: `host: 4 × ${iters} read-modify-write, processes warmed up before the run (table, directory, keeper): throughput`, unit: 'k ops/s', better: 'higher',
      latchkey: m('warm') / 1e3, anchorName: 'the same 4 Node processes with no lock at all', anchor: m('none') / 1e3,
      note: `warm ${note('warm')} ops/s; wait p99 ${note('warmP99', 1)} ms; hand-over gap ${note('warmGap')} µs`,
    }));
    figures.push(figure({
      figure: `host: 4 × ${iters} read-modify-write: wait p99`, unit: 'ms', better: 'lower', target: 'p99 ≤ 5 ms',
      latchkey: m('latchkeyP99'), anchorName: 'proper-lockfile', anchor: m('properLockfileP99'), note: `latchkey ${note('latchkeyP99', 1)} ms`,
    }));
    figures.push(figure({
      figure: `host: 4 × ${iters} read-modify-write: the smallest process's share of the grants`, unit: '%', better: 'higher', target: '≥ 15 %',
      latchkey: Math.min(...r.latchkeyShare!), anchorName: 'a fair share (1/4)', anchor: 25, note: note('latchkeyShare'),
    }));

    // --- CPU per uncontended request -----------------------------------------------------------
    log('  uncontended CPU …');
    const cpu = JSON.parse(execFileSync(process.execPath, [here('./workers/host-uncontended.js'), quick ? '1000' : '3000', quick ? '3' : '5'], {
      env: { ...process.env, LATCHKEY_DIR: join(dir, 'unc'), LATCHKEY_BACKEND: 'file' }, encoding: 'utf8',
    }).trim().split('\n').pop()!) as { threadUs: number[]; hostUs: number[] };
    figures.push(figure({
      figure: 'host: CPU per uncontended request (await locks.request, one process, every thread counted)', unit: 'µs', better: 'lower', target: '≤ 1.5×',
      latchkey: median(cpu.hostUs), anchorName: 'the same request at thread scope', anchor: median(cpu.threadUs),
      note: `host ${spread(cpu.hostUs, 1)} µs; thread ${spread(cpu.threadUs, 1)} µs`,
    }));

    // --- latchkey run NAME -- true ---------------------------------------------------------------
    log('  latchkey run …');
    const main = here('../src/cli/main.js'), runDir = join(dir, 'run');
    wallMs(process.execPath, [main, 'run', 'warm', '--', 'true'], { ...process.env, LATCHKEY_DIR: runDir });
    const e0: number[] = [], run: number[] = [];
    for (let i = 0; i < (quick ? 5 : 15); i++) {
      e0.push(wallMs(process.execPath, ['-e', '0']));
      run.push(wallMs(process.execPath, [main, 'run', 'bench:run', '--', 'true'], { ...process.env, LATCHKEY_DIR: runDir, LATCHKEY_BACKEND: 'file' }));
    }
    figures.push(figure({
      figure: '`latchkey run NAME -- true`: wall time', unit: 'ms', better: 'lower', target: '≤ 1.3×',
      latchkey: median(run), anchorName: '`node -e 0`', anchor: median(e0), note: `latchkey run ${spread(run)} ms; node -e 0 ${spread(e0)} ms`,
    }));

    // --- cohort: 2 processes × 4 threads vs the same 8 threads at thread scope ------------------
    log('  cohort …');
    const cohort: number[] = [], threads: number[] = [];
    for (let round = 0; round < rounds; round++) {
      threads.push((await contend('thread', 1, 8, `ms:${quick ? 300 : 1000}`)).opsPerSec);
      const c = await contend('latchkey', 2, 4, `ms:${quick ? 300 : 1000}`, { LATCHKEY_BACKEND: 'file' });
      if (!c.exact) throw new Error('host cohort: two holders overlapped');
      cohort.push(c.opsPerSec);
    }
    figures.push(figure({
      figure: 'host cohort: 2 processes × 4 threads on one name, counter read-modify-write: throughput', unit: 'k ops/s', better: 'higher', target: '≥ 0.9×',
      latchkey: median(cohort) / 1e3, anchorName: 'the same 8 threads at thread scope, one process', anchor: median(threads) / 1e3,
      note: `cohort ${spread(cohort)} ops/s; thread scope ${spread(threads)}`,
    }));

    // --- SQLite: attempt + release uncontended -------------------------------------------------
    log('  SQLite …');
    const sqlDir = join(dir, 'sqlite');
    const sqlite = new SqliteBackend(join(sqlDir, 'locks.db'));
    const lkSql: number[] = [], rawSql: number[] = [];
    for (let round = 0; round < rounds; round++) {
      rawSql.push(await sqliteTxnFloorUs(join(dir, `floor-${round}.db`)));
      lkSql.push(await attemptReleaseUs(sqlite, quick ? 200 : 1000));
    }
    sqlite.close();
    figures.push(figure({
      figure: 'host, SQLite backend uncontended: acquire + release', unit: 'µs', better: 'lower', target: '≤ 1.5×',
      latchkey: median(lkSql), anchorName: 'raw SQLite BEGIN IMMEDIATE insert, then delete', anchor: median(rawSql),
      note: `latchkey ${spread(lkSql, 1)} µs; raw ${spread(rawSql, 1)} µs`,
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return figures;
}
