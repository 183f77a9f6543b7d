import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';

const CELLS = 20;

async function race(mode: 'mixed' | 'none', workers: number) {
  const table = LockTable.create({ slots: 64 });
  const shared = control(8 + 3 * CELLS);
  const ws = Array.from({ length: workers }, (_, i) => start('once-run', {
    table: table.buffer, prefix: 'init:', cells: CELLS, workers, shared: shared.buffer,
    mode: mode === 'none' ? 'none' : i % 2 === 0 ? 'sync' : 'async',
  }));
  const results = ws.map((w) => result<{ ran: boolean[]; seen: number[] }>(w)); // listen first: a worker that fails to start says why
  await until(shared, 0, workers);
  signalWord(shared, 1); // everyone starts at once
  const out = await Promise.all(results);
  const runs = Array.from({ length: CELLS }, (_, j) => Atomics.load(shared, 8 + 2 * j));
  return { table, out, runs };
}

describe('Once runs its initialiser exactly once', () => {
  test('8 workers (runSync and run mixed) race through 20 cells: each initialiser ran once, and every caller saw its write', async () => {
    const { table, out, runs } = await race('mixed', 8);
    expect(runs).toEqual(Array(CELLS).fill(1));
    for (let j = 0; j < CELLS; j++) {
      expect(out.filter((o) => o.ran[j]).length).toBe(1); // exactly one call says it ran it
      expect(out.map((o) => o.seen[j])).toEqual(Array(8).fill(1000 + j));
      const stats = table.stats(`init:${j}`)!;
      expect(stats).toMatchObject({ kind: 'once', acquisitions: 1, holders: [] });
      expect(table.once(`init:${j}`).done).toBe(true);
    }
  });

  test('the same race with a hand-made check-then-act runs some initialisers more than once (the test can see it)', async () => {
    const { runs } = await race('none', 8);
    expect(Math.max(...runs)).toBeGreaterThan(1);
  });
});
