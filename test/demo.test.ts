import { expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openAccounts, repair, totals, transfer } from '../demo/bank.js';
import {
  A_BALANCE, REPAIR_CLEAN, REPAIR_ROLLED_BACK, REPAIR_ROLLED_FORWARD, W_COMMITTED, accountBase, bankByteLength, viewBank, workerBase,
} from '../demo/layout.js';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Run the compiled demo (`npm test` builds first) as a real process. */
function demo(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    // `timeout` kills a hung demo, so the test fails instead of hanging.
    const child = spawn(process.execPath, ['dist/demo/main.js', ...args], { cwd: root, timeout: 30_000 });
    let out = '', err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, out, err }));
  });
}

test('demo/main.js --workers 3 --seconds 1 --quiet exits 0, exact, with the terminated worker\'s locks recovered', async () => {
  const { code, signal, out, err } = await demo(['--workers', '3', '--seconds', '1', '--quiet']);
  expect({ code, signal, err }, out).toEqual({ code: 0, signal: null, err: '' });
  expect(out).toContain('exactness: OK');
  // Both locks the victim held come back abandoned and are repaired by someone.
  const recovered = out.match(/account:\d+ recovered [\d.]+ (?:ns|µs|ms|s) after terminate\(\), repaired by /g) ?? [];
  expect(recovered.length, out).toBe(2);
  // --quiet: no progress lines.
  expect(out).not.toMatch(/transfers\/s\n/);
});

test('demo/main.js rejects --workers 1 with exit code 2', async () => {
  const { code, err } = await demo(['--workers', '1']);
  expect(code).toBe(2);
  expect(err).toContain('--workers must be an integer from 2 to 64');
});

// The journal, without threads: a gap that throws stands in for a death between debit and credit.
test('demo bank repair() rolls an uncommitted transfer back and a committed one forward', () => {
  const bank = viewBank(new SharedArrayBuffer(bankByteLength(3, 1)), 3, 1);
  openAccounts(bank, 1000);
  const die = () => { throw new Error('died in the gap'); };
  expect(() => transfer(bank, 0, 1, 0, 1, 30, die)).toThrow('died in the gap');
  expect(bank.words[accountBase(0) + A_BALANCE]).toBe(970); // debited, not credited
  expect([repair(bank, 0, 1, 0), repair(bank, 1, 1, 0), repair(bank, 2, 1, 0)]).toEqual([REPAIR_ROLLED_BACK, REPAIR_ROLLED_BACK, REPAIR_CLEAN]);
  expect(totals(bank)).toEqual({ balance: 3000, transfers: 0 });

  // Committed, then died before clearing the journals: the credit may or may not be in.
  expect(() => transfer(bank, 0, 2, 2, 1, 50, die)).toThrow();
  Atomics.store(bank.words, workerBase(bank, 0) + W_COMMITTED, 2);
  expect([repair(bank, 1, 1, 0), repair(bank, 2, 1, 0)]).toEqual([REPAIR_ROLLED_FORWARD, REPAIR_ROLLED_FORWARD]);
  expect(totals(bank)).toEqual({ balance: 3000, transfers: 1 });
  expect(bank.words[accountBase(1) + A_BALANCE]).toBe(1050);
});
