import { describe, expect, test } from 'vitest';
import { LockTable, MutexGuard } from '../src/index.js';
import { control, result, start, until } from './helpers.js';

const ownerOf = (table: LockTable, name: string) => table.stats(name)!.owner;

async function waitersReach(table: LockTable, name: string, n: number): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (table.condition(name).waiters < n) {
    if (performance.now() > deadline) throw new Error(`${name}: waiters never reached ${n}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('Condition timed waits', () => {
  test('waitSync({ timeout }) throws ERR_LOCK_TIMEOUT only once it holds the mutex again, even if another thread held it past the deadline', async () => {
    const table = LockTable.create({ slots: 8 });
    const m = table.mutex('m'), cv = table.condition('cv');
    const ctl = control();
    const g = m.lockSync();
    const locker = start('condition-roles', { role: 'locker', table: table.buffer, control: ctl.buffer, hold: 300 });
    await until(ctl, 0, 1); // the locker is about to block on m; it gets m when this wait releases it
    const t0 = performance.now();
    let error: unknown;
    try { cv.waitSync(g, { timeout: 100 }); } catch (err) { error = err; }
    const ms = performance.now() - t0;
    expect(error).toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(Atomics.load(ctl, 2)).toBe(1); // the locker let go before this thread got m back
    expect(ms).toBeGreaterThanOrEqual(250);
    expect(ownerOf(table, 'm')).toBe(table.threadId);
    g.unlock(); // the same guard is still good
    expect(m.locked).toBe(false);
    expect(cv.waiters).toBe(0);
    expect(await result(locker)).toEqual({ ok: true });
  });

  test('wait({ timeout }) rejects with ERR_LOCK_TIMEOUT holding the mutex; timeout 0 times out at once', async () => {
    const table = LockTable.create({ slots: 8 });
    const m = table.mutex('m'), cv = table.condition('cv');
    const g = await m.lock();
    const t0 = performance.now();
    await expect(cv.wait(g, { timeout: 40 })).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(39);
    expect(ownerOf(table, 'm')).toBe(table.threadId);
    expect(() => cv.waitSync(g, { timeout: 0 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    expect(ownerOf(table, 'm')).toBe(table.threadId);
    g.unlock();
    expect(m.locked).toBe(false);
    expect(cv.waiters).toBe(0);
    expect(table.stats('cv')!.acquisitions).toBe(0); // timeouts are not wake-ups
  });

  test('a notify wakes a timed waiter before its deadline', async () => {
    const table = LockTable.create({ slots: 8 });
    const m = table.mutex('m'), cv = table.condition('cv');
    const ctl = control();
    const waiter = start('condition-roles', { role: 'waiter', table: table.buffer, control: ctl.buffer, how: 'sync', timeout: 5000 });
    await waitersReach(table, 'cv', 1);
    m.withLockSync(() => { Atomics.store(ctl, 5, 1); cv.notify(); });
    expect(await result(waiter)).toMatchObject({ ok: true, flag: 1, abandoned: false });
    expect(table.stats('cv')!.acquisitions).toBe(1);
  });
});

describe('Condition abort', () => {
  test('an abort while waiting rejects with AbortError holding the mutex, and leaves the other waiters asleep and wakeable', async () => {
    const table = LockTable.create({ slots: 8 });
    const m = table.mutex('m'), cv = table.condition('cv');
    const ctl = control();
    const other = start('condition-roles', { role: 'waiter', table: table.buffer, control: ctl.buffer, how: 'sync', timeout: 10_000 });
    await waitersReach(table, 'cv', 1);
    const g = await m.lock();
    const ac = new AbortController(), reason = new Error('stop');
    const pending = cv.wait(g, { signal: ac.signal });
    expect(cv.waiters).toBe(2); // committed synchronously
    setTimeout(() => ac.abort(reason), 20);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect(ownerOf(table, 'm')).toBe(table.threadId);
    expect(cv.waiters).toBe(1); // only the other waiter: the aborted one left nothing behind
    // The abort woke every sleeper on the word; the other one found no notify and slept again.
    Atomics.store(ctl, 5, 1);
    cv.notify();
    g.unlock();
    expect(await result(other)).toMatchObject({ ok: true, flag: 1 });
    expect(cv.waiters).toBe(0);
  });

  test('an already-aborted signal fails before the mutex is released', async () => {
    const table = LockTable.create({ slots: 8 });
    const m = table.mutex('m'), cv = table.condition('cv');
    const g = m.lockSync();
    const reason = new Error('no');
    const signal = AbortSignal.abort(reason);
    expect(() => cv.waitSync(g, { signal })).toThrow(expect.objectContaining({ name: 'AbortError', cause: reason }));
    await expect(cv.wait(g, { signal })).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect(ownerOf(table, 'm')).toBe(table.threadId);
    expect(cv.waiters).toBe(0);
    g.unlock();
  });
});

describe('Condition bad input', () => {
  test('bad guards, options and counts throw (sync) or reject (async) with stable codes, touching nothing', async () => {
    const table = LockTable.create({ slots: 8 });
    const m = table.mutex('m'), cv = table.condition('cv');
    for (const bad of [undefined, null, {}, m, 'guard']) {
      expect(() => cv.waitSync(bad as unknown as MutexGuard)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      await expect(cv.wait(bad as unknown as MutexGuard)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    }
    const g = m.lockSync();
    for (const [options, code] of [
      [{ timeout: -1 }, 'ERR_OUT_OF_RANGE'], [{ timeout: NaN }, 'ERR_OUT_OF_RANGE'], [{ timeout: '5' }, 'ERR_INVALID_ARG_TYPE'],
      [{ signal: 'x' }, 'ERR_INVALID_ARG_TYPE'], [5, 'ERR_INVALID_ARG_TYPE'],
    ] as const) {
      expect(() => cv.waitSync(g, options as never)).toThrow(expect.objectContaining({ code }));
      await expect(cv.wait(g, options as never)).rejects.toMatchObject({ code });
    }
    expect(ownerOf(table, 'm')).toBe(table.threadId); // never released
    for (const [n, code] of [[0, 'ERR_OUT_OF_RANGE'], [-1, 'ERR_OUT_OF_RANGE'], [1.5, 'ERR_OUT_OF_RANGE'], [NaN, 'ERR_OUT_OF_RANGE'], ['2', 'ERR_INVALID_ARG_TYPE']] as const) {
      expect(() => cv.notify(n as never)).toThrow(expect.objectContaining({ code }));
    }
    g.unlock();
    // A spent guard: nothing to release, so nothing waits.
    expect(() => cv.waitSync(g)).toThrow(expect.objectContaining({ code: 'ERR_LOCK_NOT_LOCKED' }));
    await expect(cv.wait(g)).rejects.toMatchObject({ code: 'ERR_LOCK_NOT_LOCKED' });
    expect(cv.waiters).toBe(0);
    expect(m.locked).toBe(false);
    // A name used as a condition cannot be reached as a mutex, and back.
    expect(() => table.mutex('cv')).toThrow(expect.objectContaining({ code: 'ERR_LOCK_SLOT_IN_USE' }));
    expect(() => table.condition('m')).toThrow(expect.objectContaining({ code: 'ERR_LOCK_SLOT_IN_USE' }));
  });
});
