/**
 * The cluster tier's figures (issue 14's targets), on the PostgreSQL server
 * LATCHKEY_PG_URL names (none: skipped, with a line saying so), each beside
 * its floor from the same run (bench/README.md says what each row measures):
 *
 * Uncontended, one process per kind, kept alive; each round asks every kind
 * (in a shuffled order) for one batch of lock + unlock; per kind the median
 * over rounds, and the median of the per-round ratios to the floor (paired:
 * a noisy round moves both):
 *   floor          pg client: pg_try_advisory_lock + pg_advisory_unlock
 *   latchkey       lockSync() + unlock(), every grant from the server
 *   re-take        lockSync() + unlock() of a name nobody else waits for
 *   advisory-lock  the npm package, lock() + release()
 * Contended, 4 processes, one name, empty section, kinds interleaved trial
 * by trial (floor, advisory-lock, latchkey), each process warmed up first
 * (1.5 s of the same workload): throughput, hand-over (exit of
 * one process's section → enter of the next process's, at each change of
 * process), wait p99, each process's share; the overlap log (no section
 * entered before the previous one left) and, for latchkey, tokens rising in
 * grant order, checked in every trial (a failure fails the run). Ratios are
 * per trial (each latchkey trial against the floor trial just before it).
 *
 * Standalone: `node dist/bench/cluster.js [--quick]` prints the table and
 * the spread of each ratio.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { nextMessage, startTogether } from './processes.js';
import { type Figure, figure, markdown, median, percentile } from './report.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const log = (s: string) => process.stderr.write(`${s}\n`);
/** Names of this run only: the server's tables outlive every run. */
const run = `bench:cluster:${process.pid}:${randomBytes(3).toString('hex')}`;
const PROCS = 4;

const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
/** "median (min–max)" of `xs`. */
export const spread = (xs: number[]) => `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;


// --- uncontended ---------------------------------------------------------------

type UKind = 'pg-try' | 'latchkey' | 'retake' | 'advisory-lock';
/** Ops per batch: about the same time each (advisory-lock connects per lock; a re-take is µs). */
const BATCH: Record<UKind, number> = { 'pg-try': 200, latchkey: 200, retake: 5000, 'advisory-lock': 20 };

interface Uncontended { us: Record<UKind, number[]>; cpuUs: Record<UKind, number[]> }

async function uncontended(rounds: number): Promise<Uncontended> {
  const kinds: UKind[] = ['pg-try', 'latchkey', 'retake', 'advisory-lock'];
  const children = new Map(kinds.map((k) => [k, fork(here('./workers/cluster-uncontended.js'), [k, `${run}:u:${k}`], {
    execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })]));
  try {
    await Promise.all([...children.values()].map((c) => nextMessage(c)));
    const out: Uncontended = { us: { 'pg-try': [], latchkey: [], retake: [], 'advisory-lock': [] }, cpuUs: { 'pg-try': [], latchkey: [], retake: [], 'advisory-lock': [] } };
    for (let r = 0; r < rounds; r++) {
      for (const k of [...kinds].sort(() => Math.random() - 0.5)) {
        const c = children.get(k)!, reply = nextMessage<{ us: number; cpuUs: number }>(c);
        c.send({ n: BATCH[k] });
        const { us, cpuUs } = await reply;
        out.us[k].push(us);
        out.cpuUs[k].push(cpuUs);
      }
    }
    return out;
  } finally {
    for (const c of children.values()) c.kill();
  }
}

// --- contended -----------------------------------------------------------------

type CKind = 'pg-block' | 'advisory-lock' | 'latchkey';

interface Trial {
  opsPerSec: number;
  handoffP50Us: number;
  waitP99Ms: number;
  shares: number[];
  /** Client CPU per grant, µs (every process's, over the loop). */
  cpuUs: number;
  exact: boolean;
  tokensRise: boolean;
}

async function contendedTrial(kind: CKind, ms: number, warmMs: number, t: number): Promise<Trial> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'));
  const name = `${run}:c:${kind}:${t}`;
  try {
    const children = Array.from({ length: PROCS }, (_, i) =>
      fork(here('./workers/cluster-contend.js'), [kind, name, String(ms), join(dir, `log-${i}`), String(warmMs)], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    const results = await startTogether<{ ops: number; waits: number[]; cpuMs: number }>(children, 300_000_000n);
    // The overlap log: [enter, exit, token] triples of every process, in order of enter.
    const iv: Array<[number, number, number, number]> = [];
    for (let p = 0; p < PROCS; p++) {
      const b = readFileSync(join(dir, `log-${p}`));
      const x = new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
      for (let i = 0; i + 2 < x.length; i += 3) iv.push([x[i]!, x[i + 1]!, x[i + 2]!, p]);
    }
    iv.sort((a, b) => a[0] - b[0]);
    let exact = true, tokensRise = true;
    const handoff: number[] = [];
    for (let i = 1; i < iv.length; i++) {
      if (iv[i]![0] < iv[i - 1]![1]) exact = false;
      if (kind === 'latchkey' && !(iv[i]![2] > iv[i - 1]![2])) tokensRise = false;
      if (iv[i]![3] !== iv[i - 1]![3]) handoff.push((iv[i]![0] - iv[i - 1]![1]) / 1000);
    }
    const ops = results.reduce((a, r) => a + r.ops, 0);
    const waits = Float64Array.from(results.flatMap((r) => r.waits)).sort();
    return {
      opsPerSec: (ops / ms) * 1000, handoffP50Us: percentile(Float64Array.from(handoff).sort(), 0.5), waitP99Ms: percentile(waits, 0.99),
      shares: results.map((r) => r.ops / ops), cpuUs: (results.reduce((a, r) => a + r.cpuMs, 0) * 1000) / ops, exact, tokensRise,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// --- the figures ------------------------------------------------------------------

const pct = (x: number) => `${(x * 100).toFixed(0)} %`;

export async function clusterBench(quick: boolean): Promise<Figure[]> {
  const url = process.env.LATCHKEY_PG_URL;
  if (url === undefined || url === '') {
    log('cluster tier skipped: LATCHKEY_PG_URL is not set (a PostgreSQL server, e.g. what .ci/postgres starts)');
    return [];
  }
  const where = new URL(url).host;
  const figures: Figure[] = [];

  log('  cluster uncontended …');
  const u = await uncontended(quick ? 3 : 11);
  const ratio = (k: UKind) => u.us[k].map((x, i) => x / u.us['pg-try'][i]!);
  const floorUs = median(u.us['pg-try']);
  figures.push(figure({
    figure: 'cluster uncontended: lockSync() + unlock(), every grant from the server', unit: 'µs', better: 'lower', target: '≤ 2×',
    latchkey: median(u.us.latchkey), anchorName: 'pg: pg_try_advisory_lock + pg_advisory_unlock', anchor: floorUs,
    note: `server ${where}; per-round ratios ${spread(ratio('latchkey'))}×; floor ${spread(u.us['pg-try'])} µs; `
      + `client CPU per op ${fmt(median(u.cpuUs.latchkey))} µs (floor ${fmt(median(u.cpuUs['pg-try']))} µs; the agent thread's included)`,
  }));
  figures.push(figure({
    figure: 'cluster re-take: lockSync() + unlock() of a name nobody else waits for', unit: 'µs', better: 'lower', target: '≤ 0.5×',
    latchkey: median(u.us.retake), anchorName: 'pg: pg_try_advisory_lock + pg_advisory_unlock', anchor: floorUs,
    note: `per-round ratios ${spread(ratio('retake'))}×`,
  }));
  figures.push(figure({
    figure: 'cluster uncontended (anchor only): advisory-lock (npm) lock() + release()', unit: 'µs', better: 'lower',
    latchkey: median(u.us['advisory-lock']), anchorName: 'pg: pg_try_advisory_lock + pg_advisory_unlock', anchor: floorUs,
    note: `per-round ratios ${spread(ratio('advisory-lock'))}×; it opens a connection per lock()`,
  }));

  const ms = quick ? 1000 : 3000, trials = quick ? 1 : 5;
  const all: Record<CKind, Trial[]> = { 'pg-block': [], 'advisory-lock': [], latchkey: [] };
  for (let t = 0; t < trials; t++) {
    for (const k of ['pg-block', 'advisory-lock', 'latchkey'] as const) {
      log(`  cluster contended, trial ${t + 1}/${trials}: ${k} …`);
      all[k].push(await contendedTrial(k, ms, quick ? 300 : 1500, t));
    }
  }
  for (const k of ['pg-block', 'advisory-lock', 'latchkey'] as const) {
    if (!all[k].every((x) => x.exact)) throw new Error(`cluster contended: two ${k} holders overlapped`);
  }
  if (!all.latchkey.every((x) => x.tokensRise)) throw new Error('cluster contended: latchkey tokens did not rise in grant order');
  const floor = all['pg-block'], lk = all.latchkey, al = all['advisory-lock'];
  const per = (f: (x: Trial) => number, xs: Trial[]) => xs.map((x, i) => f(x) / f(floor[i]!));
  const m = (f: (x: Trial) => number, xs: Trial[]) => median(xs.map(f));
  const shares = (xs: Trial[]) => xs.map((x) => x.shares.map(pct).join('/')).join(', ');
  figures.push(figure({
    figure: `cluster ${PROCS} processes contended, empty section: throughput`, unit: 'ops/s', better: 'higher', target: '≥ 0.5×',
    latchkey: m((x) => x.opsPerSec, lk), anchorName: 'pg: waiters blocking in pg_advisory_lock', anchor: m((x) => x.opsPerSec, floor),
    note: `per-trial ratios ${spread(per((x) => x.opsPerSec, lk))}×; floor ${spread(floor.map((x) => x.opsPerSec))} ops/s; `
      + `client CPU per grant ${fmt(m((x) => x.cpuUs, lk))} µs (floor ${fmt(m((x) => x.cpuUs, floor))} µs); exact (overlap log), tokens rising`,
  }));
  figures.push(figure({
    figure: `cluster ${PROCS} processes contended: hand-over p50 (exit → next process's enter)`, unit: 'µs', better: 'lower', target: '≤ 2×',
    latchkey: m((x) => x.handoffP50Us, lk), anchorName: 'pg: waiters blocking in pg_advisory_lock', anchor: m((x) => x.handoffP50Us, floor),
    note: `per-trial ratios ${spread(per((x) => x.handoffP50Us, lk))}×; floor ${spread(floor.map((x) => x.handoffP50Us))} µs`,
  }));
  figures.push(figure({
    figure: `cluster ${PROCS} processes contended: wait p99`, unit: 'ms', better: 'lower', target: '≤ 1× (advisory-lock)',
    latchkey: m((x) => x.waitP99Ms, lk), anchorName: 'advisory-lock (npm), same workload', anchor: m((x) => x.waitP99Ms, al),
    note: `latchkey ${spread(lk.map((x) => x.waitP99Ms))} ms, advisory-lock ${spread(al.map((x) => x.waitP99Ms))} ms, floor ${spread(floor.map((x) => x.waitP99Ms))} ms`,
  }));
  figures.push(figure({
    figure: `cluster ${PROCS} processes contended: smallest process share`, unit: '%', better: 'higher', target: '≥ 15 %',
    latchkey: Math.min(...lk.flatMap((x) => x.shares)) * 100, anchorName: 'pg: waiters blocking in pg_advisory_lock',
    anchor: Math.min(...floor.flatMap((x) => x.shares)) * 100,
    note: `every trial's shares: latchkey ${shares(lk)}; floor ${shares(floor)}`,
  }));
  figures.push(figure({
    figure: `cluster ${PROCS} processes contended (anchor only): advisory-lock (npm) throughput`, unit: 'ops/s', better: 'higher',
    latchkey: m((x) => x.opsPerSec, al), anchorName: 'pg: waiters blocking in pg_advisory_lock', anchor: m((x) => x.opsPerSec, floor),
    note: `per-trial ratios ${spread(per((x) => x.opsPerSec, al))}×; hand-over p50 ${fmt(m((x) => x.handoffP50Us, al))} µs; smallest share ${pct(Math.min(...al.flatMap((x) => x.shares)))}`,
  }));
  await forgetRun(url);
  return figures;
}

/** The rows this run's names left in latchkey's tables. */
async function forgetRun(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url, application_name: 'latchkey-bench' });
  try {
    await c.connect();
    for (const t of ['latchkey_reserved', 'latchkey_live']) await c.query(`DELETE FROM ${t} WHERE name LIKE $1`, [`${run}%`]);
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
