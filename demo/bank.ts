/**
 * The bank's data operations. Every function here runs with the lock of
 * each account it touches held (`account:<i>`), and uses plain loads and
 * stores: the locks are the only thing that makes them correct.
 *
 * # Why a journal
 * A transfer writes two accounts, and its thread can die between the two
 * writes (here: `worker.terminate()` in the gap). latchkey then releases the
 * dead thread's locks and tells the *next* holder of each one
 * `guard.abandoned === true`. That holder is the first to touch the account
 * since the death, so the account is exactly as the dead thread left it, and
 * the account's journal says what to do with it:
 *
 * | journal  | the writer's W_COMMITTED | repair                                  |
 * |----------|--------------------------|-----------------------------------------|
 * | inactive | (any)                    | nothing: no transfer was half-done here |
 * | active   | < J_SEQ (not committed)  | roll back: restore the pre-images       |
 * | active   | >= J_SEQ (committed)     | roll forward: pre-image + delta         |
 *
 * Each account is repaired by the holder of its own lock alone, and both
 * accounts of one transfer reach the same verdict because they read the same
 * commit word. Restoring is an assignment, not an increment, so a repair is
 * right whether or not the dead thread's write had already landed.
 */
import {
  A_BALANCE, A_COUNT, J_ACTIVE, J_BALANCE, J_COUNT, J_DELTA, J_DELTA_COUNT, J_SEQ, J_WORKER,
  R_ACTION, R_AT_F64, R_BY, R_CHANGE, R_TIMES, REPAIR_CLEAN, REPAIR_ROLLED_BACK, REPAIR_ROLLED_FORWARD,
  W_COMMITTED, type Bank, accountBase, workerBase,
} from './layout.js';

let sink = 0;

/** The deliberate gap between debit and credit: a busy loop the JIT cannot drop. */
export function busy(iterations: number): void {
  let x = sink;
  for (let k = 0; k < iterations; k++) x = (Math.imul(x, 31) + k) | 0;
  sink = x;
}

/** Main thread, before any worker starts. */
export function openAccounts(bank: Bank, initial: number): void {
  for (let i = 0; i < bank.accounts; i++) bank.words[accountBase(i) + A_BALANCE] = initial;
}

function journal(bank: Bank, account: number, worker: number, seq: number, delta: number, deltaCount: number): void {
  const w = bank.words, a = accountBase(account);
  w[a + J_WORKER] = worker + 1;
  w[a + J_SEQ] = seq;
  w[a + J_BALANCE] = w[a + A_BALANCE];
  w[a + J_COUNT] = w[a + A_COUNT];
  w[a + J_DELTA] = delta;
  w[a + J_DELTA_COUNT] = deltaCount;
  w[a + J_ACTIVE] = 1; // last: an active journal is a complete one
}

/**
 * Move `amount` from `from` to `to`, holding both accounts' locks. `gap`
 * runs between the debit and the credit; the victim dies in it.
 * `seq` numbers this worker's transfers from 1.
 */
export function transfer(
  bank: Bank, worker: number, seq: number, from: number, to: number, amount: number, gap: () => void,
): void {
  const w = bank.words, f = accountBase(from), t = accountBase(to);
  // Both journals before the first write: a death after it finds both.
  journal(bank, from, worker, seq, -amount, 1);
  journal(bank, to, worker, seq, amount, 0);
  w[f + A_BALANCE] = w[f + A_BALANCE] - amount; // debit: a plain read-modify-write
  w[f + A_COUNT] = w[f + A_COUNT] + 1;
  gap();
  w[t + A_BALANCE] = w[t + A_BALANCE] + amount; // credit
  // The commit point: one store that both repairers would read.
  Atomics.store(w, workerBase(bank, worker) + W_COMMITTED, seq);
  w[f + J_ACTIVE] = 0;
  w[t + J_ACTIVE] = 0;
}

/** Whether the account's journal is empty, as it must be for a holder not told `abandoned`. */
export function isClean(bank: Bank, account: number): boolean {
  return bank.words[accountBase(account) + J_ACTIVE] === 0;
}

/**
 * Repair `account` after its lock came back abandoned (see the table above)
 * and record who did it, and when (`at`, monotonic ms of the acquisition).
 * `by` is the repairing worker's index + 1, or 0 for the main thread.
 * Returns one of REPAIR_*.
 */
export function repair(bank: Bank, account: number, by: number, at: number): number {
  const w = bank.words, a = accountBase(account);
  const found = w[a + A_BALANCE];
  let action = REPAIR_CLEAN;
  if (w[a + J_ACTIVE] === 1) {
    const committed = Atomics.load(w, workerBase(bank, w[a + J_WORKER] - 1) + W_COMMITTED) >= w[a + J_SEQ];
    w[a + A_BALANCE] = w[a + J_BALANCE] + (committed ? w[a + J_DELTA] : 0);
    w[a + A_COUNT] = w[a + J_COUNT] + (committed ? w[a + J_DELTA_COUNT] : 0);
    w[a + J_ACTIVE] = 0;
    action = committed ? REPAIR_ROLLED_FORWARD : REPAIR_ROLLED_BACK;
  }
  w[a + R_TIMES] += 1;
  w[a + R_BY] = by;
  w[a + R_ACTION] = action;
  w[a + R_CHANGE] = w[a + A_BALANCE] - found;
  bank.f64[(a + R_AT_F64) >> 1] = at;
  return action;
}

/** Totals for the exactness check: main thread, every account's lock held or every worker gone. */
export function totals(bank: Bank): { balance: number; transfers: number } {
  let balance = 0, transfers = 0;
  for (let i = 0; i < bank.accounts; i++) {
    balance += bank.words[accountBase(i) + A_BALANCE];
    transfers += bank.words[accountBase(i) + A_COUNT];
  }
  return { balance, transfers };
}
