import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { result, start } from './helpers.js';

interface Party { lasts: number; violations: number; passed: number; error?: string }

async function run(hows: Array<'sync' | 'async'>, parties: number, generations: number, timeout: number) {
  const table = LockTable.create({ slots: 8 });
  const shared = new SharedArrayBuffer(256);
  const workers = hows.map((how, me) => start('barrier-rounds', {
    table: table.buffer, shared, me, n: hows.length, parties, generations, how, timeout,
  }));
  return { table, parties: await Promise.all(workers.map((w) => result<Party>(w))) };
}

describe('Barrier generations', () => {
  test.each([
    ['sync', ['sync', 'sync', 'sync', 'sync']],
    ['async', ['async', 'async', 'async', 'async']],
    ['mixed', ['sync', 'async', 'sync', 'async']],
  ] as Array<[string, Array<'sync' | 'async'>]>)(
    '%s: 4 parties × 1000 generations never mix, and exactly one party per generation is told it was last', async (_n, hows) => {
      const generations = 1000;
      const { table, parties } = await run(hows, 4, generations, 10_000);
      for (const p of parties) expect(p).toMatchObject({ violations: 0, passed: generations, error: undefined });
      expect(parties.reduce((n, p) => n + p.lasts, 0)).toBe(generations);
      // Every completed generation counted all its arrivals (exact: as many threads as parties).
      expect(table.stats('rounds')).toMatchObject({ kind: 'barrier', acquisitions: 4 * generations, contended: 3 * generations });
    });

  test('the same check sees generations mix when a party too few is declared (the control)', async () => {
    // 4 threads on a 3-party barrier: a generation completes without one of them.
    const { parties } = await run(['sync', 'sync', 'sync', 'sync'], 3, 200, 200);
    expect(parties.reduce((n, p) => n + p.violations, 0)).toBeGreaterThan(0);
  });
});
