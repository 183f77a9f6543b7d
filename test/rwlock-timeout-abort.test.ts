import { afterEach, describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { heldBy, poll, releaseHeld, taker, words } from './fixtures/rwlock-helpers.js';

afterEach(releaseHeld);

describe('RWLock timeouts', () => {
  test('readLockSync({ timeout }) throws ERR_LOCK_TIMEOUT while a writer holds it, and gives its place in the queue back', async () => {
    const table = LockTable.create({ slots: 8 });
    const writer = await heldBy(table, 't', 'write');
    const t0 = performance.now();
    expect(() => table.rwlock('t').readLockSync({ timeout: 50 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(49);
    expect(words(table, 't')).toMatchObject({ writer: writer.tid, queued: 0 });
    expect(table.rwlock('t').readSharesHeld).toBe(0);
  });

  test('writeLockSync({ timeout }) throws ERR_LOCK_TIMEOUT while a reader holds it; readers queued behind it then get in', async () => {
    const table = LockTable.create({ slots: 8 });
    await heldBy(table, 't', 'read');
    const rw = table.rwlock('t');
    const writing = rw.writeLock({ timeout: 1500 }); // time enough to start the reader below, even on a loaded machine
    await poll(() => words(table, 't').writer === table.threadId); // announced: new readers queue behind it
    const reader = await taker(table, 't', 'read', { timeout: 10_000, then: 'release' });
    await poll(() => words(table, 't').queued === 1);
    await expect(writing).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(await reader.done).toMatchObject({ ok: true }); // let in while the first reader still holds its share
    expect(words(table, 't')).toMatchObject({ writer: 0, readers: 1, queued: 0, heir: 0 });
    expect(() => rw.writeLockSync({ timeout: 30 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    expect(words(table, 't')).toMatchObject({ writer: 0, readers: 1, queued: 0, heir: 0 });
  });

  test('timeout 0 tries once: ERR_LOCK_TIMEOUT at once when it cannot get in, the lock when it can', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('z');
    rw.writeLockSync({ timeout: 0 }).unlock();
    rw.readLockSync({ timeout: 0 }).unlock();
    await heldBy(table, 'z', 'read');
    rw.readLockSync({ timeout: 0 }).unlock(); // sharing is fine
    const t0 = performance.now();
    expect(() => rw.writeLockSync({ timeout: 0 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    await expect(rw.writeLock({ timeout: 0 })).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(performance.now() - t0).toBeLessThan(50);
    expect(words(table, 'z')).toMatchObject({ writer: 0, readers: 1, queued: 0 }); // never announced itself
  });

  test('tryReadLock() and tryWriteLock() return null when they cannot get in, and a guard when they can', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('try');
    const writer = await heldBy(table, 'try', 'write');
    expect(rw.tryReadLock()).toBeNull();
    expect(rw.tryWriteLock()).toBeNull();
    writer.release();
    await writer.done;
    const reader = await heldBy(table, 'try', 'read');
    expect(rw.tryWriteLock()).toBeNull();
    const r = rw.tryReadLock();
    expect(r).not.toBeNull();
    r!.unlock();
    reader.release();
    await reader.done;
    const w = rw.tryWriteLock();
    expect(w).not.toBeNull();
    w!.unlock();
  });
});

describe('RWLock abort', () => {
  test('an already-aborted signal fails before the lock word is touched', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('a');
    const reason = new Error('stop');
    const signal = AbortSignal.abort(reason);
    const aborted = expect.objectContaining({ name: 'AbortError', cause: reason });
    expect(() => rw.readLockSync({ signal })).toThrow(aborted);
    expect(() => rw.writeLockSync({ signal })).toThrow(aborted);
    await expect(rw.readLock({ signal })).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    await expect(rw.writeLock({ signal })).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect(words(table, 'a').state).toBe(0);
    expect(table.stats('a')!.acquisitions).toBe(0);
  });

  test('abort while queued for a share rejects at once and leaves no place in the queue behind', async () => {
    const table = LockTable.create({ slots: 8 });
    const writer = await heldBy(table, 'a', 'write');
    const ac = new AbortController();
    const pending = table.rwlock('a').readLock({ signal: ac.signal });
    await poll(() => words(table, 'a').queued === 1);
    const t0 = performance.now();
    ac.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(words(table, 'a')).toMatchObject({ writer: writer.tid, queued: 0 });
    // A blocked reader in another worker is still woken by the one release.
    const reader = await taker(table, 'a', 'read', { then: 'release', timeout: 10_000 });
    await poll(() => words(table, 'a').queued === 1);
    writer.release();
    expect(await reader.done).toMatchObject({ ok: true, abandoned: false });
  });

  test('abort of a writer waiting for readers to leave withdraws it: the readers queued behind it get in', async () => {
    const table = LockTable.create({ slots: 8 });
    await heldBy(table, 'a', 'read');
    const ac = new AbortController();
    const pending = table.rwlock('a').writeLock({ signal: ac.signal });
    await poll(() => words(table, 'a').writer === table.threadId); // announced, waiting for the reader
    const reader = await taker(table, 'a', 'read', { then: 'release', timeout: 10_000 });
    await poll(() => words(table, 'a').queued === 1);
    ac.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(await reader.done).toMatchObject({ ok: true });
    expect(words(table, 'a')).toMatchObject({ writer: 0, readers: 1, queued: 0, heir: 0 });
  });

  test('abort of a writer waiting behind another writer (the heir) leaves no heir behind', async () => {
    const table = LockTable.create({ slots: 8 });
    const first = await heldBy(table, 'h', 'write');
    const ac = new AbortController();
    const pending = table.rwlock('h').writeLock({ signal: ac.signal });
    await poll(() => words(table, 'h').heir === table.threadId);
    ac.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(words(table, 'h')).toMatchObject({ writer: first.tid, heir: 0 });
    const next = await taker(table, 'h', 'write', { then: 'release', timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 20));
    first.release();
    expect(await next.done).toMatchObject({ ok: true, abandoned: false });
  });
});
