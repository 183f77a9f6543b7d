/**
 * The cluster tier's figures, on the PostgreSQL server LATCHKEY_PG_URL names
 * (none: skipped, with a line saying so): uncontended lockSync()+unlock()
 * beside the advisory-lock npm package on the same server; 4 processes
 * contended, empty section, beside advisory-lock under the same workload
 * (an overlap log proves both exact); and the wake-up of a waiting process
 * after a release beside a client that polls pg_try_advisory_lock every
 * 10 ms.
 *
 * Standalone: `node dist/bench/cluster.js [--quick]` prints the table.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { locks } from '../src/index.js';
import { overlapLog, startTogether } from './processes.js';
import { advisoryLock } from './workers/cluster-advisory-lock.js';
import { type Figure, figure, markdown, median, percentile } from './report.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const log = (s: string) => process.stderr.write(`${s}\n`);
/** Names of this run only: the server's token table outlives every run. */
const run = `bench:cluster:${process.pid}:${randomBytes(3).toString('hex')}`;

/** µs per op: median over `batches` batches of `batch` ops, after a warm-up. */
async function perOpUs(op: () => unknown, batch: number, batches: number): Promise<number> {
  for (let i = 0; i < Math.min(batch, 20); i++) await op();
  const per: number[] = [];
  for (let b = 0; b < batches; b++) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) await op();
    per.push(((performance.now() - t0) * 1000) / batch);
  }
  return median(per);
}

interface Run { opsPerSec: number; p50Ms: number; p99Ms: number; exact: boolean; shares: number[]; handoffUs: number[] }

/** `processes` contending for one name for `ms`; the overlap log proves exclusion. */
async function contendedRun(kind: 'latchkey' | 'advisory-lock', processes: number, ms: number, trial: number): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'));
  const name = `${run}:contend:${kind}:${trial}`;
  try {
    const children = Array.from({ length: processes }, (_, i) =>
      fork(here('./workers/cluster-contend.js'), [kind, name, String(ms), join(dir, `log-${i}`)], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    const results = await startTogether<{ ops: number; waits: number[] }>(children, 200_000_000n);
    const { exact, handoffUs } = overlapLog(Array.from({ length: processes }, (_, p) => ({ file: join(dir, `log-${p}`), proc: p })));
    const perProcess = results.map((r) => r.ops);
    const ops = perProcess.reduce((a, b) => a + b, 0);
    const waits = Float64Array.from(results.flatMap((r) => r.waits)).sort();
    return {
      opsPerSec: (ops / ms) * 1000, p50Ms: percentile(waits, 0.5), p99Ms: percentile(waits, 0.99), exact,
      shares: perProcess.map((x) => x / ops), handoffUs,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

type Reply = Record<string, string | boolean>;
function ask(c: ReturnType<typeof fork>, m: { op: string }, key: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`bench child exited with ${code}`));
    const onMessage = (r: Reply) => {
      if (!(key in r)) return;
      c.off('message', onMessage);
      c.off('exit', onExit);
      resolve(r);
    };
    c.on('message', onMessage);
    c.once('exit', onExit);
    c.send(m);
  });
}

/** Release → a waiting process granted, µs, one round at a time: the holder releases, the waiter (waiting already) is timed. */
async function wakeUs(kind: 'latchkey' | 'poll', rounds: number): Promise<number[]> {
  const name = `${run}:wake:${kind}`;
  const start = (role: string) => fork(here('./workers/cluster-handoff.js'), [kind, role, name], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const holder = start('holder'), waiter = start('waiter');
  try {
    await Promise.all([holder, waiter].map((c) => new Promise((r) => c.once('message', r))));
    await Promise.all([ask(holder, { op: 'ready?' }, 'ready'), ask(waiter, { op: 'ready?' }, 'ready')]);
    const out: number[] = [];
    for (let i = 0; i < rounds; i++) {
      await ask(holder, { op: 'take' }, 'taken');
      const granted = ask(waiter, { op: 'wait' }, 'grantedNs');
      // The waiter waits by now; a jitter so that a poller's phase is not always the same.
      await new Promise((r) => setTimeout(r, 80 + Math.random() * 20));
      const { releasedNs } = await ask(holder, { op: 'release' }, 'releasedNs');
      const { grantedNs } = await granted;
      out.push(Number(BigInt(grantedNs as string) - BigInt(releasedNs as string)) / 1000);
    }
    return out;
  } finally {
    holder.kill('SIGKILL');
    waiter.kill('SIGKILL');
  }
}

export async function clusterBench(quick: boolean): Promise<Figure[]> {
  const url = process.env.LATCHKEY_PG_URL;
  if (url === undefined || url === '') {
    log('cluster tier skipped: LATCHKEY_PG_URL is not set (a PostgreSQL server, e.g. what .ci/postgres starts)');
    return [];
  }
  const figures: Figure[] = [];
  const where = new URL(url).host;

  // Uncontended: one process, one name, acquire + release in a loop.
  const name = `${run}:uncontended`;
  const lk = await perOpUs(() => locks.lockSync(name, { scope: 'cluster' })!.unlock(), quick ? 50 : 200, quick ? 3 : 7);
  const mutex = advisoryLock(url)(`${run}:uncontended:advisory-lock`);
  const al = await perOpUs(async () => {
    const release = await mutex.lock();
    await release();
  }, quick ? 20 : 50, quick ? 3 : 5);
  figures.push(figure({
    figure: 'cluster lock uncontended: lockSync() + unlock() (PostgreSQL session advisory lock)', unit: 'µs', better: 'lower',
    latchkey: lk, anchorName: 'advisory-lock: lock() + release()', anchor: al,
    note: `server ${where}; advisory-lock opens a connection per lock(), latchkey keeps the agent's session`,
  }));

  // Contended: 4 processes, empty section.
  const ms = quick ? 1000 : 3000, trials = quick ? 1 : 3;
  const lkRuns: Run[] = [], alRuns: Run[] = [];
  for (let t = 0; t < trials; t++) {
    alRuns.push(await contendedRun('advisory-lock', 4, ms, t));
    lkRuns.push(await contendedRun('latchkey', 4, ms, t));
  }
  if (![...lkRuns, ...alRuns].every((r) => r.exact)) {
    throw new Error(`cluster contended: two holders overlapped (latchkey ${lkRuns.map((r) => r.exact)}, advisory-lock ${alRuns.map((r) => r.exact)})`);
  }
  const share = Math.min(...lkRuns.flatMap((r) => r.shares));
  figures.push(figure({
    figure: 'cluster lock, 4 processes contended, empty section: throughput', unit: 'ops/s', better: 'higher',
    latchkey: median(lkRuns.map((r) => r.opsPerSec)), anchorName: 'advisory-lock, same workload', anchor: median(alRuns.map((r) => r.opsPerSec)),
    note: `exact (overlap log); smallest process share ${(share * 100).toFixed(0)} % (advisory-lock ${(Math.min(...alRuns.flatMap((r) => r.shares)) * 100).toFixed(0)} %)`,
  }));
  figures.push(figure({
    figure: 'cluster lock, 4 processes contended: wait p99', unit: 'ms', better: 'lower',
    latchkey: median(lkRuns.map((r) => r.p99Ms)), anchorName: 'advisory-lock', anchor: median(alRuns.map((r) => r.p99Ms)),
    note: `p50 ${median(lkRuns.map((r) => r.p50Ms)).toFixed(2)} ms vs ${median(alRuns.map((r) => r.p50Ms)).toFixed(2)} ms; `
      + `process shares latchkey ${lkRuns.map((r) => r.shares.map((x) => `${(x * 100).toFixed(0)}%`).join('/')).join(', ')}, `
      + `advisory-lock ${alRuns.map((r) => r.shares.map((x) => `${(x * 100).toFixed(0)}%`).join('/')).join(', ')}`,
  }));

  // Wake-up: release → the waiting process granted.
  const rounds = quick ? 10 : 40;
  const lkWake = await wakeUs('latchkey', rounds);
  const pollWake = await wakeUs('poll', rounds);
  figures.push(figure({
    figure: 'cluster lock wake-up: release → waiting process granted (median)', unit: 'µs', better: 'lower',
    latchkey: median(lkWake), anchorName: 'client polling pg_try_advisory_lock every 10 ms', anchor: median(pollWake),
    note: `p90 ${percentile(Float64Array.from(lkWake).sort(), 0.9).toFixed(0)} µs vs ${percentile(Float64Array.from(pollWake).sort(), 0.9).toFixed(0)} µs; `
      + `hand-over in the contended run (exit → next process's enter, median) ${median(lkRuns.flatMap((r) => r.handoffUs)).toFixed(0)} µs`,
  }));
  await forgetRun(url);
  return figures;
}

/** The rows this run's names left in latchkey's tables. */
async function forgetRun(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url, application_name: 'latchkey-bench' });
  try {
    await c.connect();
    for (const t of ['latchkey_tokens', 'latchkey_leases', 'latchkey_waiters']) await c.query(`DELETE FROM ${t} WHERE name LIKE $1`, [`${run}%`]);
  } catch (err) {
    log(`cluster bench: could not remove its rows: ${(err as Error).message}`);
  } finally {
    await c.end().catch(() => {});
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const figures = await clusterBench(process.argv.includes('--quick'));
  console.log(markdown(figures));
  for (const f of figures) if (f.note !== undefined) console.log(`- ${f.figure}: ${f.note}`);
  process.exit(0);
}
