import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';

function holdFor(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

describe('Semaphore hold-time sampling (stats().holdMaxNs)', () => {
  test('the 64th acquisition of a slot is timed from acquire to release', () => {
    const table = LockTable.create({ slots: 4 });
    const s = table.semaphore('held', 2);
    for (let i = 1; i < 64; i++) s.acquireSync().release();
    expect(table.stats('held')!.holdMaxNs).toBe(0);
    const timed = s.acquireSync();
    const other = s.acquireSync(); // the 65th, not timed, released first
    other.release();
    holdFor(20);
    timed.release();
    expect(table.stats('held')!.holdMaxNs).toBeGreaterThanOrEqual(20e6);
  });
});
