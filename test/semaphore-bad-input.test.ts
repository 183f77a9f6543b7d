import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { untouched } from './helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });


describe('Semaphore refuses bad input with a stable code before touching the table', () => {
  const table = LockTable.create({ slots: 16 });
  const s = table.semaphore('ok', 3);

  test.each([
    ['n = 0', () => s.acquireSync(0), 'ERR_OUT_OF_RANGE'],
    ['a negative n', () => s.acquireSync(-1), 'ERR_OUT_OF_RANGE'],
    ['a fractional n', () => s.acquireSync(1.5), 'ERR_OUT_OF_RANGE'],
    ['n = NaN', () => s.acquireSync(NaN), 'ERR_OUT_OF_RANGE'],
    ['n = Infinity', () => s.acquireSync(Infinity), 'ERR_OUT_OF_RANGE'],
    ['n past the permits (it could never succeed)', () => s.acquireSync(4), 'ERR_OUT_OF_RANGE'],
    ['a string n', () => s.acquireSync('1' as never), 'ERR_INVALID_ARG_TYPE'],
    ['a null n', () => s.acquireSync(null as never), 'ERR_INVALID_ARG_TYPE'],
    ['tryAcquire(0)', () => s.tryAcquire(0), 'ERR_OUT_OF_RANGE'],
    ['tryAcquire(4)', () => s.tryAcquire(4), 'ERR_OUT_OF_RANGE'],
    ['release(0)', () => s.release(0), 'ERR_OUT_OF_RANGE'],
    ['release(2.5)', () => s.release(2.5), 'ERR_OUT_OF_RANGE'],
    ['release(4)', () => s.release(4), 'ERR_OUT_OF_RANGE'],
    ['a NaN timeout', () => s.acquireSync(1, { timeout: NaN }), 'ERR_OUT_OF_RANGE'],
    ['a negative timeout', () => s.acquireSync(1, { timeout: -1 }), 'ERR_OUT_OF_RANGE'],
    ['a string timeout', () => s.acquireSync(1, { timeout: '10' as never }), 'ERR_INVALID_ARG_TYPE'],
    ['a signal that is not an AbortSignal', () => s.acquireSync(1, { signal: {} as never }), 'ERR_INVALID_ARG_TYPE'],
    ['options that are not an object', () => s.acquireSync(1, 5 as never), 'ERR_INVALID_ARG_TYPE'],
    ['0 permits', () => table.semaphore('p0', 0), 'ERR_OUT_OF_RANGE'],
    ['2^30 + 1 permits', () => table.semaphore('pbig', 2 ** 30 + 1), 'ERR_OUT_OF_RANGE'],
    ['fractional permits', () => table.semaphore('pfrac', 1.5), 'ERR_OUT_OF_RANGE'],
    ['string permits', () => table.semaphore('pstr', '3' as never), 'ERR_INVALID_ARG_TYPE'],
  ])('%s', (_, fn, expected) => {
    expect(untouched(table, fn)).toEqual(code(expected));
  });

  test('acquire() rejects (never throws) on bad n or options, and touches nothing', async () => {
    const before = new Uint8Array(table.buffer).slice();
    let promise: Promise<unknown> | undefined;
    expect(() => { promise = s.acquire(0); }).not.toThrow();
    await expect(promise).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(s.acquire(4)).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(s.acquire('2' as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(s.acquire(1, { timeout: -5 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    expect(Buffer.compare(Buffer.from(before), Buffer.from(new Uint8Array(table.buffer).slice()))).toBe(0);
  });

  test('a name keeps the permits it was made with: another count is ERR_LOCK_SLOT_IN_USE', () => {
    table.semaphore('fixed', 3);
    expect(() => table.semaphore('fixed', 4)).toThrow(code('ERR_LOCK_SLOT_IN_USE'));
    expect(table.semaphore('fixed', 3).permits).toBe(3);
    expect(() => table.mutex('fixed')).toThrow(code('ERR_LOCK_SLOT_IN_USE'));
  });

  test('2^30 permits work end to end, all taken at once', () => {
    const big = table.semaphore('max', 2 ** 30);
    expect(big.available).toBe(2 ** 30);
    const g = big.acquireSync(2 ** 30);
    expect(big.available).toBe(0);
    expect(big.tryAcquire(1)).toBeNull();
    g.release();
    const h = big.acquireSync(2 ** 30 - 1);
    expect(big.tryAcquire(1)?.permits).toBe(1);
    h.release();
    big.release(1);
    expect(big.available).toBe(2 ** 30);
  });
});
