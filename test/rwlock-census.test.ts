// The announced writer's census (rwlock-word.ts): a share the word counts
// but no thread's holdings name is one a thread died inside an update of; it
// is taken back. A share under a PENDING mark may be a live thread's: never.
import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { T_HOLDS, threadBase } from '../src/atomics/layout.js';
import { CENSUS_MS, ONE_READER, PENDING } from '../src/atomics/rwlock-word.js';
import { words } from './fixtures/rwlock-helpers.js';

function forge(table: LockTable, name: string) {
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  const slot = table.rwlock(name).slot, st = slotBase(slot);
  const other = threadBase(7) + T_HOLDS; // a registry entry nobody uses: tables here have 16 threads
  return {
    addReader: () => Atomics.add(core.words, st, ONE_READER),
    entry: (count: number) => { Atomics.store(core.words, other + 1, count); Atomics.store(core.words, other, count === 0 ? 0 : slot + 1); },
  };
}

describe('RWLock census', () => {
  test('a share the word counts but no thread holds is taken back by the next writer within a few CENSUS_MS', () => {
    const table = LockTable.create({ slots: 8, threads: 16 });
    const f = forge(table, 'c');
    f.addReader(); // as a reader killed between its CAS and its holdings write leaves it
    const t0 = performance.now();
    const w = table.rwlock('c').writeLockSync({ timeout: 2000 });
    expect(performance.now() - t0).toBeLessThan(CENSUS_MS * 20);
    expect(words(table, 'c')).toMatchObject({ readers: 0, writer: table.threadId });
    w.unlock();
    expect(words(table, 'c').state).toBe(0);
  });

  test('a share marked PENDING, or recorded, is never taken: the writer waits', async () => {
    const table = LockTable.create({ slots: 8, threads: 16 });
    const f = forge(table, 'p');
    const rw = table.rwlock('p');
    f.addReader();
    f.entry(1 | PENDING); // a live thread inside an update
    expect(() => rw.writeLockSync({ timeout: CENSUS_MS * 6 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    f.entry(1); // a live thread holding its share
    await expect(rw.writeLock({ timeout: CENSUS_MS * 6 })).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(words(table, 'p')).toMatchObject({ readers: 1, writer: 0 });
    f.entry(0); // it died inside its update, and its recovery cleared the entry
    const w = await rw.writeLock({ timeout: 2000 });
    expect(words(table, 'p').readers).toBe(0);
    w.unlock();
  });
});
