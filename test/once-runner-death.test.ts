import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, exited, result, signalWord, start, until } from './helpers.js';

describe('Once: a runner that dies inside its initialiser', () => {
  test.each([['terminate', 'sync'], ['terminate', 'async'], ['exit', 'sync']] as const)(
    'dies by %s (%s initialiser): the cell goes back to not run and a waiter runs it, told abandoned',
    async (death, how) => {
      const table = LockTable.create({ slots: 8 });
      const ctl = control(8);
      const o = table.once('cell');
      const runner = start('once-roles', {
        role: 'runner', table: table.buffer, name: 'cell', how, then: death === 'exit' ? 'exit' : 'hang', control: ctl.buffer,
      });
      const gone = exited(runner);
      await until(ctl, 0, 1);
      expect(table.stats('cell')!.holders).toEqual([Atomics.load(ctl, 2)]);
      const waiter = start('once-roles', { role: 'waiter', table: table.buffer, name: 'cell', how: 'sync', timeout: 10_000, control: ctl.buffer });
      const waited = result(waiter);
      let told: boolean | undefined;
      const mine = o.run(({ abandoned }) => { told = abandoned; }, { timeout: 10_000 });
      await until(ctl, 4, 1);
      const t0 = performance.now();
      if (death === 'terminate') await runner.terminate();
      else signalWord(ctl, 1); // its initialiser calls process.exit()
      await gone;
      const [theirs, ours] = await Promise.all([waited, mine]);
      expect(performance.now() - t0).toBeLessThan(1000);
      expect([theirs.ran, ours].filter(Boolean).length).toBe(1);
      if (ours) expect(told).toBe(true);
      else expect(Atomics.load(ctl, 7)).toBe(1);
      expect(o.done).toBe(true);
      expect(table.stats('cell')!.holders).toEqual([]);
    });

  test('the next runners are told abandoned until one succeeds, then never again', async () => {
    const table = LockTable.create({ slots: 8 });
    const ctl = control(8);
    const o = table.once('cell');
    const runner = start('once-roles', { role: 'runner', table: table.buffer, name: 'cell', how: 'sync', then: 'hang', control: ctl.buffer });
    await until(ctl, 0, 1);
    await runner.terminate();
    const told: boolean[] = [];
    expect(() => o.runSync(({ abandoned }) => { told.push(abandoned); throw new Error('half-way'); })).toThrow('half-way');
    expect(o.runSync(({ abandoned }) => { told.push(abandoned); })).toBe(true);
    expect(told).toEqual([true, true]);
    expect(o.runSync(() => { told.push(false); })).toBe(false);
    expect(told).toEqual([true, true]);
  });
});
