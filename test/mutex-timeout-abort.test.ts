import { afterEach, describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';
import { HEIR_MASK, OWNER_MASK } from '../src/atomics/mutex-word.js';

const stops: Array<() => void> = [];
afterEach(() => stops.splice(0).forEach((stop) => stop()));

/** A worker that holds `name` until the returned function is called. */
async function heldByWorker(table: LockTable, name: string) {
  const ctl = control();
  const worker = start('hold', { table: table.buffer, name, then: 'release', control: ctl.buffer });
  await until(ctl, 0, 1);
  const release = () => signalWord(ctl, 1);
  stops.push(release);
  return { release, worker, tid: Atomics.load(ctl, 2) };
}

function stateOf(table: LockTable, name: string): number {
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  return Atomics.load(core.words, slotBase(table.stats(name)!.slot));
}

describe('Mutex timeouts', () => {
  test('lockSync({ timeout }) throws ERR_LOCK_TIMEOUT while another thread holds it', async () => {
    const table = LockTable.create({ slots: 8 });
    const { release } = await heldByWorker(table, 't');
    const t0 = performance.now();
    expect(() => table.mutex('t').lockSync({ timeout: 50 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(49);
    release();
  });

  test('lock({ timeout }) rejects with ERR_LOCK_TIMEOUT and the lock is still usable', async () => {
    const table = LockTable.create({ slots: 8 });
    const { release, worker } = await heldByWorker(table, 't');
    await expect(table.mutex('t').lock({ timeout: 30 })).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    release();
    await result(worker);
    const guard = await table.mutex('t').lock({ timeout: 1000 });
    guard.unlock();
  });

  test('timeout 0 tries once: ERR_LOCK_TIMEOUT at once when held, the lock when free', async () => {
    const table = LockTable.create({ slots: 8 });
    table.mutex('free').lockSync({ timeout: 0 }).unlock();
    const { release } = await heldByWorker(table, 't');
    expect(() => table.mutex('t').lockSync({ timeout: 0 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    release();
  });

  test('tryLock() returns null while held and a guard once released', async () => {
    const table = LockTable.create({ slots: 8 });
    const { release, worker } = await heldByWorker(table, 't');
    expect(table.mutex('t').tryLock()).toBeNull();
    release();
    await result(worker);
    const guard = table.mutex('t').tryLock();
    expect(guard).not.toBeNull();
    guard!.unlock();
  });
});

describe('Mutex abort', () => {
  test('an already-aborted signal fails before the lock word is touched', async () => {
    const table = LockTable.create({ slots: 8 });
    const m = table.mutex('a');
    const reason = new Error('stop');
    const signal = AbortSignal.abort(reason);
    expect(() => m.lockSync({ signal })).toThrow(expect.objectContaining({ name: 'AbortError', cause: reason }));
    await expect(m.lock({ signal })).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect(stateOf(table, 'a')).toBe(0);
  });

  test('abort while waiting rejects at once, leaves no heir or owner behind, and swallows no wake-up', async () => {
    const table = LockTable.create({ slots: 8 });
    const { release, tid } = await heldByWorker(table, 'a');
    const ac = new AbortController();
    // Wait long enough to become the heir (> 1 ms), then abort.
    const pending = table.mutex('a').lock({ signal: ac.signal });
    await new Promise((r) => setTimeout(r, 20));
    const t0 = performance.now();
    ac.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(performance.now() - t0).toBeLessThan(1000);
    const s = stateOf(table, 'a');
    expect(s & OWNER_MASK).toBe(tid);
    expect(s & HEIR_MASK).toBe(0);
    // A blocking waiter in another worker must still be woken by the one release.
    const waiter = start('acquire', { table: table.buffer, name: 'a', how: 'sync', timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 20));
    release();
    await expect(result(waiter)).resolves.toMatchObject({ ok: true, abandoned: false });
  });
});
