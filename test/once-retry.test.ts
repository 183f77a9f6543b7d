import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';

describe('Once: an initialiser that fails lets the next caller run', () => {
  test('runSync() rethrows the initialiser\'s own error, leaves the cell not run, and the next call runs its own', () => {
    const o = LockTable.create({ slots: 8 }).once('cfg');
    const boom = new Error('boom');
    expect(() => o.runSync(() => { throw boom; })).toThrow(boom);
    expect(o.done).toBe(false);
    let runs = 0;
    expect(o.runSync(() => { runs++; })).toBe(true);
    expect(o.runSync(() => { runs++; })).toBe(false);
    expect(runs).toBe(1);
    expect(o.done).toBe(true);
  });

  test('run() rejects with the initialiser\'s error (sync throw or rejection), then a retry runs', async () => {
    const o = LockTable.create({ slots: 8 }).once('cfg');
    const boom = new Error('boom');
    let p: Promise<boolean> | undefined;
    expect(() => { p = o.run(() => { throw boom; }); }).not.toThrow();
    await expect(p).rejects.toBe(boom);
    await expect(o.run(async () => { await null; throw boom; })).rejects.toBe(boom);
    expect(o.done).toBe(false);
    await expect(o.run(async () => { await null; })).resolves.toBe(true);
    await expect(o.run(() => { throw new Error('never runs'); })).resolves.toBe(false);
  });

  test.each(['sync', 'async'] as const)('a %s runner in a worker fails while others wait: its caller gets the error, one waiter runs, the other finds it done', async (how) => {
    const table = LockTable.create({ slots: 8 });
    const ctl = control(8);
    const o = table.once('cell');
    const runner = start('once-roles', { role: 'runner', table: table.buffer, name: 'cell', how, then: 'throw', control: ctl.buffer });
    await until(ctl, 0, 1);
    const waiter = start('once-roles', { role: 'waiter', table: table.buffer, name: 'cell', how: 'sync', control: ctl.buffer });
    const waited = result(waiter);
    let mineRan = 0;
    const mine = o.run(() => { mineRan++; });
    await until(ctl, 4, 1);
    expect(o.done).toBe(false);
    signalWord(ctl, 1); // the runner's initialiser throws
    expect(await result(runner)).toMatchObject({ ok: false, message: 'initialiser failed' });
    const [theirs, ours] = await Promise.all([waited, mine]);
    // Exactly one of the two waiters ran its initialiser after the failure.
    expect(Atomics.load(ctl, 6) + mineRan).toBe(2); // the failed run, then one more
    expect([theirs.ran, ours].filter(Boolean).length).toBe(1);
    expect(theirs).toMatchObject({ ok: true });
    expect(Atomics.load(ctl, 7)).toBe(0); // a failure is not an abandonment
    expect(o.done).toBe(true);
    expect(table.stats('cell')!.acquisitions).toBe(2);
  });
});
