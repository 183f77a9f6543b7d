/**
 * `npm run bench`: every latchkey figure beside its anchor, measured in the
 * same run; writes bench/results/latest.json, latest.md (the table) and latest.svg (a
 * chart of the ratios), and prints the table.
 * Flags: --quick (short runs, for a smoke test; prints, writes nothing);
 * --only SECTION[,SECTION] (threads, rwlock, semaphore, condition, locks,
 * host, cluster, redis: only those; prints the table and each figure's note,
 * writes nothing: the results files keep a whole run).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';
import { type Figure, figure, markdown, svgChart } from './report.js';
import { uncontended } from './uncontended.js';
import { contended, handoff } from './threads.js';
import { rwlockBench } from './rwlock.js';
import { semaphoreBench } from './semaphore.js';
import { conditionBench } from './condition.js';
import { locksBench } from './locks.js';
import { hostBench } from './host.js';
import { clusterBench } from './cluster.js';
import { redisBench } from './redis.js';

const quick = process.argv.includes('--quick');
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt < 0 ? undefined : new Set((process.argv[onlyAt + 1] ?? '').split(','));
const sections = ['threads', 'rwlock', 'semaphore', 'condition', 'locks', 'host', 'cluster', 'redis'];
if (only !== undefined && (only.size === 0 || [...only].some((s) => !sections.includes(s)))) {
  throw new Error(`--only takes a comma-separated list of ${sections.join(', ')}; got ${JSON.stringify(process.argv[onlyAt + 1])}`);
}
/** Whether section `s` runs. */
const runs = (s: string) => only === undefined || only.has(s);
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const log = (s: string) => process.stderr.write(`${s}\n`);

function v8Mutex(floorNs: number): Figure[] {
  try {
    const out = execFileSync(process.execPath, ['--harmony-struct', here('./v8-mutex.js')], { encoding: 'utf8', timeout: 60_000 });
    const r = JSON.parse(out.trim().split('\n').pop()!) as { lockNs?: number; error?: string };
    if (r.lockNs === undefined) throw new Error(r.error);
    return [figure({ figure: 'V8 Atomics.Mutex lock+unlock (anchor only)', unit: 'ns', latchkey: r.lockNs, anchorName: 'CAS+store floor', anchor: floorNs, better: 'lower', note: 'node --harmony-struct, its own process' })];
  } catch (err) {
    log(`V8 Atomics.Mutex skipped: ${(err as Error).message.split('\n')[0]}`);
    return [];
  }
}

const figures: Figure[] = [];
if (runs('threads')) {
  log('uncontended (tinybench) …');
  const u = await uncontended(quick ? 200 : 1000);
  figures.push(...u);
  figures.push(...v8Mutex(u[0]!.anchor));
  log('contended (2 and 4 workers) …');
  figures.push(...await contended(quick ? 150 : 250, quick ? 1 : 9));
  log('hand-off latency …');
  figures.push(...await handoff(quick ? 200 : 1000));
}
if (runs('rwlock')) {
  log('rwlock …');
  figures.push(...await rwlockBench(quick));
}
if (runs('semaphore')) {
  log('semaphore …');
  figures.push(...await semaphoreBench(quick));
}
if (runs('condition')) {
  log('condition …');
  figures.push(...await conditionBench(quick));
}
if (runs('locks')) {
  log('front door: locks.request() …');
  figures.push(...await locksBench(quick, log));
}
if (runs('host')) {
  log('host tier: file and SQLite backends, processes …');
  figures.push(...await hostBench(quick));
}
if (runs('cluster')) {
  log('cluster tier: PostgreSQL (LATCHKEY_PG_URL) …');
  figures.push(...await clusterBench(quick));
}
if (runs('redis')) {
  log('cluster tier: Redis (LATCHKEY_REDIS_URL, or a redis-server of its own) …');
  figures.push(...await redisBench(quick));
}

const table = markdown(figures);
const header = `latchkey bench — Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${new Date().toISOString()}`;
// This file runs from dist/bench/: the results go to the source tree's
// bench/results/. A --quick smoke run's figures are not worth keeping.
if (!quick && only === undefined) {
  const results = here('../../bench/results/');
  mkdirSync(results, { recursive: true });
  writeFileSync(`${results}latest.json`, JSON.stringify({ header, node: process.version, figures }, null, 2));
  writeFileSync(`${results}latest.md`, `${header}\n\n![advantage over each anchor](latest.svg)\n\n${table}\n`);
  writeFileSync(`${results}latest.svg`, svgChart(figures, header));
}
console.log(`${header}\n\n${table}`);
// A partial run is read on its own: each figure's note (spreads, per-trial ratios) too.
if (only !== undefined) for (const f of figures) if (f.note !== undefined) console.log(`- ${f.figure}: ${f.note}`);
