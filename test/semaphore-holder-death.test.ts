import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { HEIR_MASK } from '../src/atomics/semaphore-word.js';
import { T_WAIT_SLOT, threadBase } from '../src/atomics/layout.js';
import { control, exited, result, start, until } from './helpers.js';

const bellOf = (table: LockTable, slot: number) => {
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  return Atomics.load(core.words, slotBase(slot) + 1);
};

/** Threads blocked in a sync wait on `slot` (they record it before they park). */
async function blockedOn(table: LockTable, slot: number, count: number): Promise<void> {
  const { core } = LockTable.unsafeExposeInternals(table);
  const deadline = performance.now() + 5000;
  const blocked = () => Array.from({ length: core.threads }, (_, i) => Atomics.load(core.words, threadBase(i + 1) + T_WAIT_SLOT))
    .filter((v) => v === slot + 1).length;
  while (blocked() < count) {
    if (performance.now() > deadline) throw new Error(`fewer than ${count} threads ever blocked on slot ${slot}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('Semaphore holder death', () => {
  test.each(['terminate', 'exit', 'throw', 'return'] as const)(
    'a worker that dies holding 2 of 3 permits (%s) gives them back, and the next acquisition is told',
    async (then) => {
      const table = LockTable.create({ slots: 8 });
      const s = table.semaphore('dead', 3);
      const ctl = control();
      const holder = start('semaphore-hold', { table: table.buffer, name: 'dead', permits: 3, n: 2, then, control: ctl.buffer });
      holder.on('error', () => {}); // 'throw' is the point of the test
      const gone = exited(holder);
      await until(ctl, 0, 1);
      if (then === 'terminate') { // the others may already be gone and recovered
        expect(s.available).toBe(1);
        expect(table.stats('dead')!.holders).toEqual([Atomics.load(ctl, 2)]);
      }
      // Two waiters for all 3 permits: one blocked in acquireSync in a worker, one async here.
      const waiterCtl = control();
      const waiter = start('semaphore-acquire', {
        table: table.buffer, name: 'dead', permits: 3, n: 3, how: 'sync', timeout: 10_000, control: waiterCtl.buffer,
      });
      const waited = result<{ ok: boolean; abandoned: boolean }>(waiter);
      const mine = s.acquire(3, { timeout: 10_000 });
      await blockedOn(table, s.slot, 1);
      const t0 = performance.now();
      if (then === 'terminate') await holder.terminate();
      else await gone;
      // Each gives the permits back as soon as it has them, so the other gets them next.
      const ours = mine.then((g) => { const { abandoned } = g; g.release(); return abandoned; });
      const [oursAbandoned, theirs] = await Promise.all([ours, waited]);
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(theirs.ok).toBe(true);
      // Exactly one of the two was told; the other got clean permits after it.
      expect([oursAbandoned, theirs.abandoned].filter(Boolean)).toEqual([true]);
      expect(s.available).toBe(3);
      expect(table.stats('dead')!.holders).toEqual([]);
    });

  test('a dead thread\'s permits come back every time its registry entry is reused', async () => {
    const table = LockTable.create({ slots: 8, threads: 2 }); // this thread + one worker at a time
    const s = table.semaphore('r', 3);
    for (let i = 0; i < 4; i++) {
      const ctl = control();
      const holder = start('semaphore-hold', { table: table.buffer, name: 'r', permits: 3, n: 1 + (i % 3), then: 'terminate', control: ctl.buffer });
      await until(ctl, 0, 1);
      await holder.terminate();
      const g = await s.acquire(3, { timeout: 5000 });
      expect(g.abandoned).toBe(true);
      g.release();
      expect(s.available).toBe(3);
    }
  });

  test('a heir that dies leaves no heir behind: the permits it waited for go to others at once', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('h', 3);
    const mine = s.acquireSync(1);
    const ctl = control();
    const heir = start('semaphore-acquire', { table: table.buffer, name: 'h', permits: 3, n: 3, how: 'sync', control: ctl.buffer });
    heir.on('error', () => {});
    await blockedOn(table, s.slot, 1);
    // It waits for 3 while we hold 1; after 1 ms it claims the heir bits, and then even 1 free permit is not for us.
    const deadline = performance.now() + 5000;
    while ((bellOf(table, s.slot) & HEIR_MASK) === 0) {
      if (performance.now() > deadline) throw new Error('the waiter never became heir');
      await new Promise((r) => setTimeout(r, 1));
    }
    expect(s.tryAcquire(1)).toBeNull();
    await heir.terminate();
    expect(bellOf(table, s.slot) & HEIR_MASK).toBe(0);
    const g = s.tryAcquire(2);
    expect(g).not.toBeNull();
    expect(g!.abandoned).toBe(false); // a heir holds nothing: nothing was abandoned
    g!.release();
    mine.release();
    expect(s.available).toBe(3);
  });
});
