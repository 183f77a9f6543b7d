/**
 * The host tier's figures (bench/README.md explains each): the backends
 * uncontended beside the raw floors they stand on, 4 processes contended
 * beside proper-lockfile under the same workload, the wake-up after a
 * release beside a raw fs.watch and a polling client, and cohorting beside
 * the same threads with no cohort to share a grant with.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { FileBackend } from '../src/bridge/host/file.js';
import { SqliteBackend } from '../src/bridge/host/sqlite.js';
import { monotonicMs } from '../src/bridge/identity.js';
import { overlapLog, startTogether } from './processes.js';
import { createUnlinkFloorUs, pollWakeUs, properLockfileUncontendedUs, sqliteTxnFloorUs, watchWakeUs } from './host-anchors.js';
import { type Figure, figure, median, percentile } from './report.js';

const script = fileURLToPath(new URL('./workers/host-contend.js', import.meta.url));
const BATCH = 100;

type Backend = FileBackend | SqliteBackend;

async function attemptReleaseUs(backend: Backend, time: number): Promise<number> {
  const bench = new Bench({ time, warmupTime: 100 });
  const req = { name: 'bench:uncontended', mode: 'exclusive' as const, ttl: 10_000, steal: false, wait: false, since: monotonicMs() };
  bench.add('attempt + release', () => {
    for (let i = 0; i < BATCH; i++) {
      const r = backend.attempt(req);
      if (!r.granted) throw new Error('uncontended attempt was refused');
      backend.release(req.name, r.token, false);
    }
  });
  await bench.run();
  const r = bench.tasks[0]!.result;
  if (r.state !== 'completed') throw new Error(`bench: ${r.state}`);
  return (r.latency.p50 * 1000) / BATCH;
}

interface Run {
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  exact: boolean;
  /** Per process: its share of all operations. */
  shares: number[];
  /** Host grants the backend made, over operations. */
  backendPerOp: number;
  /** release → next holder running, µs, at every change of process (the next one was waiting). */
  handoffUs: number[];
}

/** `processes` × `threads` contending for `ms`; the overlap log proves exclusion. */
async function contendedRun(kind: 'latchkey' | 'raw-file' | 'proper-lockfile', backend: string, processes: number, threads: number, ms: number): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'));
  let exits: Array<Promise<void>> = [];
  try {
    const env = { ...process.env, LATCHKEY_DIR: dir, LATCHKEY_BACKEND: backend };
    const children = Array.from({ length: processes }, (_, i) =>
      fork(script, [kind, dir, String(ms), String(threads), join(dir, `log-${i}`)], { env, execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    // The directory goes only once they are gone: each cleans up its records as it exits.
    exits = children.map((c) => new Promise<void>((r) => c.once('exit', () => r())));
    const results = await startTogether<Array<{ ops: number; waits: number[]; backend: number[] }>>(children, 50_000_000n);
    const { exact, handoffUs } = overlapLog(Array.from({ length: processes }, (_, p) =>
      Array.from({ length: threads }, (_, t) => ({ file: join(dir, `log-${p}.${t}`), proc: p }))).flat());
    const perProcess = results.map((r) => r.reduce((n, t) => n + t.ops, 0));
    const ops = perProcess.reduce((a, b) => a + b, 0);
    const waits = Float64Array.from(results.flat().flatMap((t) => t.waits)).sort();
    const grants = results.reduce((n, r) => n + new Set(r.flatMap((t) => t.backend)).size, 0);
    return {
      opsPerSec: (ops / ms) * 1000, p50Ms: percentile(waits, 0.5), p99Ms: percentile(waits, 0.99), exact,
      shares: perProcess.map((n) => n / ops), backendPerOp: grants / ops, handoffUs,
    };
  } finally {
    await Promise.all(exits);
    rmSync(dir, { recursive: true, force: true });
  }
}

const ms = (quick: boolean) => (quick ? 300 : 1000);

export async function hostBench(quick: boolean): Promise<Figure[]> {
  const figures: Figure[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'));
  try {
    const time = quick ? 200 : 1000;
    const floor = await createUnlinkFloorUs(dir);
    const file = await attemptReleaseUs(new FileBackend(join(dir, 'file')), time);
    figures.push(figure({
      figure: 'host lock, file backend uncontended: attempt + release', unit: 'µs', better: 'lower', target: '≤ 1.5×',
      latchkey: file, anchorName: 'raw open(wx)+close+unlink', anchor: floor, note: 'hard links: no inode per grant',
    }));
    const sqliteFloor = await sqliteTxnFloorUs(join(dir, 'floor.db'));
    const sqlite = new SqliteBackend(join(dir, 'locks.db'));
    figures.push(figure({
      figure: 'host lock, SQLite backend uncontended: attempt + release', unit: 'µs', better: 'lower',
      latchkey: await attemptReleaseUs(sqlite, time), anchorName: 'raw SQLite IMMEDIATE insert + delete', anchor: sqliteFloor,
    }));
    sqlite.close();
    figures.push(figure({
      figure: 'host lock, file backend uncontended (anchor: proper-lockfile)', unit: 'µs', better: 'lower',
      latchkey: file, anchorName: 'proper-lockfile lock + release', anchor: await properLockfileUncontendedUs(dir),
    }));

    const trials = quick ? 1 : 3;
    for (const backend of ['file', 'sqlite']) {
      const lk: Run[] = [], pl: Run[] = [];
      for (let t = 0; t < trials; t++) {
        pl.push(await contendedRun('proper-lockfile', backend, 4, 1, ms(quick)));
        lk.push(await contendedRun('latchkey', backend, 4, 1, ms(quick)));
      }
      if (![...lk, ...pl].every((r) => r.exact)) throw new Error(`host contended (${backend}): two holders overlapped (latchkey ${lk.map((r) => r.exact)}, proper-lockfile ${pl.map((r) => r.exact)})`);
      const share = Math.min(...lk.flatMap((r) => r.shares));
      figures.push(figure({
        figure: `host lock, ${backend} backend, 4 processes contended, empty section: throughput`, unit: 'k ops/s', better: 'higher',
        target: backend === 'file' ? '≥ 20×' : undefined,
        latchkey: median(lk.map((r) => r.opsPerSec)) / 1e3, anchorName: 'proper-lockfile, same workload', anchor: median(pl.map((r) => r.opsPerSec)) / 1e3,
        note: `exact (overlap log); smallest process share ${(share * 100).toFixed(0)} %`,
      }));
      figures.push(figure({
        figure: `host lock, ${backend} backend, 4 processes contended: wait p99`, unit: 'ms', better: 'lower', target: backend === 'file' ? 'p99 ≤ 5 ms' : undefined,
        latchkey: median(lk.map((r) => r.p99Ms)), anchorName: 'proper-lockfile', anchor: median(pl.map((r) => r.p99Ms)),
        note: `p50 ${median(lk.map((r) => r.p50Ms)).toFixed(3)} ms vs ${median(pl.map((r) => r.p50Ms)).toFixed(3)} ms`,
      }));
      if (backend === 'file') {
        const watch = await watchWakeUs(dir, quick ? 50 : 200);
        const poll = await pollWakeUs(dir, 10, quick ? 20 : 50);
        const handoff = median(lk.flatMap((r) => r.handoffUs));
        figures.push(figure({
          figure: 'host lock hand-over to a waiting process: release → next holder running (median)', unit: 'µs', better: 'lower',
          latchkey: handoff, anchorName: 'raw fs.watch: unlink → callback in another process', anchor: watch,
        }));
        figures.push(figure({
          figure: 'host lock hand-over (anchor: a client polling every 10 ms)', unit: 'µs', better: 'lower',
          latchkey: handoff, anchorName: 'polling client, 10 ms', anchor: poll,
        }));
      }
    }

    const cohort: Run[] = [], solo: Run[] = [];
    for (let t = 0; t < trials; t++) {
      solo.push(await contendedRun('raw-file', 'file', 2, 4, ms(quick)));
      cohort.push(await contendedRun('latchkey', 'file', 2, 4, ms(quick)));
    }
    if (![...cohort, ...solo].every((r) => r.exact)) throw new Error('host cohort: two holders overlapped');
    figures.push(figure({
      figure: 'host lock cohort: 2 processes × 4 threads, empty section: throughput', unit: 'k ops/s', better: 'higher', target: '≥ 10×',
      latchkey: median(cohort.map((r) => r.opsPerSec)) / 1e3, anchorName: 'no cohort: each thread a backend client of its own', anchor: median(solo.map((r) => r.opsPerSec)) / 1e3,
      note: `process shares ${cohort[0]!.shares.map((s) => `${(s * 100).toFixed(0)} %`).join(' / ')}; host grants per lock ${median(cohort.map((r) => r.backendPerOp)).toFixed(3)} vs ${median(solo.map((r) => r.backendPerOp)).toFixed(3)}`,
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return figures;
}
