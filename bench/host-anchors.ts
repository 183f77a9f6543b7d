/**
 * Host anchors for latchkey's cross-process figures: what the operating
 * system and the usual npm lock libraries cost on this machine, measured in
 * the same run as latchkey so the integrator can stand a latchkey figure
 * beside one of these. Every function returns plain numbers, not Figures.
 * Each works in a fresh `mkdtemp` directory under the `dir` it is given and
 * removes it before returning (the SQLite one removes its database files
 * only when it created them).
 *
 * - createUnlinkFloorUs: `openSync(p, 'wx')` + `closeSync` + `unlinkSync`,
 *   the raw exclusive-create that every lock-file scheme pays at least once
 *   per acquire+release. tinybench, batches of 100, p50 of a batch ÷ 100.
 * - sqliteTxnFloorUs: one lease-like acquire+release pair in raw SQLite
 *   (better-sqlite3, WAL, synchronous=NORMAL, prepared statements):
 *   `BEGIN IMMEDIATE; INSERT OR REPLACE …; COMMIT` then
 *   `BEGIN IMMEDIATE; DELETE …; COMMIT`. tinybench, batches of 20 pairs.
 * - properLockfileUncontendedUs: `await lock(file, { realpath: false })` +
 *   `await release()` with nobody else around (a mkdir, a stat, an rmdir and
 *   their promise hops). tinybench, batches of 10.
 * - properLockfileContended: N forked processes
 *   (dist/bench/workers/proper-lockfile-contend.js) each loop for `ms`:
 *   lock with retries (it polls: sleep 1..10 ms and try the mkdir again),
 *   non-atomic read-modify-write of a counter file, release. One timed run,
 *   all children released together by a 'go' message after all said
 *   'ready'; ops/s over [go, last child's last release] on one monotonic
 *   clock; wait = lock() call → granted; exact = file counter === Σ ops.
 * - watchWakeUs / pollWakeUs: one process unlinks a file, another notices.
 *   The child (dist/bench/workers/fs-wake.js) is armed for a file, the
 *   parent waits a few ms (so the child is idle in epoll, like a parked
 *   waiter) and unlinks; the child stamps `process.hrtime.bigint()` when its
 *   `fs.watch(dir)` callback fires (watch) or when its `existsSync` poll every
 *   `intervalMs` first sees the file gone (poll: the "polling client"
 *   anchor; the parent's delay is randomised over one interval so the phase
 *   is uniform). hrtime is CLOCK_MONOTONIC on Linux, one clock for all
 *   processes, so child stamp − parent stamp is the wake latency. Median µs.
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import Database from 'better-sqlite3';
import * as lockfile from 'proper-lockfile';
import { median, percentile } from './report.js';
import { nextMessage } from './processes.js';

const worker = (name: string) => fileURLToPath(new URL(`./workers/${name}.js`, import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const FS_BATCH = 100;
const SQLITE_BATCH = 20;
const LOCKFILE_BATCH = 10;

/** tinybench p50 of one task, in µs per operation. */
async function p50PerOpUs(bench: Bench, name: string, batch: number): Promise<number> {
  await bench.run();
  const r = bench.getTask(name)!.result;
  if (r.state !== 'completed') throw new Error(`bench task ${name} did not complete: ${r.state}${r.state === 'errored' ? ` (${r.error.message})` : ''}`);
  return (r.latency.p50 * 1000) / batch; // ms → µs, per operation
}

async function inTempDir<T>(dir: string, body: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = fs.mkdtempSync(path.join(dir, 'latchkey-anchor-'));
  try {
    return await body(tmp);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Median µs of one exclusive create + close + unlink. `iterations`: tinybench's minimum task runs (each a batch of 100). */
export async function createUnlinkFloorUs(dir: string, iterations = 64): Promise<number> {
  return inTempDir(dir, async (tmp) => {
    const p = path.join(tmp, 'floor.lock');
    const name = 'open(wx) + close + unlink';
    const bench = new Bench({ time: 300, warmupTime: 100, iterations });
    bench.add(name, () => {
      for (let i = 0; i < FS_BATCH; i++) {
        fs.closeSync(fs.openSync(p, 'wx'));
        fs.unlinkSync(p);
      }
    });
    return p50PerOpUs(bench, name, FS_BATCH);
  });
}

/** Median µs of one raw SQLite lease acquire+release pair (two IMMEDIATE transactions, WAL, synchronous=NORMAL). */
export async function sqliteTxnFloorUs(dbPath: string): Promise<number> {
  const created = !fs.existsSync(dbPath);
  const db = new Database(dbPath);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec('CREATE TABLE IF NOT EXISTS t (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires INTEGER NOT NULL)');
    const begin = db.prepare('BEGIN IMMEDIATE');
    const commit = db.prepare('COMMIT');
    const put = db.prepare('INSERT OR REPLACE INTO t(name, owner, expires) VALUES (?, ?, ?)');
    const del = db.prepare('DELETE FROM t WHERE name = ?');
    const owner = `pid:${process.pid}`;
    const name = 'sqlite lease acquire + release';
    const bench = new Bench({ time: 300, warmupTime: 100 });
    bench.add(name, () => {
      for (let i = 0; i < SQLITE_BATCH; i++) {
        begin.run();
        put.run('bench:lease', owner, Date.now() + 10_000);
        commit.run();
        begin.run();
        del.run('bench:lease');
        commit.run();
      }
    });
    return await p50PerOpUs(bench, name, SQLITE_BATCH);
  } finally {
    db.close();
    if (created) for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) fs.rmSync(f, { force: true });
  }
}

/** Median µs of one uncontended proper-lockfile `lock()` + `release()`. */
export async function properLockfileUncontendedUs(dir: string): Promise<number> {
  return inTempDir(dir, async (tmp) => {
    const file = path.join(tmp, 'target');
    const name = 'proper-lockfile lock + release';
    const bench = new Bench({ time: 300, warmupTime: 100 });
    bench.add(name, async () => {
      for (let i = 0; i < LOCKFILE_BATCH; i++) {
        const release = await lockfile.lock(file, { realpath: false });
        await release();
      }
    });
    return p50PerOpUs(bench, name, LOCKFILE_BATCH);
  });
}

interface ChildDone { ops: number; waits: number[]; endNs: string; error?: string }

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`child exited with ${code ?? signal}`))));
  });
}


/** N processes contending through proper-lockfile for `ms` ms: one timed run. */
export async function properLockfileContended(
  dir: string, processes: number, ms: number,
): Promise<{ opsPerSec: number; p50Ms: number; p99Ms: number; exact: boolean }> {
  return inTempDir(dir, async (tmp) => {
    const counter = path.join(tmp, 'counter');
    fs.writeFileSync(counter, '0');
    const children = Array.from({ length: processes }, () =>
      fork(worker('proper-lockfile-contend'), [counter, String(ms)], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    const exits = children.map(exited);
    for (const e of exits) e.catch(() => {}); // awaited below; this only keeps an early exit from being "unhandled"
    try {
      await Promise.all(children.map((c) => nextMessage<string>(c))); // each says 'ready'
      const done = children.map((c) => nextMessage<ChildDone>(c));
      const goNs = process.hrtime.bigint();
      for (const c of children) c.send('go');
      const results = await Promise.all(done);
      await Promise.all(exits);
      const failed = results.find((r) => r.error);
      if (failed) throw new Error(`proper-lockfile child failed: ${failed.error}`);
      const ops = results.reduce((n, r) => n + r.ops, 0);
      const endNs = results.reduce((m, r) => (BigInt(r.endNs) > m ? BigInt(r.endNs) : m), goNs);
      const elapsedMs = Number(endNs - goNs) / 1e6;
      const waits = Float64Array.from(results.flatMap((r) => r.waits)).sort();
      const final = Number(fs.readFileSync(counter, 'utf8'));
      return { opsPerSec: (ops / elapsedMs) * 1000, p50Ms: percentile(waits, 0.5), p99Ms: percentile(waits, 0.99), exact: final === ops };
    } finally {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill();
      await Promise.allSettled(exits);
    }
  });
}

/** One child, `rounds` unlinks: child stamp − parent stamp, in µs. */
async function wakeRounds(dir: string, mode: 'watch' | 'poll', intervalMs: number, rounds: number): Promise<number> {
  return inTempDir(dir, async (tmp) => {
    const child = fork(worker('fs-wake'), [tmp, mode, String(intervalMs)], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const exit = exited(child);
    exit.catch(() => {});
    try {
      await nextMessage<string>(child); // 'ready': the watcher is set up
      const latencies: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const name = `wake-${i}`;
        const file = path.join(tmp, name);
        fs.closeSync(fs.openSync(file, 'wx'));
        const armed = nextMessage<string>(child);
        child.send({ arm: name });
        await armed;
        // Let the child settle into epoll; for polling, a uniform phase over one interval.
        await sleep(mode === 'poll' ? 2 + Math.random() * intervalMs : 2 + Math.random() * 3);
        const woke = nextMessage<{ t: string }>(child);
        const t0 = process.hrtime.bigint();
        fs.unlinkSync(file);
        let timer: NodeJS.Timeout | undefined;
        const { t } = await Promise.race([woke, new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${mode}: no wake-up 5 s after the unlink`)), 5000);
        })]).finally(() => clearTimeout(timer));
        latencies.push(Number(BigInt(t) - t0) / 1000);
      }
      child.send({ stop: true });
      await exit;
      return median(latencies);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill();
      await exit.catch(() => {});
    }
  });
}

/** Median µs from `unlinkSync` in this process to the `fs.watch(dir)` callback in another. */
export async function watchWakeUs(dir: string, rounds = 200): Promise<number> {
  return wakeRounds(dir, 'watch', 0, rounds);
}

/** Median µs from `unlinkSync` in this process to another process's `existsSync` poll (every `intervalMs`) seeing it. */
export async function pollWakeUs(dir: string, intervalMs: number, rounds: number): Promise<number> {
  return wakeRounds(dir, 'poll', intervalMs, rounds);
}
