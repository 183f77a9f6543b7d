import { expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { holdingOf } from '../src/atomics/holdings.js';
import { control, result, signalWord, start, until } from './helpers.js';
import { words } from './fixtures/rwlock-helpers.js';

interface Churn { reads: number; writes: number; torn: number; stuck: number; timeouts: number; aborts: number; downgrades: number; upgrades: number; other: string[]; held: number }

test('RWLock under churn: every acquire form, short timeouts and aborts at random; nothing torn, stuck or left behind', async () => {
  const table = LockTable.create({ slots: 8, threads: 16 });
  const record = new SharedArrayBuffer(16);
  const ctl = control(4);
  const n = 4;
  const ws = Array.from({ length: n }, (_, i) => start('rwlock-churn', { table: table.buffer, record, control: ctl.buffer, ops: 5000, seed: 0x2545f491 * (i + 1) }));
  const outcomes = ws.map((w) => result<Churn>(w));
  await until(ctl, 0, n);
  signalWord(ctl, 2);
  const all = await Promise.all(outcomes);
  const sum = (k: keyof Omit<Churn, 'other'>) => all.reduce((s, o) => s + o[k], 0);
  expect(all.flatMap((o) => o.other)).toEqual([]);
  expect(sum('torn')).toBe(0);
  expect(sum('stuck')).toBe(0);
  expect(sum('held')).toBe(0);
  // It did churn: every path was taken.
  expect(sum('timeouts')).toBeGreaterThan(0);
  expect(sum('aborts')).toBeGreaterThan(0);
  expect(sum('downgrades')).toBeGreaterThan(0);
  expect(sum('reads')).toBeGreaterThan(1000);
  expect(new Int32Array(record)[0]).toBe(sum('writes'));
  // Nothing left behind while every thread is still alive (no recovery has run).
  expect(words(table, 'churn')).toMatchObject({ writer: 0, readers: 0, queued: 0, heir: 0 });
  const slot = table.rwlock('churn').slot, { core } = LockTable.unsafeExposeInternals(table);
  for (let tid = 1; tid <= 16; tid++) expect(holdingOf(core, tid, slot)).toBe(0);
  signalWord(ctl, 1);
});
