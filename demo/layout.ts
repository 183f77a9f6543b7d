/**
 * The demo's shared memory, drawn once: main.ts and worker.ts both reach the
 * bank only through these constants.
 *
 * Why Int32: the control words are waited on (Atomics.wait/waitAsync work on
 * Int32Array only), and balances and counters fit 32 bits for any run this
 * demo makes. The two timestamps are float64 words at an even word index.
 *
 * ```
 * ┌──────────────────┬─────────────────────────────┬────────────────────────────┬──────────────────────────────┐
 * │ control (16 w.)  │ accounts: K × 16 words      │ workers: N × 16 words      │ wait histogram: N × BUCKETS  │
 * └──────────────────┴─────────────────────────────┴────────────────────────────┴──────────────────────────────┘
 * ```
 * Each account and each worker row is 64 bytes, one cache line, so that two
 * accounts under two different locks never share a line.
 *
 * Who writes what:
 * - control: main writes C_GO, C_STOP, C_KILL; workers add to C_READY and
 *   C_ANOMALIES; the victim writes C_IN_GAP and C_VICTIM_LO/HI.
 * - account i (A_*, J_*, R_*): only the holder of mutex `account:<i>`, with
 *   plain loads and stores. This is the non-atomic state the locks protect.
 * - worker w (W_*): only worker w. W_COMMITTED is its commit point, read by
 *   whoever repairs one of its half-done transfers after it died.
 * - histogram row w: only worker w, with plain increments; read by main after
 *   the worker has exited.
 */

export const C_READY = 0; // workers that attached and resolved their mutexes
export const C_GO = 1; // 1: start transferring
export const C_STOP = 2; // 1: finish the current transfer and report
export const C_KILL = 3; // 1: the victim stops in its next gap
export const C_IN_GAP = 4; // 1: the victim is between debit and credit and will not return
export const C_VICTIM_LO = 5; // the accounts the victim holds, once C_IN_GAP is 1
export const C_VICTIM_HI = 6;
export const C_ANOMALIES = 7; // a holder found a lock's data half-written without `abandoned`
export const C_PARK = 8; // never written: the victim sleeps on it until terminated
export const C_GAP_AT_F64 = 10; // float64 at words 10–11: monotonic ms at which the victim stopped in its gap
export const CONTROL_WORDS = 16;

/** The account itself. */
export const A_BALANCE = 0;
/** Committed transfers out of this account: the count kept under the locks. */
export const A_COUNT = 1;
/**
 * The journal (undo/redo record) of the transfer in progress on this
 * account, written before the account's first write and cleared after the
 * transfer commits. J_ACTIVE is written last on the way in, first on the way out.
 */
export const J_ACTIVE = 2;
export const J_WORKER = 3; // worker index + 1 that wrote it
export const J_SEQ = 4; // that worker's transfer number: committed iff W_COMMITTED >= J_SEQ
export const J_BALANCE = 5; // balance before the transfer
export const J_COUNT = 6; // A_COUNT before the transfer
export const J_DELTA = 7; // what the transfer adds to the balance (negative for the source)
export const J_DELTA_COUNT = 8; // what it adds to A_COUNT (1 for the source, 0 for the destination)
/** The latest recovery of this account's lock (written by the holder that got `abandoned`). */
export const R_TIMES = 9; // how many times this lock came back abandoned
export const R_BY = 10; // worker index + 1 that repaired it; 0 = main (the final audit)
export const R_ACTION = 11; // one of REPAIR_*
export const R_AT_F64 = 12; // float64 at words 12–13: monotonic ms (hrtime) of that acquisition
export const R_CHANGE = 14; // what the repair changed the balance by
export const ACCOUNT_WORDS = 16;

export const W_DONE = 0; // transfers this worker completed (published after each one)
export const W_ACQUIRED = 1; // lock acquisitions by this worker
export const W_COMMITTED = 2; // seq of its last committed transfer: the commit point
export const W_REPAIRS = 3; // abandoned locks it repaired
export const WORKER_WORDS = 16;

export const REPAIR_CLEAN = 1; // abandoned, but the journal was empty: nothing was half-written
export const REPAIR_ROLLED_BACK = 2; // the transfer had not committed: pre-images restored
export const REPAIR_ROLLED_FORWARD = 3; // it had committed: its writes completed from the journal

/**
 * Wait histogram: bucket b > 0 holds waits in (2^((b-1)/SUB), 2^(b/SUB)] ns,
 * bucket 0 waits of 1 ns or less. 4 buckets an octave: ±10% resolution.
 */
export const HIST_SUB = 4;
export const HIST_BUCKETS = 41 * HIST_SUB; // up to 2^41 ns ≈ 37 minutes

/** Views of one bank buffer, the same in every thread. */
export interface Bank {
  readonly buffer: SharedArrayBuffer;
  readonly accounts: number;
  readonly workers: number;
  readonly words: Int32Array;
  readonly f64: Float64Array;
}

export function accountBase(i: number): number {
  return CONTROL_WORDS + i * ACCOUNT_WORDS;
}

export function workerBase(bank: Bank, w: number): number {
  return CONTROL_WORDS + bank.accounts * ACCOUNT_WORDS + w * WORKER_WORDS;
}

export function histBase(bank: Bank, w: number): number {
  return CONTROL_WORDS + bank.accounts * ACCOUNT_WORDS + bank.workers * WORKER_WORDS + w * HIST_BUCKETS;
}

export function bankByteLength(accounts: number, workers: number): number {
  return (CONTROL_WORDS + accounts * ACCOUNT_WORDS + workers * (WORKER_WORDS + HIST_BUCKETS)) * 4;
}

export function viewBank(buffer: SharedArrayBuffer, accounts: number, workers: number): Bank {
  const words = new Int32Array(buffer);
  return { buffer, accounts, workers, words, f64: new Float64Array(buffer) };
}

export function lockName(i: number): string {
  return `account:${i}`;
}

/** A clock every thread of the process shares (performance.now() has a per-thread origin). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function bucketOf(ns: number): number {
  return ns <= 1 ? 0 : Math.min(HIST_BUCKETS - 1, Math.ceil(Math.log2(ns) * HIST_SUB));
}

/** The upper bound of a bucket, in ns: percentiles are reported conservatively. */
export function bucketUpperNs(b: number): number {
  return 2 ** (b / HIST_SUB);
}
