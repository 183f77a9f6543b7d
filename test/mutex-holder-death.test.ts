import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, exited, result, start, until } from './helpers.js';

describe('Mutex holder death', () => {
  test.each(['terminate', 'exit', 'throw', 'return'] as const)(
    'a worker that dies holding the mutex (%s) releases it, and the next guard says abandoned',
    async (then) => {
      const table = LockTable.create({ slots: 8 });
      const ctl = control();
      const holder = start('hold', { table: table.buffer, name: 'dead', then, control: ctl.buffer });
      holder.on('error', () => {}); // 'throw' is the point of the test
      const gone = exited(holder);
      await until(ctl, 0, 1);
      // A waiter blocked in lockSync in another worker, and one async on this thread.
      const waiter = start('acquire', { table: table.buffer, name: 'dead', how: 'sync', timeout: 10_000 });
      const waited = result(waiter);
      const mine = table.mutex('dead').lock({ timeout: 10_000 });
      await new Promise((r) => setTimeout(r, 20));
      const t0 = performance.now();
      if (then === 'terminate') await holder.terminate();
      else await gone;
      // Which of the two gets it first is a race; exactly one of them is told.
      const g = await mine;
      const recoveredMs = performance.now() - t0;
      const mineAbandoned = g.abandoned;
      g.unlock();
      const theirs = await waited;
      expect(theirs).toMatchObject({ ok: true });
      expect([mineAbandoned, theirs.abandoned].filter(Boolean)).toEqual([true]);
      expect(recoveredMs).toBeLessThan(1000);
      expect(table.mutex('dead').locked).toBe(false);
    });

  test('the dead thread\'s registry entry is freed for the next thread', async () => {
    const table = LockTable.create({ slots: 8, threads: 2 }); // this thread + one worker at a time
    for (let i = 0; i < 4; i++) {
      const ctl = control();
      const holder = start('hold', { table: table.buffer, name: 'r', then: 'terminate', control: ctl.buffer });
      await until(ctl, 0, 1);
      await holder.terminate();
      const g = await table.mutex('r').lock({ timeout: 5000 });
      expect(g.abandoned).toBe(true);
      g.unlock();
    }
  });
});
