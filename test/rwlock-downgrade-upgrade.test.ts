import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { poll, taker, words } from './fixtures/rwlock-helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });

describe('RWLockWriteGuard.downgrade()', () => {
  test('turns the write lock into a share in one step: queued readers come in, a waiting writer does not', async () => {
    const table = LockTable.create({ slots: 8 });
    const record = new SharedArrayBuffer(8);
    const rec = new Int32Array(record);
    const rw = table.rwlock('down');
    const w = rw.writeLockSync();
    rec[0] = 1;
    const writer = await taker(table, 'down', 'write', { record, write: 2 });
    await poll(() => words(table, 'down').heir === writer.tid); // waiting, and first in line among writers
    const reader = await taker(table, 'down', 'read', { record });
    await poll(() => words(table, 'down').queued === 1);
    const r = w.downgrade();
    expect(() => w.unlock()).toThrow(code('ERR_LOCK_NOT_LOCKED')); // the write guard is spent
    await poll(() => reader.got()); // readers queued behind the write lock share it now
    await new Promise((res) => setTimeout(res, 30));
    expect(writer.got()).toBe(false);
    expect(rec[0]).toBe(1); // what this thread wrote is still what it reads
    expect(r.abandoned).toBe(false);
    expect(rw.readSharesHeld).toBe(1);
    expect(words(table, 'down')).toMatchObject({ writer: writer.tid, readers: 2 }); // announced, waiting for both
    reader.release();
    expect(await reader.done).toMatchObject({ ok: true, seen: 1, seenAtEnd: 1 });
    await new Promise((res) => setTimeout(res, 10));
    expect(writer.got()).toBe(false);
    r.unlock();
    await poll(() => writer.got());
    writer.release();
    expect(await writer.done).toMatchObject({ ok: true, seen: 1 });
    expect(rec[0]).toBe(2);
  });

  test('a spent write guard cannot downgrade again', () => {
    const rw = LockTable.create({ slots: 8 }).rwlock('x');
    const w = rw.writeLockSync();
    w.downgrade().unlock();
    expect(() => w.downgrade()).toThrow(code('ERR_LOCK_NOT_LOCKED'));
    const w2 = rw.writeLockSync();
    w2.unlock();
    expect(() => w2.downgrade()).toThrow(code('ERR_LOCK_NOT_LOCKED'));
    expect(rw.readers).toBe(0);
    expect(rw.writeLocked).toBe(false);
  });
});

describe('RWLockReadGuard.tryUpgrade()', () => {
  test('the only reader gets the write lock at once; its read guard is spent', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('up');
    const r = rw.readLockSync();
    const w = r.tryUpgrade();
    expect(w).not.toBeNull();
    expect(rw.writeLocked).toBe(true);
    expect(rw.readSharesHeld).toBe(0);
    expect(() => r.unlock()).toThrow(code('ERR_LOCK_NOT_LOCKED'));
    const other = await taker(table, 'up', 'read', { timeout: 50, then: 'release' });
    expect(await other.done).toMatchObject({ ok: false, code: 'ERR_LOCK_TIMEOUT' }); // it really is exclusive
    w!.unlock();
    expect(words(table, 'up')).toMatchObject({ writer: 0, readers: 0, queued: 0 });
  });

  test('returns null, keeping the share, while another thread holds a share', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('up');
    const other = await taker(table, 'up', 'read');
    await poll(() => other.got());
    const r = rw.readLockSync();
    expect(r.tryUpgrade()).toBeNull();
    expect(rw.readers).toBe(2);
    expect(rw.readSharesHeld).toBe(1);
    other.release();
    await other.done;
    const w = r.tryUpgrade(); // now the only one
    expect(w).not.toBeNull();
    w!.unlock();
  });

  test('returns null while this thread holds a second share, or a writer waits for the share', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('up');
    const r = rw.readLockSync();
    const inner = rw.readLockSync();
    expect(r.tryUpgrade()).toBeNull();
    inner.unlock();
    const writer = await taker(table, 'up', 'write');
    await poll(() => words(table, 'up').writer === writer.tid); // announced: it waits for our share
    expect(r.tryUpgrade()).toBeNull(); // waiting for it instead would deadlock both
    r.unlock();
    await poll(() => writer.got());
    writer.release();
    expect(await writer.done).toMatchObject({ ok: true });
  });
});
