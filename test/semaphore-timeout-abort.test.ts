import { afterEach, describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { findRecord } from '../src/atomics/holdings.js';
import { control, result, signalWord, start, until } from './helpers.js';

const stops: Array<() => void> = [];
afterEach(() => stops.splice(0).forEach((stop) => stop()));

/** A worker that holds `n` permits of `name` until the returned function is called. */
async function heldByWorker(table: LockTable, name: string, permits: number, n: number) {
  const ctl = control();
  const worker = start('semaphore-hold', { table: table.buffer, name, permits, n, then: 'release', control: ctl.buffer });
  await until(ctl, 0, 1);
  const release = () => signalWord(ctl, 1);
  stops.push(release);
  return { release, worker, done: result(worker) };
}

/** Both words of the semaphore, and this thread's record of it. */
function trace(table: LockTable, slot: number) {
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  return { state: Atomics.load(core.words, slotBase(slot)), bell: Atomics.load(core.words, slotBase(slot) + 1), record: findRecord(core, slot) };
}

describe('Semaphore timeouts', () => {
  test('acquireSync({ timeout }) throws ERR_LOCK_TIMEOUT while too few permits are free, and leaves no trace', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('t', 3);
    const { release } = await heldByWorker(table, 't', 3, 2);
    const before = trace(table, s.slot);
    const t0 = performance.now();
    expect(() => s.acquireSync(2, { timeout: 50 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(49);
    // It waited past 1 ms, so it was the heir: no heir bits, no record, the count as it was.
    expect(trace(table, s.slot)).toEqual({ ...before, state: before.state & 0x7fffffff });
    release();
  });

  test('acquire({ timeout }) rejects with ERR_LOCK_TIMEOUT, and the permits are usable after', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('t', 2);
    const { release, done } = await heldByWorker(table, 't', 2, 2);
    await expect(s.acquire(1, { timeout: 30 })).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(trace(table, s.slot).bell).toBe(0);
    release();
    await done;
    const g = await s.acquire(2, { timeout: 1000 });
    g.release();
  });

  test('timeout 0 tries once: ERR_LOCK_TIMEOUT at once when too few are free, the permits when enough are', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('t', 3);
    const { release } = await heldByWorker(table, 't', 3, 2);
    const t0 = performance.now();
    expect(() => s.acquireSync(2, { timeout: 0 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    await expect(s.acquire(2, { timeout: 0 })).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(performance.now() - t0).toBeLessThan(50);
    s.acquireSync(1, { timeout: 0 }).release();
    release();
  });

  test('tryAcquire() returns null while too few are free and a guard once they are', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('t', 3);
    const { release, done } = await heldByWorker(table, 't', 3, 2);
    expect(s.tryAcquire(2)).toBeNull();
    expect(trace(table, s.slot).record).toBe(0); // nothing left behind by the failed try
    const one = s.tryAcquire(1);
    expect(one).not.toBeNull();
    expect(s.tryAcquire(1)).toBeNull();
    one!.release();
    release();
    await done;
    const all = s.tryAcquire(3);
    expect(all?.permits).toBe(3);
    all!.release();
  });
});

describe('Semaphore abort', () => {
  test('an already-aborted signal fails before the semaphore is touched', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('a', 2);
    const before = trace(table, s.slot);
    const reason = new Error('stop');
    const signal = AbortSignal.abort(reason);
    expect(() => s.acquireSync(1, { signal })).toThrow(expect.objectContaining({ name: 'AbortError', cause: reason }));
    await expect(s.acquire(1, { signal })).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect(trace(table, s.slot)).toEqual(before);
  });

  test('abort while waiting rejects at once, leaves no heir or record behind, and swallows no wake-up', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('a', 2);
    const { release } = await heldByWorker(table, 'a', 2, 2);
    const ac = new AbortController();
    const pending = s.acquire(2, { signal: ac.signal });
    // Wait long enough to become the heir (> 1 ms), then abort.
    const { core, slotBase } = LockTable.unsafeExposeInternals(table);
    while ((Atomics.load(core.words, slotBase(s.slot) + 1) & 0xfff) !== table.threadId) await new Promise((r) => setTimeout(r, 1));
    const t0 = performance.now();
    ac.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(performance.now() - t0).toBeLessThan(1000);
    const after = trace(table, s.slot);
    expect(after.bell).toBe(0);
    expect(after.record).toBe(0);
    expect(after.state & 0x7fffffff).toBe(2);
    // A blocking waiter in another worker must still be served by the one release.
    const waiter = start('semaphore-acquire', { table: table.buffer, name: 'a', permits: 2, n: 2, how: 'sync', timeout: 10_000 });
    const served = result(waiter);
    await new Promise((r) => setTimeout(r, 20));
    release();
    await expect(served).resolves.toMatchObject({ ok: true, abandoned: false });
  });
});
