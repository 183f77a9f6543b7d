import { afterEach, describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';

const stops: Array<() => void> = [];
afterEach(() => stops.splice(0).forEach((stop) => stop()));

/** A worker running the cell's initialiser until the returned function is called. */
async function runningInWorker(table: LockTable, name: string, how: 'sync' | 'async' = 'sync') {
  const ctl = control(8);
  const worker = start('once-roles', { role: 'runner', table: table.buffer, name, how, then: 'return', control: ctl.buffer });
  const done = result(worker);
  await until(ctl, 0, 1);
  const finish = () => signalWord(ctl, 1);
  stops.push(finish);
  return { finish, done, ctl, tid: Atomics.load(ctl, 2) };
}

const stateOf = (table: LockTable, name: string) => {
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  return Atomics.load(core.words, slotBase(table.once(name).slot));
};

describe('Once: callers wait for the runner', () => {
  test.each(['sync', 'async'] as const)('while a worker runs a %s initialiser, runSync() in a worker and run() here wait, then return false', async (how) => {
    const table = LockTable.create({ slots: 8 });
    const o = table.once('cell');
    const { finish, done, ctl, tid } = await runningInWorker(table, 'cell', how);
    expect(table.stats('cell')!.holders).toEqual([tid]);
    const waiterCtl = control(8);
    const waiter = start('once-roles', { role: 'waiter', table: table.buffer, name: 'cell', how: 'sync', control: waiterCtl.buffer });
    const waited = result(waiter);
    let settled = false;
    const mine = o.run(() => { throw new Error('must not run'); }).finally(() => { settled = true; });
    await until(waiterCtl, 4, 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(Atomics.load(waiterCtl, 5)).toBe(0); // still waiting
    expect(settled).toBe(false);
    expect(o.done).toBe(false);
    finish();
    expect(await done).toEqual({ ok: true, ran: true });
    expect(await waited).toEqual({ ok: true, ran: false });
    expect(await mine).toBe(false);
    expect(Atomics.load(ctl, 6) + Atomics.load(waiterCtl, 6)).toBe(1);
    expect(o.done).toBe(true);
    expect(table.stats('cell')!.contended).toBeGreaterThanOrEqual(1);
  });

  test('timeouts end the wait (never the run): ERR_LOCK_TIMEOUT from runSync() and run()', async () => {
    const table = LockTable.create({ slots: 8 });
    const o = table.once('cell');
    const { finish, done } = await runningInWorker(table, 'cell');
    const t0 = performance.now();
    expect(() => o.runSync(() => {}, { timeout: 30 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(29);
    await expect(o.run(() => {}, { timeout: 30 })).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(() => o.runSync(() => {}, { timeout: 0 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    finish();
    expect(await done).toEqual({ ok: true, ran: true });
    expect(o.runSync(() => {}, { timeout: 0 })).toBe(false); // done: no wait at all
  });

  test('abort while waiting rejects at once; an already-aborted signal fails before the cell is touched', async () => {
    const table = LockTable.create({ slots: 8 });
    const o = table.once('cell');
    const reason = new Error('stop');
    const before = stateOf(table, 'cell');
    expect(() => o.runSync(() => {}, { signal: AbortSignal.abort(reason) })).toThrow(expect.objectContaining({ name: 'AbortError', cause: reason }));
    await expect(o.run(() => {}, { signal: AbortSignal.abort(reason) })).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect(stateOf(table, 'cell')).toBe(before);
    const { finish, done } = await runningInWorker(table, 'cell');
    const ac = new AbortController();
    const pending = o.run(() => {}, { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 10));
    const t0 = performance.now();
    ac.abort(reason);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect(performance.now() - t0).toBeLessThan(1000);
    // A blocked waiter in another worker still wakes when the runner finishes.
    const waiterCtl = control(8);
    const waiter = start('once-roles', { role: 'waiter', table: table.buffer, name: 'cell', how: 'sync', control: waiterCtl.buffer });
    const waited = result(waiter);
    await until(waiterCtl, 4, 1);
    finish();
    await done;
    expect(await waited).toEqual({ ok: true, ran: false });
  });

  test('bad input is refused before the cell is touched; runSync() from inside its own initialiser is ERR_LOCK_DEADLOCK', async () => {
    const table = LockTable.create({ slots: 8 });
    const o = table.once('cell');
    const before = stateOf(table, 'cell');
    expect(() => o.runSync(5 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    await expect(o.run('x' as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(() => o.runSync(() => {}, { timeout: -1 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    await expect(o.run(() => {}, 7 as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(stateOf(table, 'cell')).toBe(before);
    expect(() => o.runSync(() => o.runSync(() => {}))).toThrow(expect.objectContaining({ code: 'ERR_LOCK_DEADLOCK' }));
    expect(o.done).toBe(false); // the outer initialiser threw: not run
    // A pending run() of this thread: a blocking runSync() here could never see it end.
    let finish!: () => void;
    const pending = o.run(() => new Promise<void>((r) => { finish = r; }));
    expect(() => o.runSync(() => {})).toThrow(expect.objectContaining({ code: 'ERR_LOCK_DEADLOCK' }));
    finish();
    await expect(pending).resolves.toBe(true);
  });

  test('a runner whose initialiser waits for a mutex held by a thread blocked on the cell gets ERR_LOCK_DEADLOCK, and that thread runs it', async () => {
    const table = LockTable.create({ slots: 8 });
    const o = table.once('cell');
    const m = table.mutex('m');
    const ctl = control(8);
    let waiterDone: Promise<Record<string, unknown>> | undefined;
    const err = (() => {
      try {
        o.runSync(() => {
          const worker = start('once-roles', { role: 'mutex-then-wait', table: table.buffer, name: 'cell', how: 'sync', mutex: 'm', control: ctl.buffer });
          waiterDone = result(worker);
          // Block (this thread is the runner) until the worker holds the mutex and is blocked on the cell.
          while (Atomics.load(ctl, 4) === 0 || !table.stats('m')!.holders.length) Atomics.wait(ctl, 4, 0, 5);
          Atomics.wait(ctl, 7, 0, 50); // from its wait record to its Atomics.wait is a few instructions
          m.lockSync({ timeout: 10_000 });
        });
        return undefined;
      } catch (e) {
        return e;
      }
    })();
    expect(err).toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    expect(await waiterDone).toEqual({ ok: true, ran: true });
    expect(o.done).toBe(true);
  });
});
