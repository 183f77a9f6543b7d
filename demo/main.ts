/**
 * latchkey live demo: the thread tier under real contention.
 *
 *   node dist/demo/main.js [--workers N] [--seconds S] [--quiet]
 *
 * N worker threads (default 4; even ones use `lockSync()`, odd ones
 * `await lock()`) move money between 8 accounts in a SharedArrayBuffer, each
 * account guarded by mutex `account:<i>` of `LockTable.default()`. Partway
 * through, the last worker is terminated between the debit and the credit of
 * a transfer, holding two locks; the next holder of each is told
 * `guard.abandoned` and repairs the account from its journal (bank.ts). At
 * the end the main thread audits every account and checks that no money was
 * made or lost and that every transfer a worker counted is in the books.
 * Exit code: 0 when exact, 1 when not, 2 for bad flags.
 */
import { parseArgs } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { LockTable } from '../src/index.js';
import { isClean, openAccounts, repair, totals } from './bank.js';
import { type Recovery, type Summary, closingTable, int, ms, progressLine } from './format.js';
import {
  A_BALANCE, C_ANOMALIES, C_GAP_AT_F64, C_GO, C_IN_GAP, C_KILL, C_READY, C_STOP, C_VICTIM_HI, C_VICTIM_LO, HIST_BUCKETS,
  R_ACTION, R_AT_F64, R_BY, R_CHANGE, R_TIMES, REPAIR_ROLLED_BACK, REPAIR_ROLLED_FORWARD, W_ACQUIRED, W_DONE,
  accountBase, bankByteLength, bucketUpperNs, histBase, lockName, monotonicMs, viewBank, workerBase,
} from './layout.js';
import type { WorkerInput, WorkerReport } from './worker.js';

const ACCOUNTS = 8;
const INITIAL_BALANCE = 1_000_000;
/** Busy-loop iterations between debit and credit (~0.3 µs): long enough for others to collide. */
const GAP = 200;
/** When the victim is told to stop in its gap, as a fraction of the run. */
const KILL_AT = 0.4;
/** Bounds on every wait for a worker, so that a broken lock fails the demo instead of hanging it. */
const READY_MS = 10_000;
const IN_GAP_MS = 5_000;
const DRAIN_MS = 10_000;

interface Options {
  workers: number;
  seconds: number;
  quiet: boolean;
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      workers: { type: 'string', default: '4' },
      seconds: { type: 'string', default: '4' },
      quiet: { type: 'boolean', default: false },
    },
  });
  const workers = Number(values.workers), seconds = Number(values.seconds);
  // Two at least: someone must outlive the victim to find its locks abandoned.
  if (!Number.isInteger(workers) || workers < 2 || workers > 64) {
    throw new RangeError(`--workers must be an integer from 2 to 64: received ${values.workers}`);
  }
  if (!(seconds > 0 && seconds <= 3600)) throw new RangeError(`--seconds must be a number from 0 to 3600: received ${values.seconds}`);
  return { workers, seconds, quiet: values.quiet === true };
}

/** Wait, without blocking this thread, until `words[index] >= value`; false after `ms`. */
async function until(words: Int32Array, index: number, value: number, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  for (;;) {
    const seen = Atomics.load(words, index);
    if (seen >= value) return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    const r = Atomics.waitAsync(words, index, seen, left);
    if (r.async) await r.value;
  }
}

/** `promise`, or 'timed-out' after `ms`; the timer never outlives the race. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timed-out'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timed-out'>((resolve) => { timer = setTimeout(resolve, ms, 'timed-out'); });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The live line: `\r`-redrawn at 10 Hz on a terminal, one line a second otherwise. */
function startProgress(quiet: boolean, count: () => number, t0: number): { event(line: string): void; stop(): void } {
  const tty = process.stdout.isTTY === true;
  const window: Array<{ t: number; n: number }> = [{ t: t0, n: 0 }];
  let drawn = false;
  const draw = () => {
    const t = performance.now(), n = count();
    window.push({ t, n });
    while (window.length > 2 && t - window[1].t >= 1000) window.shift(); // a ~1 s sliding window
    const rate = (n - window[0].n) / Math.max(1e-3, (t - window[0].t) / 1000);
    const line = progressLine((t - t0) / 1000, n, rate);
    process.stdout.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
    drawn = tty;
  };
  const timer = quiet ? undefined : setInterval(draw, tty ? 100 : 1000);
  return {
    event(line) {
      process.stdout.write(drawn ? `\r\x1b[K${line}\n` : `${line}\n`);
      drawn = false;
    },
    stop() {
      clearInterval(timer);
      if (!quiet && tty) {
        draw();
        process.stdout.write('\n');
      }
    },
  };
}

async function run(opts: Options): Promise<number> {
  // Importing latchkey made the default table and watches every worker this
  // thread starts: a terminated worker's locks are released on its 'exit'.
  const table = LockTable.default();
  const n = opts.workers, victim = n - 1;
  const bank = viewBank(new SharedArrayBuffer(bankByteLength(ACCOUNTS, n)), ACCOUNTS, n);
  const words = bank.words;
  openAccounts(bank, INITIAL_BALANCE);
  const mode = (i: number): 'sync' | 'async' => (i % 2 === 0 ? 'sync' : 'async');
  const label = (i: number) => `worker ${i} (${mode(i)})`;
  const failures: string[] = [];
  const reports = new Map<number, WorkerReport>();
  const workers: Worker[] = [];
  const exits: Array<Promise<number>> = [];

  console.log(`latchkey demo: ${n} workers, ${ACCOUNTS} accounts of ${int(INITIAL_BALANCE)}, ${opts.seconds} s; ${label(victim)} will be terminated mid-transfer`);
  for (let i = 0; i < n; i++) {
    const workerData: WorkerInput = { buffer: bank.buffer, accounts: ACCOUNTS, workers: n, index: i, mode: mode(i), victim: i === victim, gap: GAP };
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData });
    worker.on('message', (r: WorkerReport) => reports.set(r.index, r));
    worker.on('error', (err) => failures.push(`${label(i)} threw: ${err.message}`));
    exits.push(new Promise((resolve) => worker.once('exit', resolve)));
    workers.push(worker);
  }
  if (!(await until(words, C_READY, n, READY_MS))) throw new Error(`workers did not start within ${READY_MS} ms`);

  const t0 = performance.now();
  Atomics.store(words, C_GO, 1);
  Atomics.notify(words, C_GO);
  const done = () => { let s = 0; for (let i = 0; i < n; i++) s += Atomics.load(words, workerBase(bank, i) + W_DONE); return s; };
  const progress = startProgress(opts.quiet, done, t0);

  // The kill: tell the victim, wait until it is inside its gap, terminate it.
  await delay(opts.seconds * 1000 * KILL_AT);
  Atomics.store(words, C_KILL, 1);
  let killedAt = NaN, exitAt = NaN, held: number[] = [];
  if (await until(words, C_IN_GAP, 1, IN_GAP_MS)) {
    held = [Atomics.load(words, C_VICTIM_LO), Atomics.load(words, C_VICTIM_HI)];
    // Ahead of latchkey's own 'exit' listener, which releases the dead thread's locks.
    workers[victim].prependOnceListener('exit', () => { exitAt = monotonicMs(); });
    killedAt = monotonicMs();
    await workers[victim].terminate();
    progress.event(`  ${((performance.now() - t0) / 1000).toFixed(2)} s: terminated ${label(victim)} between debit and credit, holding ${held.map(lockName).join(' and ')}`);
  } else {
    failures.push(`${label(victim)} did not reach its gap within ${IN_GAP_MS} ms`);
  }

  await delay(Math.max(0, t0 + opts.seconds * 1000 - performance.now()));
  Atomics.store(words, C_STOP, 1);
  const stoppedAt = performance.now();
  if ((await within(Promise.all(exits), DRAIN_MS)) === 'timed-out') {
    failures.push(`workers did not stop within ${DRAIN_MS} ms of C_STOP`);
    await Promise.all(workers.map((w) => w.terminate()));
  }
  progress.stop();

  // The audit: every worker is gone, so this thread takes each lock in turn.
  // A lock nobody took since the victim died comes back abandoned here.
  let auditAcquired = 0;
  for (let i = 0; i < ACCOUNTS; i++) {
    const guard = table.mutex(lockName(i)).tryLock();
    if (guard === null) {
      failures.push(`${lockName(i)} is still held (by registry thread ${table.stats(lockName(i))?.owner}) after every worker exited`);
      continue;
    }
    auditAcquired++;
    if (guard.abandoned) repair(bank, i, 0, monotonicMs());
    else if (!isClean(bank, i)) Atomics.add(words, C_ANOMALIES, 1);
    guard.unlock();
  }

  // Transfers and acquisitions as the workers count them (the victim's from shared memory: it cannot report).
  let reported = 0, acquired = 0;
  const shares: Summary['shares'] = [];
  for (let i = 0; i < n; i++) {
    const r = reports.get(i);
    if (i !== victim && r === undefined) failures.push(`${label(i)} did not report`);
    const own = r?.done ?? Atomics.load(words, workerBase(bank, i) + W_DONE);
    reported += own;
    acquired += r?.acquired ?? Atomics.load(words, workerBase(bank, i) + W_ACQUIRED);
    shares.push({ label: `${label(i)}${i === victim ? ' †' : ''}`, done: own });
  }

  // Who recovered which lock, and how long after terminate().
  const recoveries: Recovery[] = [];
  for (let i = 0; i < ACCOUNTS; i++) {
    const a = accountBase(i), times = words[a + R_TIMES];
    if (times === 0) {
      if (held.includes(i)) failures.push(`${lockName(i)} was held by the terminated worker but never came back abandoned`);
      continue;
    }
    if (!held.includes(i)) failures.push(`${lockName(i)} came back abandoned, but the terminated worker did not hold it`);
    if (times > 1) failures.push(`${lockName(i)} came back abandoned ${times} times (expected once)`);
    const by = words[a + R_BY], action = words[a + R_ACTION], change = words[a + R_CHANGE];
    recoveries.push({
      name: lockName(i),
      ms: bank.f64[(a + R_AT_F64) >> 1] - killedAt,
      by: by === 0 ? 'the main thread (final audit)' : label(by - 1),
      action: action === REPAIR_ROLLED_BACK ? `rolled back (${change === 0 ? 'its credit had not landed' : `${int(change)} put back`})`
        : action === REPAIR_ROLLED_FORWARD ? `rolled forward (${int(change)} applied)` : 'nothing to repair',
    });
  }

  // Exactness: money is conserved, and the books agree with the workers.
  const books = totals(bank);
  if (books.balance !== INITIAL_BALANCE * ACCOUNTS) {
    failures.push(`balances sum to ${int(books.balance)}, expected ${int(INITIAL_BALANCE * ACCOUNTS)}`);
  }
  if (books.transfers !== reported) failures.push(`${int(books.transfers)} transfers in the books, workers report ${int(reported)}`);
  const anomalies = Atomics.load(words, C_ANOMALIES);
  if (anomalies > 0) failures.push(`${anomalies} acquisitions found a half-written transfer without guard.abandoned`);

  const histogram = new Array<number>(HIST_BUCKETS).fill(0);
  for (let i = 0; i < n; i++) for (let b = 0; b < HIST_BUCKETS; b++) histogram[b] += words[histBase(bank, i) + b];
  const samples = histogram.reduce((s, c) => s + c, 0);
  const quantile = (q: number) => {
    let seen = 0;
    for (let b = 0; b < HIST_BUCKETS; b++) if ((seen += histogram[b]) >= q * samples && samples > 0) return bucketUpperNs(b);
    return 0;
  };

  const locks = table.stats().filter((s) => s.name?.startsWith('account:') === true);
  const notes: string[] = [];
  const statsAcquired = locks.reduce((s, l) => s + l.acquisitions, 0);
  if (statsAcquired !== acquired + auditAcquired) {
    notes.push(`table.stats() counts ${int(statsAcquired)} acquisitions, the threads counted ${int(acquired + auditAcquired)}`);
  }
  for (let i = 0; i < ACCOUNTS; i++) {
    if (words[accountBase(i) + A_BALANCE] < 0) notes.push(`${lockName(i)} is overdrawn`);
  }

  console.log(closingTable({
    workers: n,
    syncWorkers: Math.ceil(n / 2),
    seconds: (stoppedAt - t0) / 1000,
    transfers: books.transfers,
    acquisitions: acquired,
    waits: { samples, p50Ns: quantile(0.5), p99Ns: quantile(0.99), maxNs: quantile(1) },
    terminated: Number.isNaN(killedAt) ? 'nobody (the kill failed)'
      : `${label(victim)}, holding ${held.map(lockName).join(' and ')}, ${ms(killedAt - bank.f64[C_GAP_AT_F64 >> 1])} after it stopped in its gap;`
        + ` its 'exit' event, on which latchkey releases them, came ${ms(exitAt - killedAt)} after terminate()`,
    recoveries,
    shares,
    locks,
    failures,
    notes,
  }));
  return failures.length === 0 ? 0 : 1;
}

let options: Options;
try {
  options = parseOptions(process.argv.slice(2));
} catch (err) {
  console.error(`latchkey demo: ${(err as Error).message}\nusage: node dist/demo/main.js [--workers N] [--seconds S] [--quiet]`);
  process.exit(2);
}
try {
  process.exitCode = await run(options);
} catch (err) {
  // Workers may still be running or blocked: exit rather than wait for them.
  console.error(`latchkey demo: ${(err as Error).stack ?? String(err)}\nexactness: FAILED (the demo did not finish)`);
  process.exit(1);
}
