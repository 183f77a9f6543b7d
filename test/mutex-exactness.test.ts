import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';

async function race(mode: 'sync' | 'async' | 'mixed' | 'none', workers: number, iterations: number, table: LockTable | null) {
  const counter = new SharedArrayBuffer(8);
  const gate = control(2);
  const ws = Array.from({ length: workers }, (_, i) => start('increment', {
    table: table?.buffer ?? null, counter, gate: gate.buffer, name: 'exactness', iterations,
    mode: mode === 'mixed' ? (i % 2 === 0 ? 'sync' : 'mixed') : mode,
  }));
  await until(gate, 0, workers);
  signalWord(gate, 1); // everyone starts at once
  await Promise.all(ws.map(result));
  return new Int32Array(counter)[0];
}

describe('Mutex exactness', () => {
  test('6 workers × 100k non-atomic increments under lockSync/lock (mixed) lose none', async () => {
    const total = await race('mixed', 6, 100_000, null);
    expect(total).toBe(600_000);
    expect(LockTable.default().stats('exactness')?.acquisitions).toBe(600_000);
  });

  test('4 workers × 100k under async lock() only, on an explicit table, lose none', async () => {
    expect(await race('async', 4, 100_000, LockTable.create({ slots: 16 }))).toBe(400_000);
  });

  test('the same increments without the lock do lose updates (the test can see a race)', async () => {
    expect(await race('none', 4, 100_000, null)).toBeLessThan(400_000);
  });
});
