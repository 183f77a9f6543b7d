import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';

/** Hold the lock for `ms` without sleeping (the thread must not yield in the middle of the test's count). */
function holdFor(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

describe('Mutex hold-time sampling (stats().holdMaxNs)', () => {
  test('the 64th acquisition of a slot is timed, released through its guard', () => {
    const table = LockTable.create({ slots: 4 });
    const m = table.mutex('held');
    for (let i = 1; i < 64; i++) m.lockSync().unlock();
    expect(table.stats('held')!.holdMaxNs).toBe(0); // none of the first 63 was timed
    const g = m.lockSync();
    holdFor(20);
    g.unlock();
    expect(table.stats('held')!.holdMaxNs).toBeGreaterThanOrEqual(20e6);
  });

  test('a hold released by m.unlock() without its guard is timed too', () => {
    const table = LockTable.create({ slots: 4 });
    const m = table.mutex('held');
    for (let i = 1; i < 64; i++) m.lockSync().unlock();
    m.lockSync();
    holdFor(20);
    m.unlock();
    expect(table.stats('held')!.holdMaxNs).toBeGreaterThanOrEqual(20e6);
  });

  test('a sampled hold released through another handle is not timed, and leaves no stale start behind', () => {
    const table = LockTable.create({ slots: 4 });
    const a = table.mutex('held'), b = table.mutex('held');
    for (let i = 1; i < 64; i++) a.lockSync().unlock();
    a.lockSync(); // the 64th: sampled through `a`
    b.unlock(); // released through `b`
    holdFor(30);
    a.lockSync().unlock(); // a short hold through `a`: must not be timed from the 64th's start
    expect(table.stats('held')!.holdMaxNs).toBeLessThan(30e6);
  });
});
