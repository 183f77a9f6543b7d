/**
 * The cluster tier's figures on Redis (issue 15's targets), every one beside
 * the raw floors and the peers measured in the same run, on the server
 * LATCHKEY_REDIS_URL names, or on a redis-server of its own (none installed:
 * skipped, with a line saying so). Three rounds (one with --quick); each
 * figure is the median over the rounds, and its note gives every round's
 * ratio: the spread.
 *
 * - Uncontended lock + unlock, one process (bench/workers/redis-uncontended.ts):
 *   the floor is one SET NX PX and one Lua compare-and-delete (EVALSHA), the
 *   least a Redis lock pays; latchkey's engine itself (acquire + release),
 *   the front door as a program calls it (a loop re-takes a lingering grant:
 *   no round trip) and the front door when every lock goes to the server
 *   (a new name each time); redlock and redis-semaphore.
 * - Hand-over to a waiting process (bench/workers/redis-handover.ts): the
 *   holder releases, the waiter (parked for 20–30 ms already) is granted;
 *   release → grant on hrtime (one clock for every process of the host). The
 *   floor is LPUSH in one process → BLPOP returning in another.
 * - 4 processes contended (bench/workers/redis-contend.ts): each loops lock,
 *   section (a 2 ms wait: I/O; or empty), unlock, for 1.2 s; one requester per
 *   process, or four (latchkey: four worker threads sharing the process's
 *   grant, the cohort; the peers: four concurrent async loops, which cannot
 *   share one). Throughput and the wait p99; an overlap log proves every run
 *   exact (it throws otherwise). redlock 5.0.0-beta.2 with retryCount -1
 *   (else it gives up under contention) and its defaults otherwise
 *   (retryDelay 200 ms, jitter 200 ms); redis-semaphore's Mutex with its
 *   defaults (retryInterval 10 ms) and acquireTimeout 60 s.
 *
 * Standalone: `node dist/bench/redis.js [--quick]` prints the table.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as RedisClient from '@redis/client';
import { nextMessage, overlapLog, startTogether } from './processes.js';
import { type Figure, figure, markdown, median, percentile } from './report.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const log = (s: string) => process.stderr.write(`${s}\n`);
/** Names of this run only: the server outlives every run. */
const run = `bench:redis:${process.pid}:${randomBytes(3).toString('hex')}`;
const { createClient } = createRequire(import.meta.url)('@redis/client') as typeof RedisClient;

type Lib = 'latchkey' | 'redlock' | 'redis-semaphore';

/** A redis-server of the bench's own (no persistence), or undefined when none is installed. */
async function ownServer(): Promise<{ url: string; stop(): void } | undefined> {
  const port = await new Promise<number>((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const failed = await new Promise<boolean>((resolve) => {
    proc.once('error', () => resolve(true));
    const url = `redis://127.0.0.1:${port}`;
    const tryPing = async (left: number): Promise<void> => {
      const c = createClient({ url, socket: { reconnectStrategy: false } });
      c.on('error', () => {});
      try {
        await c.connect();
        c.destroy();
        resolve(false);
      } catch {
        if (left === 0) resolve(true);
        else setTimeout(() => void tryPing(left - 1), 20);
      }
    };
    void tryPing(250);
  });
  const stop = () => {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  if (failed) {
    stop();
    return undefined;
  }
  return { url: `redis://127.0.0.1:${port}`, stop };
}

let env: NodeJS.ProcessEnv = {};
const child = (script: string, args: string[]): ChildProcess =>
  fork(here(`./workers/${script}`), args, { execArgv: [], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });

/** The uncontended candidates' µs p50 (redis-uncontended.ts), one process. */
async function uncontended(rounds: number, ops: number, round: number): Promise<Record<string, number>> {
  const c = child('redis-uncontended.js', [`${run}:u${round}`, String(rounds), String(ops)]);
  return new Promise((resolve, reject) => {
    c.once('message', (m) => resolve(m as Record<string, number>));
    c.once('exit', (code) => reject(new Error(`redis-uncontended exited with ${code}`)));
  });
}

type Reply = Record<string, string | boolean>;
function ask(c: ChildProcess, m: { op: string }, key: string): Promise<Reply> {
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

/** Release → the waiting process granted, µs, `n` times (redis-handover.ts). */
async function handover(kind: 'latchkey' | 'engine' | 'blpop', n: number, round: number): Promise<number[]> {
  const name = `${run}:h${round}:${kind}`;
  const holder = child('redis-handover.js', [kind, 'holder', name]), waiter = child('redis-handover.js', [kind, 'waiter', name]);
  try {
    await Promise.all([holder, waiter].map((c) => nextMessage(c)));
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      await ask(holder, { op: 'take' }, 'taken');
      const granted = ask(waiter, { op: 'wait' }, 'grantedNs');
      // The waiter is queued and parked by then (its request in the server, its first liveness check done).
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 10));
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

interface Run { opsPerSec: number; p50Ms: number; p99Ms: number; maxMs: number; exact: boolean; shares: number[] }

/** 4 processes × `requesters` contending for one name for `ms` (redis-contend.ts); the overlap log proves exclusion. */
async function contended(lib: Lib, sectionMs: number, requesters: number, ms: number, tag: string): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'));
  const name = `${run}:c:${tag}:${lib}`;
  try {
    const children = Array.from({ length: 4 }, (_, i) => child('redis-contend.js', [lib, name, String(ms), String(sectionMs), String(requesters), join(dir, `log-${i}`)]));
    const results = await startTogether<{ ops: number; waits: number[] }>(children, 300_000_000n);
    const logs = Array.from({ length: 4 }, (_, p) => Array.from({ length: requesters }, (_, r) => ({ file: join(dir, `log-${p}-${r}`), proc: p }))).flat();
    const { exact } = overlapLog(logs);
    const ops = results.reduce((a, r) => a + r.ops, 0);
    const waits = Float64Array.from(results.flatMap((r) => r.waits)).sort();
    return { opsPerSec: (ops / ms) * 1000, p50Ms: percentile(waits, 0.5), p99Ms: percentile(waits, 0.99), maxMs: waits[waits.length - 1] ?? NaN, exact, shares: results.map((x) => x.ops / ops) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Delete every key this run made (its names are in every key: latchkey's, redlock's, redis-semaphore's). */
async function forgetRun(url: string): Promise<void> {
  const c = createClient({ url, RESP: 2, socket: { reconnectStrategy: false } });
  c.on('error', () => {});
  try {
    await c.connect();
    let cursor = '0';
    do {
      const [next, keys] = (await c.sendCommand(['SCAN', cursor, 'MATCH', `*${run}*`, 'COUNT', '1000'])) as unknown as [string, string[]];
      cursor = next;
      if (keys.length > 0) await c.sendCommand(['DEL', ...keys]);
    } while (cursor !== '0');
  } catch (err) {
    log(`redis bench: could not remove its keys: ${(err as Error).message}`);
  } finally {
    c.destroy();
  }
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(2));
const share = (r: Run) => `${(Math.min(...r.shares) * 100).toFixed(0)} %`;
const ratios = (a: number[], b: number[]) => a.map((x, i) => (x / b[i]!).toFixed(2)).join(' / ');

export async function redisBench(quick: boolean): Promise<Figure[]> {
  let url = process.env.LATCHKEY_REDIS_URL;
  let own: { url: string; stop(): void } | undefined;
  if (url === undefined || url === '') {
    own = await ownServer();
    if (own === undefined) {
      log('cluster tier on Redis skipped: LATCHKEY_REDIS_URL is not set and no redis-server could be started (apt-get install redis-server)');
      return [];
    }
    url = own.url;
  }
  env = { ...process.env, LATCHKEY_CLUSTER_URL: url };
  delete env.NODE_DEBUG;
  const where = new URL(url).host;
  const rounds = quick ? 1 : 3, ms = quick ? 1000 : 1200, n = quick ? 15 : 40;
  const U: Array<Record<string, number>> = [];
  const H: Record<'latchkey' | 'engine' | 'blpop', number[]> = { latchkey: [], engine: [], blpop: [] };
  const Hp90: Record<'latchkey' | 'engine' | 'blpop', number[]> = { latchkey: [], engine: [], blpop: [] };
  const configs = [
    { tag: 'io1', sectionMs: 2, requesters: 1 },
    { tag: 'io4', sectionMs: 2, requesters: 4 },
    { tag: 'empty1', sectionMs: 0, requesters: 1 },
    { tag: 'empty4', sectionMs: 0, requesters: 4 },
  ] as const;
  const C: Record<string, Record<Lib, Run[]>> = {};
  for (const c of configs) C[c.tag] = { latchkey: [], redlock: [], 'redis-semaphore': [] };
  try {
    for (let r = 0; r < rounds; r++) {
      log(`  redis round ${r + 1}/${rounds}: uncontended …`);
      U.push(await uncontended(quick ? 2 : 5, quick ? 50 : 200, r));
      log(`  redis round ${r + 1}/${rounds}: hand-over …`);
      for (const kind of ['blpop', 'latchkey', 'engine'] as const) {
        const xs = Float64Array.from(await handover(kind, n, r)).sort();
        H[kind].push(percentile(xs, 0.5));
        Hp90[kind].push(percentile(xs, 0.9));
      }
      for (const c of configs) {
        log(`  redis round ${r + 1}/${rounds}: 4 processes × ${c.requesters}, section ${c.sectionMs} ms …`);
        // Alternating the order round to round: a drift of the machine hits each alike.
        const libs: Lib[] = r % 2 === 0 ? ['redis-semaphore', 'redlock', 'latchkey'] : ['latchkey', 'redlock', 'redis-semaphore'];
        for (const lib of libs) C[c.tag]![lib].push(await contended(lib, c.sectionMs, c.requesters, ms, `${c.tag}${r}`));
      }
    }
  } finally {
    await forgetRun(url);
    own?.stop();
  }
  const bad = Object.entries(C).flatMap(([tag, libs]) => Object.entries(libs).filter(([, runs]) => !runs.every((x) => x.exact)).map(([lib]) => `${tag} ${lib}`));
  if (bad.length > 0) throw new Error(`redis contended: two holders overlapped (${bad.join(', ')})`);

  const u = (k: string) => U.map((x) => x[k]!);
  const figures: Figure[] = [];
  const server = `server ${where}${own === undefined ? '' : ' (the bench\'s own)'}; ${rounds} round(s)`;
  const uRow = (fig: string, k: string, anchorName: string, a: string, target?: string, note = '') => figures.push(figure({
    figure: fig, unit: 'µs', better: 'lower', latchkey: median(u(k)), anchorName, anchor: median(u(a)), ...(target === undefined ? {} : { target }),
    note: `${note}per round ${u(k).map(fmt).join(' / ')} µs vs ${u(a).map(fmt).join(' / ')} µs, ratios ${ratios(u(k), u(a))}; ${server}`,
  }));
  uRow('Redis: uncontended lock + unlock, the engine (acquire + release)', 'engine', 'SET NX PX + Lua compare-and-delete (floor)', 'floor', '≤ 1.2×',
    'the release is sent, not awaited (the next acquire goes after it on the same connection); ');
  uRow('Redis: uncontended lock() + unlock(), front door, every lock from the server', 'served', 'SET NX PX + Lua compare-and-delete (floor)', 'floor', undefined,
    '64 names in turn, each lock() through the agent thread to the server; ');
  uRow('Redis: uncontended lock() + unlock() in a loop, front door (a lingering grant re-taken)', 'front', 'SET NX PX + Lua compare-and-delete (floor)', 'floor', undefined,
    'what a loop in one process pays: the grant lingers 2 ms, the next lock() takes it with no round trip; ');
  uRow('Redis: uncontended lock() + unlock(), front door, every lock from the server', 'served', 'redlock acquire() + release()', 'redlock');
  uRow('Redis: uncontended lock() + unlock(), front door, every lock from the server', 'served', 'redis-semaphore Mutex acquire() + release()', 'semaphore');

  figures.push(figure({
    figure: 'Redis: hand-over to a waiting process (p50), front door', unit: 'µs', better: 'lower', latchkey: median(H.latchkey),
    anchorName: 'LPUSH → BLPOP across processes (floor)', anchor: median(H.blpop), target: '≤ 2×',
    note: `per round ${H.latchkey.map(fmt).join(' / ')} µs vs ${H.blpop.map(fmt).join(' / ')} µs, ratios ${ratios(H.latchkey, H.blpop)}; `
      + `p90 ${H.latchkey.length > 0 ? fmt(median(Hp90.latchkey)) : '-'} vs ${fmt(median(Hp90.blpop))} µs; ${n} hand-overs a round; ${server}`,
  }));
  figures.push(figure({
    figure: 'Redis: hand-over to a waiting process (p50), the engine alone', unit: 'µs', better: 'lower', latchkey: median(H.engine),
    anchorName: 'LPUSH → BLPOP across processes (floor)', anchor: median(H.blpop),
    note: `per round ${H.engine.map(fmt).join(' / ')} µs, ratios ${ratios(H.engine, H.blpop)}: the front door's thread hops are the difference`,
  }));

  const cRows = (tag: string, what: string, target: { thr?: string; p99?: string } = {}) => {
    const lk = C[tag]!.latchkey;
    for (const peer of ['redis-semaphore', 'redlock'] as const) {
      const p = C[tag]![peer];
      figures.push(figure({
        figure: `Redis: 4 processes ${what}: throughput`, unit: 'grants/s', better: 'higher', latchkey: median(lk.map((x) => x.opsPerSec)),
        anchorName: `${peer}, same workload`, anchor: median(p.map((x) => x.opsPerSec)), ...(target.thr === undefined ? {} : { target: target.thr }),
        note: `per round ${lk.map((x) => x.opsPerSec.toFixed(0)).join(' / ')} vs ${p.map((x) => x.opsPerSec.toFixed(0)).join(' / ')}, ratios `
          + `${ratios(lk.map((x) => x.opsPerSec), p.map((x) => x.opsPerSec))}; exact (overlap log)`,
      }));
      figures.push(figure({
        figure: `Redis: 4 processes ${what}: wait p99`, unit: 'ms', better: 'lower', latchkey: median(lk.map((x) => x.p99Ms)),
        anchorName: `${peer}, same workload`, anchor: median(p.map((x) => x.p99Ms)), ...(target.p99 === undefined ? {} : { target: target.p99 }),
        note: `per round ${lk.map((x) => fmt(x.p99Ms)).join(' / ')} vs ${p.map((x) => fmt(x.p99Ms)).join(' / ')} ms; `
          + `p50 ${fmt(median(lk.map((x) => x.p50Ms)))} vs ${fmt(median(p.map((x) => x.p50Ms)))} ms; `
          + `longest ${lk.map((x) => fmt(x.maxMs)).join(' / ')} vs ${p.map((x) => fmt(x.maxMs)).join(' / ')} ms; the waits of grants that came: `
          + `a process that rarely gets one adds few (smallest process share per round: latchkey ${lk.map((x) => share(x)).join(' / ')}, `
          + `${peer} ${p.map((x) => share(x)).join(' / ')})`,
      }));
    }
  };
  cRows('io1', 'contended, 2 ms I/O section, one requester each', { thr: '≥ 1.5×', p99: '≤ 0.25×' });
  cRows('empty4', 'contended, empty section, 4 requesters each (latchkey: threads sharing the grant)', { thr: '≥ 5×' });
  cRows('io4', 'contended, 2 ms I/O section, 4 requesters each (latchkey: threads)');
  cRows('empty1', 'contended, empty section, one requester each');
  return figures;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const figures = await redisBench(process.argv.includes('--quick'));
  console.log(markdown(figures));
  for (const f of figures) if (f.note !== undefined) console.log(`- ${f.figure} (vs ${f.anchorName}): ${f.note}`);
  process.exit(0);
}
