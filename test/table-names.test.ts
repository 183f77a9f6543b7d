import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';

describe('LockTable names', () => {
  test('distinct names never share a slot, even when the table is nearly full', () => {
    const table = LockTable.create({ slots: 64 });
    const slots = new Set<number>();
    for (let i = 0; i < 64; i++) slots.add(table.mutex(`name-${i}`).slot);
    expect(slots.size).toBe(64);
    // Every name still resolves to its own slot.
    for (let i = 0; i < 64; i++) expect(table.stats(`name-${i}`)!.name).toBe(`name-${i}`);
  });

  test('a full table refuses a new name with ERR_LOCK_TABLE_FULL and keeps the old ones', () => {
    const table = LockTable.create({ slots: 4 });
    for (const n of ['a', 'b', 'c', 'd']) table.mutex(n);
    expect(() => table.mutex('e')).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TABLE_FULL' }));
    expect(table.mutex('c').slot).toBe(table.stats('c')!.slot);
  });

  test('a slot used by index is never given to a name, and a named slot refuses use by index', () => {
    const table = LockTable.create({ slots: 2 });
    table.mutex(0);
    const named = table.mutex('only-one-left');
    expect(named.slot).toBe(1);
    expect(() => table.mutex('another')).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TABLE_FULL' }));
    expect(() => table.mutex(1)).toThrow(expect.objectContaining({ code: 'ERR_LOCK_SLOT_IN_USE' }));
  });

  test('threads that add the same names at once agree on every slot', async () => {
    const table = LockTable.create({ slots: 512 });
    const gate = control(2);
    const names = Array.from({ length: 200 }, (_, i) => `shared-${i}`);
    const ws = Array.from({ length: 4 }, () => start('names', { table: table.buffer, names, gate: gate.buffer }));
    await until(gate, 0, 4);
    signalWord(gate, 1);
    const seen = await Promise.all(ws.map((w) => result<{ slots: number[] }>(w)));
    const mine = names.map((n) => table.mutex(n).slot);
    for (const { slots } of seen) expect(slots).toEqual(mine);
    expect(new Set(mine).size).toBe(200);
  });

  test('stats() lists every slot in use; stats(name) of an unused name is undefined', () => {
    const table = LockTable.create({ slots: 8 });
    table.mutex('x').lockSync().unlock();
    table.mutex(3);
    expect(table.stats('never-used')).toBeUndefined();
    const all = table.stats();
    expect(all.map((s) => s.name ?? s.slot).sort()).toEqual([3, 'x']);
    expect(all.find((s) => s.name === 'x')).toMatchObject({ kind: 'mutex', acquisitions: 1, owner: 0 });
  });
});
