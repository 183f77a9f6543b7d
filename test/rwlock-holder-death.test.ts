import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { exited } from './helpers.js';
import { poll, taker, words } from './fixtures/rwlock-helpers.js';

describe('RWLock holder death', () => {
  test.each(['terminate', 'exit', 'throw', 'return'] as const)(
    'a worker that dies holding the write lock (%s) releases it, and the next thread in, reader or writer, is told',
    async (then) => {
      const table = LockTable.create({ slots: 8 });
      const holder = await taker(table, 'dead', 'write', { then });
      holder.worker.on('error', () => {}); // 'throw' is the point of the test
      const gone = exited(holder.worker);
      await poll(() => holder.got());
      // A writer blocked in writeLockSync in another worker, and an async reader on this thread.
      const writer = await taker(table, 'dead', 'write', { timeout: 10_000, then: 'release' });
      const reading = table.rwlock('dead').readLock({ timeout: 10_000 });
      await poll(() => words(table, 'dead').queued === 1);
      const t0 = performance.now();
      if (then === 'terminate') await holder.worker.terminate();
      else {
        holder.release(); // now die
        await gone;
      }
      // Queued readers go first: this thread's read comes before the waiting writer.
      const r = await reading;
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(r.abandoned).toBe(true);
      r.unlock();
      expect(await writer.done).toMatchObject({ ok: true, abandoned: false });
      expect(words(table, 'dead')).toMatchObject({ writer: 0, readers: 0, queued: 0 });
      expect(words(table, 'dead').state).toBe(0); // no ABANDONED left behind once someone was told
    });

  test('a writer that dies holding the lock, with nobody waiting, marks it for whoever comes next', async () => {
    const table = LockTable.create({ slots: 8 });
    const holder = await taker(table, 'later', 'write', { then: 'terminate' });
    await poll(() => holder.got());
    await holder.worker.terminate();
    const rw = table.rwlock('later');
    await poll(() => !rw.writeLocked);
    const w = rw.writeLockSync({ timeout: 1000 });
    expect(w.abandoned).toBe(true);
    w.unlock();
    const again = rw.writeLockSync();
    expect(again.abandoned).toBe(false);
    again.unlock();
  });

  test.each(['terminate', 'exit'] as const)(
    'a worker that dies holding read shares (%s) gives them back: a waiting writer gets in, not told abandoned',
    async (then) => {
      const table = LockTable.create({ slots: 8 });
      const holder = await taker(table, 'share', 'read', { then });
      await poll(() => holder.got());
      const rw = table.rwlock('share');
      const writing = rw.writeLock({ timeout: 10_000 });
      await poll(() => words(table, 'share').writer === table.threadId); // announced, waiting for the dead reader
      if (then === 'terminate') await holder.worker.terminate();
      else holder.release(); // now die
      const w = await writing;
      expect(w.abandoned).toBe(false); // readers write nothing
      expect(words(table, 'share').readers).toBe(0);
      w.unlock();
      expect(table.stats('share')!.holders).toEqual([]);
    });

  test('a worker killed while queued for a read share gives its place back: writers are not held off forever', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('queue');
    const w = rw.writeLockSync();
    const reader = await taker(table, 'queue', 'read', { how: 'async' });
    await poll(() => words(table, 'queue').queued === 1);
    await reader.worker.terminate();
    await poll(() => words(table, 'queue').queued === 0);
    w.unlock();
    const again = rw.writeLockSync({ timeout: 1000 }); // a leaked place would keep every writer out
    again.unlock();
  });

  test('a writer killed while waiting for readers to leave lets the readers queued behind it in', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('drain');
    const share = rw.readLockSync();
    const writer = await taker(table, 'drain', 'write');
    await poll(() => words(table, 'drain').writer === writer.tid);
    const reader = await taker(table, 'drain', 'read', { then: 'release', timeout: 10_000 });
    await poll(() => words(table, 'drain').queued === 1);
    await writer.worker.terminate();
    expect(await reader.done).toMatchObject({ ok: true, abandoned: false }); // it had written nothing
    expect(share.abandoned).toBe(false);
    share.unlock();
    expect(words(table, 'drain').state).toBe(0);
  });
});
