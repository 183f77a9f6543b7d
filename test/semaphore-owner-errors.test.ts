import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { holdingOf } from '../src/atomics/holdings.js';
import { T_WAIT_SLOT, threadBase } from '../src/atomics/layout.js';
import { control, result, signalWord, start, until } from './helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });

function words(table: LockTable, slot: number): number[] {
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  return [Atomics.load(core.words, slotBase(slot)), Atomics.load(core.words, slotBase(slot) + 1)];
}

describe('Semaphore permits belong to the thread that took them', () => {
  test('release() beyond what this thread holds throws ERR_LOCK_NOT_OWNER and changes nothing', () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('p', 3);
    const { core } = LockTable.unsafeExposeInternals(table);
    expect(() => s.release()).toThrow(code('ERR_LOCK_NOT_OWNER'));
    const g = s.acquireSync(1);
    const before = words(table, s.slot);
    expect(() => s.release(2)).toThrow(code('ERR_LOCK_NOT_OWNER'));
    expect(words(table, s.slot)).toEqual(before);
    expect(holdingOf(core, core.tid, s.slot)).toBe(1);
    s.release(1); // permits of this thread, given back without the guard
    expect(s.available).toBe(3);
    expect(holdingOf(core, core.tid, s.slot)).toBe(0);
    expect(() => g.release()).toThrow(code('ERR_LOCK_NOT_OWNER')); // already given back by hand
  });

  test('permits taken by several calls are one holding: any split can give them back', () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('split', 5);
    const { core } = LockTable.unsafeExposeInternals(table);
    s.acquireSync(2);
    s.tryAcquire(3);
    expect(holdingOf(core, core.tid, s.slot)).toBe(5);
    expect(s.available).toBe(0);
    s.release(4);
    s.release(1);
    expect(s.available).toBe(5);
    expect(() => s.release(1)).toThrow(code('ERR_LOCK_NOT_OWNER'));
  });

  test('a thread cannot give back permits another thread holds', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('theirs', 3);
    const ctl = control();
    const holder = start('semaphore-hold', { table: table.buffer, name: 'theirs', permits: 3, n: 2, then: 'release', control: ctl.buffer });
    await until(ctl, 0, 1);
    const holderTid = Atomics.load(ctl, 2);
    expect(() => s.release()).toThrow(expect.objectContaining({ code: 'ERR_LOCK_NOT_OWNER', message: expect.stringContaining(`thread ${holderTid}`) }));
    expect(s.available).toBe(1);
    expect(table.stats('theirs')!.holders).toEqual([holderTid]);
    signalWord(ctl, 1);
    await result(holder);
    expect(s.available).toBe(3);
  });

  test('a guard gives its permits back once: a second release() throws ERR_LOCK_NOT_LOCKED', () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('g', 2);
    const g = s.acquireSync(2);
    expect(g.permits).toBe(2);
    g.release();
    expect(() => g.release()).toThrow(code('ERR_LOCK_NOT_LOCKED'));
    {
      using h = s.acquireSync();
      expect(s.available).toBe(1);
      expect(h.semaphore).toBe(s);
    }
    expect(s.available).toBe(2);
  });

  test('acquireSync() by a thread that holds too many to ever get n more throws ERR_LOCK_DEADLOCK; acquire() waits for its other tasks', async () => {
    const table = LockTable.create({ slots: 8 });
    const s = table.semaphore('self', 2);
    const g = s.acquireSync(2);
    expect(() => s.acquireSync(1)).toThrow(code('ERR_LOCK_DEADLOCK'));
    expect(() => s.acquireSync(1, { timeout: 10 })).toThrow(code('ERR_LOCK_DEADLOCK'));
    expect(s.tryAcquire(1)).toBeNull();
    const later = s.acquire(2, { timeout: 5000 });
    setImmediate(() => g.release()); // another task of this thread gives them back
    const h = await later;
    expect(h.permits).toBe(2);
    h.release();
    expect(s.available).toBe(2);
  });

  test('acquireSync() that would close a cycle with a blocked holder throws ERR_LOCK_DEADLOCK naming it', async () => {
    const table = LockTable.create({ slots: 8 });
    const { core } = LockTable.unsafeExposeInternals(table);
    const m = table.mutex('m');
    const s = table.semaphore('s', 1);
    const held = m.lockSync();
    const ctl = control();
    const other = start('semaphore-cycle', { table: table.buffer, sem: 's', mutex: 'm', control: ctl.buffer });
    await until(ctl, 0, 1);
    const otherTid = Atomics.load(ctl, 2);
    // It holds the permit and is blocked on our mutex: waiting for the permit would never end.
    while (Atomics.load(core.words, threadBase(otherTid) + T_WAIT_SLOT) !== m.slot + 1) await new Promise((r) => setTimeout(r, 1));
    expect(() => s.acquireSync({ timeout: 10_000 } as never)).toThrow(code('ERR_INVALID_ARG_TYPE')); // n comes first
    const t0 = performance.now();
    let ours: unknown;
    try {
      s.acquireSync(1, { timeout: 10_000 }).release();
    } catch (err) {
      ours = err;
    }
    expect(performance.now() - t0).toBeLessThan(1000);
    held.unlock();
    const theirs = await result(other);
    // The walk after the last edge sees the cycle; the other thread may walk
    // again meanwhile (it wakes to claim the mutex's heir bits) and see it
    // too. At least one is refused, nobody hangs.
    if (ours === undefined) {
      expect(theirs).toEqual({ ok: false, code: 'ERR_LOCK_DEADLOCK' });
    } else {
      expect(ours).toMatchObject({ code: 'ERR_LOCK_DEADLOCK', message: expect.stringContaining(`held by thread ${otherTid}`) });
      expect([{ ok: true }, { ok: false, code: 'ERR_LOCK_DEADLOCK' }]).toContainEqual(theirs);
    }
    expect(s.available).toBe(1);
  });

  test('no false deadlock: with two holders, one blocked on our mutex, the other free to give back, acquireSync() waits and gets it', async () => {
    const table = LockTable.create({ slots: 8 });
    const { core } = LockTable.unsafeExposeInternals(table);
    const m = table.mutex('m');
    const s = table.semaphore('s', 2);
    const held = m.lockSync();
    const ctlA = control(), ctlB = control();
    const blocked = start('semaphore-cycle', { table: table.buffer, sem: 's', permits: 2, mutex: 'm', control: ctlA.buffer });
    await until(ctlA, 0, 1);
    const tidA = Atomics.load(ctlA, 2);
    while (Atomics.load(core.words, threadBase(tidA) + T_WAIT_SLOT) !== m.slot + 1) await new Promise((r) => setTimeout(r, 1));
    // B holds the other permit and gives it back by itself: this thread is blocked meanwhile.
    const free = start('semaphore-hold', { table: table.buffer, name: 's', permits: 2, n: 1, then: 'release', releaseAfterMs: 100, control: ctlB.buffer });
    await until(ctlB, 0, 1);
    const g = s.acquireSync(1, { timeout: 10_000 }); // a walk through A alone would call this a deadlock
    expect(await result(free)).toEqual({ released: true });
    g.release();
    held.unlock();
    expect(await result(blocked)).toEqual({ ok: true });
    expect(s.available).toBe(2);
  });
});
