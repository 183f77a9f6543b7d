import { afterEach, describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, signalWord, start, until } from './helpers.js';

const stops: Array<() => void> = [];
afterEach(() => stops.splice(0).forEach((stop) => stop()));

describe('Mutex ownership', () => {
  test('unlock() of a mutex another thread holds throws ERR_LOCK_NOT_OWNER and changes nothing', async () => {
    const table = LockTable.create({ slots: 8 });
    const ctl = control();
    start('hold', { table: table.buffer, name: 'o', then: 'release', control: ctl.buffer });
    stops.push(() => signalWord(ctl, 1));
    await until(ctl, 0, 1);
    const m = table.mutex('o');
    expect(() => m.unlock()).toThrow(expect.objectContaining({ code: 'ERR_LOCK_NOT_OWNER' }));
    expect(m.locked).toBe(true);
    expect(table.stats('o')!.owner).toBe(Atomics.load(ctl, 2));
  });

  test('unlock() of a free mutex throws ERR_LOCK_NOT_LOCKED', () => {
    const m = LockTable.create({ slots: 8 }).mutex('free');
    expect(() => m.unlock()).toThrow(expect.objectContaining({ code: 'ERR_LOCK_NOT_LOCKED' }));
  });

  test('a second unlock() through the same guard throws ERR_LOCK_NOT_LOCKED, even after a re-lock', () => {
    const m = LockTable.create({ slots: 8 }).mutex('g');
    const first = m.lockSync();
    first.unlock();
    const second = m.lockSync();
    expect(() => first.unlock()).toThrow(expect.objectContaining({ code: 'ERR_LOCK_NOT_LOCKED' }));
    expect(m.locked).toBe(true);
    second.unlock();
  });

  test('lockSync() and lock() by the holding thread fail at once with ERR_LOCK_DEADLOCK', async () => {
    const m = LockTable.create({ slots: 8 }).mutex('d');
    const guard = m.lockSync();
    expect(() => m.lockSync()).toThrow(expect.objectContaining({ code: 'ERR_LOCK_DEADLOCK' }));
    await expect(m.lock()).rejects.toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    guard.unlock();
  });

  test('a second lock() while this thread already waits for the mutex fails with ERR_LOCK_DEADLOCK', async () => {
    const table = LockTable.create({ slots: 8 });
    const ctl = control();
    start('hold', { table: table.buffer, name: 'w', then: 'release', control: ctl.buffer });
    await until(ctl, 0, 1);
    const m = table.mutex('w');
    const first = m.lock();
    await expect(m.lock()).rejects.toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    signalWord(ctl, 1);
    (await first).unlock();
  });

  test('using: a guard declared with `using` unlocks at the end of its scope', () => {
    const m = LockTable.create({ slots: 8 }).mutex('u');
    {
      const guard = m.lockSync();
      guard[Symbol.dispose]();
    }
    expect(m.locked).toBe(false);
  });

  test('withLock and withLockSync release when the callback throws', async () => {
    const m = LockTable.create({ slots: 8 }).mutex('c');
    expect(() => m.withLockSync(() => { throw new Error('boom'); })).toThrow('boom');
    expect(m.locked).toBe(false);
    await expect(m.withLock(async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    expect(m.locked).toBe(false);
    expect(await m.withLock(() => 42)).toBe(42);
    expect(m.withLockSync(() => 'x')).toBe('x');
  });
});
