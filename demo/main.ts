/**
 * latchkey live demo (`npm start`, `latchkey demo`): a shared cache guarded
 * across the worker threads of several processes.
 *
 *   node dist/demo/main.js [--processes P] [--threads T] [--seconds S]
 *                          [--backend sqlite|file] [--quiet]
 *
 * P processes (default 3), each with a piscina pool of T worker threads
 * (default 3), update KEYS entries of a cache kept in plain files, each
 * update a non-atomic read-modify-write under the key's host lock
 * (`scope: 'host'`, over the embedded SQLite backend by default), and
 * counted in the process's tally under a thread-scope lock. At 40 % of the
 * run a worker thread of the first process exits inside an update, holding
 * its lock; at 65 % the last process is SIGKILLed inside one. Their locks
 * come back `abandoned` and the next holder rolls the half-made update
 * back. At the end this process takes every lock, audits the cache against
 * what the processes counted, and prints the closing table.
 * Exit code: 0 when exact, 1 when not, 2 for bad flags.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { KEYS, keyName, readEntry, writeEntry } from './store.js';
import { type Summary, closingTable, progressLine } from './format.js';
import type { ProcessReport } from './process.js';

interface Options {
  processes: number;
  threads: number;
  seconds: number;
  backend: 'sqlite' | 'file';
  quiet: boolean;
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      processes: { type: 'string', default: '3' },
      threads: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '4' },
      backend: { type: 'string', default: 'sqlite' },
      quiet: { type: 'boolean', default: false },
    },
  });
  const processes = Number(values.processes), threads = Number(values.threads), seconds = Number(values.seconds);
  // Two processes at least: someone must outlive the killed one to find its lock abandoned.
  if (!Number.isInteger(processes) || processes < 2 || processes > 16) {
    throw new RangeError(`--processes must be an integer from 2 to 16: received ${values.processes}`);
  }
  if (!Number.isInteger(threads) || threads < 1 || threads > 16) throw new RangeError(`--threads must be an integer from 1 to 16: received ${values.threads}`);
  if (!(seconds > 0 && seconds <= 3600)) throw new RangeError(`--seconds must be a number from 0 to 3600: received ${values.seconds}`);
  if (values.backend !== 'sqlite' && values.backend !== 'file') throw new RangeError(`--backend must be sqlite or file: received ${values.backend}`);
  return { processes, threads, seconds, backend: values.backend, quiet: values.quiet === true };
}

const KILL_WORKER_AT = 0.4;
const KILL_PROCESS_AT = 0.65;
/** Bounds on every wait for a process, so that a broken lock fails the demo instead of hanging it. */
const START_MS = 30_000;

function percentile(sorted: number[], q: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function run(opts: Options): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-demo-'));
  // This process takes the locks too (the audit): the same lock directory and backend.
  process.env.LATCHKEY_DIR = dir;
  process.env.LATCHKEY_BACKEND = opts.backend;
  const { locks } = await import('../src/index.js');
  const script = fileURLToPath(new URL('./process.js', import.meta.url));
  const failures: string[] = [];
  const progress = new Map<number, number>(), reports = new Map<number, ProcessReport>();
  const children: ChildProcess[] = [];
  const exits: Array<Promise<NodeJS.Signals | number | null>> = [];
  const victim = opts.processes - 1;
  console.log(`latchkey demo: ${opts.processes} processes × ${opts.threads} threads update ${KEYS} cache entries for ${opts.seconds} s under host locks (${opts.backend});`
    + ` a worker of process #0 exits mid-update at ${KILL_WORKER_AT * 100} %, process #${victim} is SIGKILLed mid-update at ${KILL_PROCESS_AT * 100} %`);
  try {
    for (let i = 0; i < opts.processes; i++) {
      const child = fork(script, [dir, String(opts.threads), String(i)], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      child.on('message', (m: { progress?: number; done?: ProcessReport }) => {
        if (m.progress !== undefined) progress.set(i, m.progress);
        if (m.done !== undefined) reports.set(i, m.done);
      });
      exits.push(new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code))));
      children.push(child);
    }
    const ready = Promise.all(children.map((c) => new Promise((resolve) => c.once('message', resolve))));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => { timer = setTimeout(resolve, START_MS, 'late'); });
    if ((await Promise.race([ready, late])) === 'late') throw new Error(`the demo processes did not start within ${START_MS} ms`);
    clearTimeout(timer);

    const t0 = Date.now(), until = t0 + opts.seconds * 1000;
    for (const c of children) c.send({ go: until });
    const total = () => [...progress.values()].reduce((a, b) => a + b, 0);
    const tty = process.stdout.isTTY === true && !opts.quiet;
    let last = { t: t0, n: 0 }, rate = 0;
    const draw = setInterval(() => {
      const now = Date.now(), n = total();
      if (now - last.t >= 500) {
        rate = ((n - last.n) * 1000) / (now - last.t);
        last = { t: now, n };
      }
      if (!opts.quiet) process.stdout.write(`${tty ? '\r' : ''}${progressLine((now - t0) / 1000, opts.seconds, n, rate)}${tty ? '\x1b[K' : '\n'}`);
    }, tty ? 100 : 1000);
    const event = (line: string) => { if (!opts.quiet) process.stdout.write(`${tty ? '\r\x1b[K' : ''}${line}\n`); };
    setTimeout(() => { children[0]!.send({ kill: 'worker' }); event('  a worker thread of process #0 will exit inside its next update'); }, opts.seconds * 1000 * KILL_WORKER_AT);
    setTimeout(() => { children[victim]!.send({ kill: 'process' }); event(`  process #${victim} will be SIGKILLed inside its next update`); }, opts.seconds * 1000 * KILL_PROCESS_AT);
    const ended = await Promise.all(exits);
    clearInterval(draw);
    if (tty) process.stdout.write('\n');
    const elapsed = (Date.now() - t0) / 1000;
    if (ended[victim] !== 'SIGKILL') failures.push(`process #${victim} was not killed (it ended with ${ended[victim]})`);

    // The audit: every process is gone; take each lock and check each entry.
    let auditRepairs = 0, hostGrants = 0, value = 0, repairs = 0;
    const byPid = new Map<string, number>();
    for (let k = 0; k < KEYS; k++) {
      const g = locks.lockSync(keyName(k), { scope: 'host', timeout: 10_000 })!;
      const e = readEntry(dir, k);
      if (e.pending !== undefined) {
        if (!g.abandoned) failures.push(`${keyName(k)} has a dead writer's update, and its lock did not say so`);
        delete e.pending;
        e.repairs += 1;
        writeEntry(dir, k, e);
        auditRepairs++;
      }
      value += e.value;
      repairs += e.repairs;
      hostGrants += Math.floor(e.token / 1000);
      for (const [pid, n] of Object.entries(e.by)) byPid.set(pid, (byPid.get(pid) ?? 0) + n);
      g.unlock();
    }
    const counted = [...byPid.values()].reduce((a, b) => a + b, 0);
    if (counted !== value) failures.push(`entries hold ${value} updates, their writers ${counted}`);
    const shares: Summary['shares'] = [], waits: number[] = [];
    let workerDeaths = 0, fencing = 0;
    for (let i = 0; i < opts.processes; i++) {
      const r = reports.get(i), pid = String(children[i]!.pid);
      const inCache = byPid.get(pid) ?? 0;
      shares.push({ label: `process #${i} (pid ${pid})${i === victim ? ' †' : ''}`, ops: inCache });
      if (i === victim) continue;
      if (r === undefined) {
        failures.push(`process #${i} did not report`);
        continue;
      }
      if (r.ops !== inCache) failures.push(`process #${i} counted ${r.ops} updates, the cache has ${inCache}`);
      const tally = r.tally.reduce((a, b) => a + b, 0);
      if (tally !== r.ops) failures.push(`process #${i}'s thread-scope tally is ${tally}, not ${r.ops}`);
      waits.push(...r.waits);
      workerDeaths += r.workerDeaths;
      fencing += r.fencingFailures;
    }
    if (fencing > 0) failures.push(`${fencing} updates under a token not larger than the last (fencing)`);
    if (workerDeaths !== 1) failures.push(`${workerDeaths} tasks failed, expected 1 (${[...reports.values()].flatMap((r) => r.errors).join(' | ')})`);
    // Two holders died inside an update (and the killed process's other threads may have been
    // inside theirs): each half-made update was rolled back by whoever came next, told abandoned.
    if (repairs < 2) failures.push(`${repairs} half-made updates were rolled back, expected 2 or more`);
    waits.sort((a, b) => a - b);
    const recoveries = [
      `a worker of process #0 exited inside its update: the lock came back abandoned, the update was rolled back`,
      `process #${victim} was SIGKILLed inside its update: another process took its lock over, abandoned, and rolled it back`,
      `(${repairs} roll-backs in all, with the killed process's other threads caught mid-update; ${auditRepairs} by the final audit)`,
    ];
    console.log(closingTable({
      processes: opts.processes, threads: opts.threads, backend: opts.backend, seconds: elapsed, ops: counted,
      waits: { p50: percentile(waits, 0.5), p99: percentile(waits, 0.99), max: waits[waits.length - 1] ?? 0, samples: waits.length },
      shares, recoveries, hostGrants, failures,
    }));
    return failures.length === 0 ? 0 : 1;
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

let options: Options;
try {
  options = parseOptions(process.argv.slice(2));
} catch (err) {
  console.error(`latchkey demo: ${(err as Error).message}`);
  process.exit(2);
}
run(options).then((code) => { process.exitCode = code; }, (err: Error) => {
  console.error(`latchkey demo failed: ${err.stack ?? err.message}`);
  process.exitCode = 1;
});
