/**
 * One teller: transfers between random pairs of accounts until main sets
 * C_STOP, then posts a WorkerReport. A 'sync' teller takes its locks with
 * `lockSync()`, an 'async' one with `await lock()`. The victim, once main
 * sets C_KILL, announces itself in its next gap (between debit and credit,
 * holding both locks) and blocks there until main terminates it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { LockTable, type MutexGuard } from '../src/index.js';
import { busy, isClean, repair, transfer } from './bank.js';
import {
  C_ANOMALIES, C_GAP_AT_F64, C_GO, C_IN_GAP, C_KILL, C_PARK, C_READY, C_STOP, C_VICTIM_HI, C_VICTIM_LO,
  W_ACQUIRED, W_DONE, W_REPAIRS, bucketOf, histBase, lockName, monotonicMs, viewBank, workerBase,
} from './layout.js';

export interface WorkerInput {
  buffer: SharedArrayBuffer;
  accounts: number;
  workers: number;
  index: number;
  mode: 'sync' | 'async';
  victim: boolean;
  /** Busy-loop iterations between debit and credit. */
  gap: number;
}

export interface WorkerReport {
  index: number;
  done: number;
  acquired: number;
  repairs: number;
}

const input = workerData as WorkerInput;
const bank = viewBank(input.buffer, input.accounts, input.workers);
const words = bank.words;
const me = input.index;
const mine = workerBase(bank, me);
const hist = histBase(bank, me);
// The default table: the main thread made it when it imported latchkey, and
// every worker it starts inherits it. No buffer passes through workerData.
const mutexes = Array.from({ length: input.accounts }, (_, i) => LockTable.default().mutex(lockName(i)));

let done = 0, acquired = 0, repairs = 0, seq = 0;

// xorshift32, seeded per worker: cheap, and each teller walks its own pairs.
let rng = (0x9e3779b9 ^ Math.imul(me + 1, 0x85ebca6b)) | 0;
function random(n: number): number {
  rng ^= rng << 13;
  rng ^= rng >>> 17;
  rng ^= rng << 5;
  return (rng >>> 0) % n;
}

/** After each acquisition: count it, sample its wait, and repair if the last holder died. */
function granted(account: number, guard: MutexGuard, waitedMs: number): void {
  acquired++;
  words[hist + bucketOf(waitedMs * 1e6)] += 1;
  if (guard.abandoned) {
    repair(bank, account, me + 1, monotonicMs());
    repairs++;
    Atomics.store(words, mine + W_REPAIRS, repairs);
  } else if (!isClean(bank, account)) {
    // Half-written data under a lock nobody said was abandoned: the lock failed.
    Atomics.add(words, C_ANOMALIES, 1);
  }
}

/** The victim's gap: say which locks it holds, then sleep until terminate(). */
function die(lo: number, hi: number): never {
  Atomics.store(words, mine + W_ACQUIRED, acquired); // its last two are not published by work()
  bank.f64[C_GAP_AT_F64 >> 1] = monotonicMs();
  Atomics.store(words, C_VICTIM_LO, lo);
  Atomics.store(words, C_VICTIM_HI, hi);
  Atomics.store(words, C_IN_GAP, 1); // last: main reads LO/HI once it sees this
  Atomics.notify(words, C_IN_GAP);
  for (;;) Atomics.wait(words, C_PARK, 0); // nobody writes C_PARK: only terminate() ends this
}

/** Debit, gap, credit, with both guards held; then release and publish. */
function work(lo: number, hi: number, a: MutexGuard, b: MutexGuard): void {
  try {
    const forward = random(2) === 0;
    const amount = 1 + random(100);
    const gap = input.victim && Atomics.load(words, C_KILL) === 1 ? () => die(lo, hi) : () => busy(input.gap);
    transfer(bank, me, ++seq, forward ? lo : hi, forward ? hi : lo, amount, gap);
  } finally {
    b.unlock();
    a.unlock();
  }
  done++;
  Atomics.store(words, mine + W_DONE, done);
  Atomics.store(words, mine + W_ACQUIRED, acquired);
}

/** Two distinct accounts, lower index first: the global lock order, so no deadlock. */
function pair(): [number, number] {
  const x = random(input.accounts);
  let y = random(input.accounts - 1);
  if (y >= x) y++;
  return x < y ? [x, y] : [y, x];
}

function runSync(): void {
  while (Atomics.load(words, C_STOP) === 0) {
    const [lo, hi] = pair();
    let t0 = performance.now();
    const a = mutexes[lo].lockSync();
    granted(lo, a, performance.now() - t0);
    let b: MutexGuard;
    try {
      t0 = performance.now();
      b = mutexes[hi].lockSync();
      granted(hi, b, performance.now() - t0);
    } catch (err) {
      a.unlock();
      throw err;
    }
    work(lo, hi, a, b);
  }
}

async function runAsync(): Promise<void> {
  while (Atomics.load(words, C_STOP) === 0) {
    const [lo, hi] = pair();
    let t0 = performance.now();
    const a = await mutexes[lo].lock();
    granted(lo, a, performance.now() - t0);
    let b: MutexGuard;
    try {
      t0 = performance.now();
      b = await mutexes[hi].lock();
      granted(hi, b, performance.now() - t0);
    } catch (err) {
      a.unlock();
      throw err;
    }
    work(lo, hi, a, b);
  }
}

Atomics.add(words, C_READY, 1);
Atomics.notify(words, C_READY);
Atomics.wait(words, C_GO, 0); // a worker may block: main waits with waitAsync
if (input.mode === 'sync') runSync();
else await runAsync();
Atomics.store(words, mine + W_ACQUIRED, acquired);
const report: WorkerReport = { index: me, done, acquired, repairs };
parentPort!.postMessage(report);
