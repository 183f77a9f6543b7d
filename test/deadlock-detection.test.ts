import { expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';

interface Outcome { index: number; ok: boolean; code?: string; message?: string; ms: number }

async function cycle(names: string[]): Promise<Outcome[]> {
  const table = LockTable.create({ slots: 16 });
  const ctl = control();
  const workers = names.map((first, index) => start('deadlock', {
    table: table.buffer, role: 'cycle', first, second: names[(index + 1) % names.length], control: ctl.buffer, index,
  }));
  const outcomes = workers.map((w) => result<Outcome>(w));
  await until(ctl, 0, names.length); // everyone holds its first lock
  signalWord(ctl, 1); // and now everyone asks for the next one: a cycle
  return Promise.all(outcomes);
}

test.each([
  ['2-thread', ['A', 'B']],
  ['3-thread', ['A', 'B', 'C']],
])('a %s cycle of lockSync() waits fails promptly in one thread with ERR_LOCK_DEADLOCK naming the cycle', async (_, names) => {
  const outcomes = await cycle(names);
  const failed = outcomes.filter((o) => !o.ok);
  expect(failed.length).toBeGreaterThanOrEqual(1);
  for (const f of failed) {
    expect(f.code).toBe('ERR_LOCK_DEADLOCK');
    expect(f.ms).toBeLessThan(1000);
    for (const n of names) expect(f.message).toContain(`"${n}"`);
  }
  // The victim released its first lock: everyone else got through.
  expect(outcomes.filter((o) => o.ok).length).toBe(names.length - failed.length);
});

test('no false deadlock under heavy contention on lock pairs taken in one global order', async () => {
  const table = LockTable.create({ slots: 16 });
  const ctl = control();
  const names = ['p0', 'p1', 'p2', 'p3'];
  const workers = Array.from({ length: 4 }, (_, index) => start('deadlock', {
    table: table.buffer, role: 'ordered', names, rounds: 100_000, control: ctl.buffer, index,
  }));
  await until(ctl, 0, 4);
  signalWord(ctl, 1);
  const outcomes = await Promise.all(workers.map((w) => result<{ errors: number }>(w)));
  expect(outcomes.map((o) => o.errors)).toEqual([0, 0, 0, 0]);
  const contended = names.reduce((n, name) => n + table.stats(name)!.contended, 0);
  expect(contended).toBeGreaterThan(0); // the locks really were fought over
});
