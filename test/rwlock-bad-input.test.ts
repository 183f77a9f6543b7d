import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { untouched } from './helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });


describe('RWLock: bad input is refused with a stable code before the table is touched', () => {
  const table = LockTable.create({ slots: 16 });
  const rw = table.rwlock('ok');
  const badOptions: Array<[string, unknown, string]> = [
    ['a NaN timeout', { timeout: NaN }, 'ERR_OUT_OF_RANGE'],
    ['a negative timeout', { timeout: -1 }, 'ERR_OUT_OF_RANGE'],
    ['a string timeout', { timeout: '10' }, 'ERR_INVALID_ARG_TYPE'],
    ['a signal that is not an AbortSignal', { signal: {} }, 'ERR_INVALID_ARG_TYPE'],
    ['options that are not an object', 5, 'ERR_INVALID_ARG_TYPE'],
    ['null options', null, 'ERR_INVALID_ARG_TYPE'],
  ];

  test.each(badOptions)('readLockSync / writeLockSync with %s throw', (_, options, expected) => {
    expect(untouched(table, () => rw.readLockSync(options as never))).toEqual(code(expected));
    expect(untouched(table, () => rw.writeLockSync(options as never))).toEqual(code(expected));
  });

  test.each(badOptions)('readLock / writeLock with %s reject (never throw) and touch nothing', async (_, options, expected) => {
    const before = new Uint8Array(table.buffer).slice();
    let reading: Promise<unknown> | undefined, writing: Promise<unknown> | undefined;
    expect(() => { reading = rw.readLock(options as never); writing = rw.writeLock(options as never); }).not.toThrow();
    await expect(reading).rejects.toMatchObject({ code: expected });
    await expect(writing).rejects.toMatchObject({ code: expected });
    expect(Buffer.compare(Buffer.from(before), Buffer.from(new Uint8Array(table.buffer).slice()))).toBe(0);
  });

  test('with*Lock(fn) refuse a callback that is not a function, the async ones by rejecting', async () => {
    expect(untouched(table, () => rw.withReadLockSync(5 as never))).toEqual(code('ERR_INVALID_ARG_TYPE'));
    expect(untouched(table, () => rw.withWriteLockSync('f' as never))).toEqual(code('ERR_INVALID_ARG_TYPE'));
    await expect(rw.withReadLock(null as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(rw.withWriteLock({} as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(rw.readers).toBe(0);
  });

  test('a slot that holds another kind refuses to be a rwlock, and a rwlock refuses to be a mutex', () => {
    table.mutex('a mutex');
    expect(() => table.rwlock('a mutex')).toThrow(code('ERR_LOCK_SLOT_IN_USE'));
    expect(() => table.mutex('ok')).toThrow(code('ERR_LOCK_SLOT_IN_USE'));
    expect(() => table.rwlock(-1)).toThrow(code('ERR_OUT_OF_RANGE'));
    expect(() => table.rwlock({} as never)).toThrow(code('ERR_INVALID_ARG_TYPE'));
  });
});
