import { afterEach, describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { heldBy, releaseHeld, words } from './fixtures/rwlock-helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });
afterEach(releaseHeld);

describe('RWLock ownership', () => {
  test('writeUnlock() of a write lock another thread holds throws ERR_LOCK_NOT_OWNER and changes nothing', async () => {
    const table = LockTable.create({ slots: 8 });
    const other = await heldBy(table, 'o', 'write');
    const rw = table.rwlock('o');
    const before = words(table, 'o');
    expect(() => rw.writeUnlock()).toThrow(code('ERR_LOCK_NOT_OWNER'));
    expect(words(table, 'o')).toEqual(before);
    expect(rw.writeLocked).toBe(true);
    expect(table.stats('o')!.holders).toEqual([other.tid]);
  });

  test('writeUnlock() of a free lock throws ERR_LOCK_NOT_LOCKED', () => {
    const rw = LockTable.create({ slots: 8 }).rwlock('free');
    expect(() => rw.writeUnlock()).toThrow(code('ERR_LOCK_NOT_LOCKED'));
  });

  test('readUnlock() by a thread holding no share throws ERR_LOCK_NOT_LOCKED, even while others hold shares', async () => {
    const table = LockTable.create({ slots: 8 });
    const other = await heldBy(table, 'r', 'read');
    const rw = table.rwlock('r');
    expect(() => rw.readUnlock()).toThrow(code('ERR_LOCK_NOT_LOCKED'));
    expect(rw.readers).toBe(1); // the other thread's share is untouched
    expect(table.stats('r')!.holders).toEqual([other.tid]);
    expect(() => rw.writeUnlock()).toThrow(code('ERR_LOCK_NOT_LOCKED')); // read-held: no writer to release
  });

  test('a second unlock() through the same guard throws ERR_LOCK_NOT_LOCKED, and leaves other shares alone', () => {
    const rw = LockTable.create({ slots: 8 }).rwlock('g');
    const a = rw.readLockSync();
    const b = rw.readLockSync();
    a.unlock();
    expect(() => a.unlock()).toThrow(code('ERR_LOCK_NOT_LOCKED'));
    expect(rw.readSharesHeld).toBe(1);
    b.unlock();
    const w = rw.writeLockSync();
    w.unlock();
    expect(() => w.unlock()).toThrow(code('ERR_LOCK_NOT_LOCKED'));
    expect(rw.writeLocked).toBe(false);
  });

  test('the writing thread asking again, to read or to write, fails at once with ERR_LOCK_DEADLOCK', async () => {
    const rw = LockTable.create({ slots: 8 }).rwlock('d');
    const w = rw.writeLockSync();
    expect(() => rw.writeLockSync()).toThrow(code('ERR_LOCK_DEADLOCK'));
    expect(() => rw.readLockSync()).toThrow(code('ERR_LOCK_DEADLOCK'));
    await expect(rw.writeLock()).rejects.toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    await expect(rw.readLock()).rejects.toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    expect(rw.tryReadLock()).toBeNull();
    expect(rw.tryWriteLock()).toBeNull();
    w.unlock();
    expect(rw.writeLocked).toBe(false);
  });

  test('asking for the write lock while holding a share fails at once with ERR_LOCK_DEADLOCK (it would wait for itself)', async () => {
    const rw = LockTable.create({ slots: 8 }).rwlock('s');
    const r = rw.readLockSync();
    expect(() => rw.writeLockSync({ timeout: 1000 })).toThrow(code('ERR_LOCK_DEADLOCK'));
    await expect(rw.writeLock()).rejects.toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    expect(rw.tryWriteLock()).toBeNull();
    r.unlock();
    rw.writeLockSync().unlock();
  });

  test('a second writeLock() while this thread already waits for the write lock fails with ERR_LOCK_DEADLOCK', async () => {
    const table = LockTable.create({ slots: 8 });
    const other = await heldBy(table, 'w', 'write');
    const rw = table.rwlock('w');
    const first = rw.writeLock();
    await expect(rw.writeLock()).rejects.toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    expect(() => rw.writeUnlock()).toThrow(code('ERR_LOCK_NOT_LOCKED')); // its own wait has not resolved
    other.release();
    (await first).unlock();
  });

  test('using: guards declared with `using` release at the end of their scope', () => {
    const rw = LockTable.create({ slots: 8 }).rwlock('u');
    {
      const r = rw.readLockSync();
      r[Symbol.dispose]();
      const w = rw.writeLockSync();
      w[Symbol.dispose]();
      w[Symbol.dispose](); // a spent guard disposes quietly
    }
    expect(rw.readers).toBe(0);
    expect(rw.writeLocked).toBe(false);
  });

  test('withReadLock/withWriteLock and their Sync twins release when the callback throws', async () => {
    const rw = LockTable.create({ slots: 8 }).rwlock('c');
    expect(() => rw.withWriteLockSync(() => { throw new Error('boom'); })).toThrow('boom');
    expect(() => rw.withReadLockSync(() => { throw new Error('boom'); })).toThrow('boom');
    await expect(rw.withWriteLock(async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    await expect(rw.withReadLock(async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    expect(rw.readers).toBe(0);
    expect(rw.writeLocked).toBe(false);
    expect(await rw.withReadLock(() => rw.readers)).toBe(1);
    expect(rw.withWriteLockSync(() => rw.writeLocked)).toBe(true);
  });

  test('stats(): holders are the writer, or every thread holding a share', async () => {
    const table = LockTable.create({ slots: 8 });
    const a = await heldBy(table, 'h', 'read');
    const rw = table.rwlock('h');
    const r = rw.readLockSync();
    const r2 = rw.readLockSync();
    expect(table.stats('h')!.holders.sort()).toEqual([a.tid, table.threadId].sort());
    expect(table.stats('h')!.owner).toBe(0);
    r.unlock();
    r2.unlock();
    a.release();
    await a.done;
    const w = rw.writeLockSync();
    expect(table.stats('h')).toMatchObject({ kind: 'rwlock', holders: [table.threadId], owner: table.threadId });
    w.unlock();
  });
});
