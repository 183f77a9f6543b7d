import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { untouched } from './helpers.js';


const code = (c: string) => expect.objectContaining({ code: c });

describe('bad input is refused with a stable code before the table is touched', () => {
  const table = LockTable.create({ slots: 16 });
  const m = table.mutex('ok');

  test.each([
    ['a number-like string is fine but an object is not', () => table.mutex({} as never), 'ERR_INVALID_ARG_TYPE'],
    ['a symbol name', () => table.mutex(Symbol('x') as never), 'ERR_INVALID_ARG_TYPE'],
    ['null', () => table.mutex(null as never), 'ERR_INVALID_ARG_TYPE'],
    ['a name over 128 UTF-8 bytes', () => table.mutex('x'.repeat(129)), 'ERR_OUT_OF_RANGE'],
    ['a name of 43 three-byte characters (129 bytes)', () => table.mutex('€'.repeat(43)), 'ERR_OUT_OF_RANGE'],
    ['a negative index', () => table.mutex(-1), 'ERR_OUT_OF_RANGE'],
    ['an index past the last slot', () => table.mutex(16), 'ERR_OUT_OF_RANGE'],
    ['a fractional index', () => table.mutex(1.5), 'ERR_OUT_OF_RANGE'],
    ['a NaN index', () => table.mutex(NaN), 'ERR_OUT_OF_RANGE'],
    ['a NaN timeout', () => m.lockSync({ timeout: NaN }), 'ERR_OUT_OF_RANGE'],
    ['a negative timeout', () => m.lockSync({ timeout: -1 }), 'ERR_OUT_OF_RANGE'],
    ['a string timeout', () => m.lockSync({ timeout: '10' as never }), 'ERR_INVALID_ARG_TYPE'],
    ['a signal that is not an AbortSignal', () => m.lockSync({ signal: {} as never }), 'ERR_INVALID_ARG_TYPE'],
    ['options that are not an object', () => m.lockSync(5 as never), 'ERR_INVALID_ARG_TYPE'],
  ])('%s', (_, fn, expected) => {
    expect(untouched(table, fn)).toEqual(code(expected));
  });

  test('lock() rejects (never throws) on bad options, and touches nothing', async () => {
    const before = new Uint8Array(table.buffer).slice();
    let promise: Promise<unknown> | undefined;
    expect(() => { promise = m.lock({ timeout: -5 }); }).not.toThrow();
    await expect(promise).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(m.lock({ signal: 'x' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(Buffer.compare(Buffer.from(before), Buffer.from(new Uint8Array(table.buffer).slice()))).toBe(0);
  });

  test('create() refuses bad sizes', () => {
    expect(() => LockTable.create({ slots: 0 })).toThrow(code('ERR_OUT_OF_RANGE'));
    expect(() => LockTable.create({ slots: 2.5 })).toThrow(code('ERR_OUT_OF_RANGE'));
    expect(() => LockTable.create({ threads: 4096 })).toThrow(code('ERR_OUT_OF_RANGE'));
    expect(() => LockTable.create({ slots: '8' as never })).toThrow(code('ERR_INVALID_ARG_TYPE'));
    expect(() => LockTable.create(7 as never)).toThrow(code('ERR_INVALID_ARG_TYPE'));
  });

  test('the empty string and a 128-byte name are valid names', () => {
    table.mutex('').lockSync().unlock();
    table.mutex('y'.repeat(128)).lockSync().unlock();
    expect(table.stats('')!.acquisitions).toBe(1);
  });
});

describe('LockTable.attach() validates the buffer', () => {
  test('a buffer that is not a SharedArrayBuffer', () => {
    expect(() => LockTable.attach(new ArrayBuffer(1024) as never)).toThrow(code('ERR_INVALID_ARG_TYPE'));
    expect(() => LockTable.attach(null as never)).toThrow(code('ERR_INVALID_ARG_TYPE'));
  });

  test('a foreign buffer (wrong magic), a newer layout, a truncated or padded table', () => {
    expect(() => LockTable.attach(new SharedArrayBuffer(4096))).toThrow(code('ERR_LOCK_TABLE_INVALID'));
    expect(() => LockTable.attach(new SharedArrayBuffer(8))).toThrow(code('ERR_LOCK_TABLE_INVALID'));
    // Issue 17 item 10: a length that is not a multiple of 4 was an uncoded RangeError from the Int32Array view.
    expect(() => LockTable.attach(new SharedArrayBuffer(1023))).toThrow(code('ERR_LOCK_TABLE_INVALID'));
    const good = LockTable.create({ slots: 4 }).buffer;
    const copy = (bytes: number, edit?: (w: Int32Array) => void) => {
      const b = new SharedArrayBuffer(bytes);
      new Uint8Array(b).set(new Uint8Array(good).subarray(0, Math.min(bytes, good.byteLength)));
      edit?.(new Int32Array(b));
      return b;
    };
    expect(() => LockTable.attach(copy(good.byteLength, (w) => { w[1] = 99; }))).toThrow(code('ERR_LOCK_TABLE_INVALID'));
    expect(() => LockTable.attach(copy(good.byteLength - 64))).toThrow(code('ERR_LOCK_TABLE_INVALID'));
    expect(() => LockTable.attach(copy(good.byteLength + 64))).toThrow(code('ERR_LOCK_TABLE_INVALID'));
    expect(() => LockTable.attach(copy(good.byteLength, (w) => { w[2] = 1 << 30; }))).toThrow(code('ERR_LOCK_TABLE_INVALID'));
  });

  test('attaching the same table twice in a thread gives the same object', () => {
    const t = LockTable.create({ slots: 4 });
    expect(LockTable.attach(t.buffer)).toBe(t);
  });
});
