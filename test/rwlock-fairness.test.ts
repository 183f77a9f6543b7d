import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';
import { poll, taker, words } from './fixtures/rwlock-helpers.js';

interface Waits { p50: number; p99: number; maxMs: number }

/** `hammers` workers of one role hold the lock back to back while a measuring worker takes it `rounds` times. */
async function starve(hammer: 'reader-hammer' | 'writer-hammer', hammers: number, measure: 'measure-read' | 'measure-write', hold: number) {
  const table = LockTable.create({ slots: 8 });
  const ctl = control(8);
  const common = { table: table.buffer, control: ctl.buffer, hold, rounds: 300 };
  const hs = Array.from({ length: hammers }, () => start('rwlock-hammer', { ...common, role: hammer }));
  await until(ctl, 0, hammers);
  const waits = await result<Waits>(start('rwlock-hammer', { ...common, role: measure }));
  signalWord(ctl, 1);
  const counts = await Promise.all(hs.map((h) => result<{ n: number }>(h)));
  return { waits, counts: counts.map((c) => c.n), maxInside: Atomics.load(ctl, 5) };
}

describe('RWLock fairness', () => {
  test('writeLockSync() is served within a bound while 3 readers keep the lock read-held without a gap', async () => {
    const { waits, counts, maxInside } = await starve('reader-hammer', 3, 'measure-write', 500);
    expect(maxInside).toBeGreaterThanOrEqual(2); // the read sections did overlap: a reader-preferring lock would starve the writer
    expect(counts.every((n) => n > 0)).toBe(true);
    // Bound: the read sections in progress when it announces itself (500 µs) and a wake-up or two; the
    // scheduler of a loaded 2-core machine adds its slices to the tail. A starved writer would wait for
    // as long as the readers run: the whole test.
    expect(waits.p50).toBeLessThan(2);
    expect(waits.p99).toBeLessThan(25);
    expect(waits.maxMs).toBeLessThan(250);
  });

  test('readLockSync() is served within a bound while 2 writers hammer the write lock', async () => {
    const { waits, counts } = await starve('writer-hammer', 2, 'measure-read', 200);
    expect(counts.every((n) => n > 0)).toBe(true);
    // Bound: one writer (its 200 µs section) and a wake-up, never a second writer; plus scheduler slices.
    expect(waits.p50).toBeLessThan(2);
    expect(waits.p99).toBeLessThan(25);
    expect(waits.maxMs).toBeLessThan(250);
  });

  test('readers queued behind a writer get in before the next writer, even the heir (phase-fair)', async () => {
    const table = LockTable.create({ slots: 8 });
    const record = new SharedArrayBuffer(8);
    const rw = table.rwlock('phase');
    const mine = rw.writeLockSync();
    const reader = await taker(table, 'phase', 'read', { record });
    await poll(() => words(table, 'phase').queued === 1);
    const writer = await taker(table, 'phase', 'write', { record, write: 2 });
    await poll(() => words(table, 'phase').heir === writer.tid); // it has waited 1 ms: the heir
    mine.unlock();
    await poll(() => reader.got());
    await new Promise((r) => setTimeout(r, 30));
    expect(writer.got()).toBe(false); // the reader is in, so the writer waits for it
    expect(words(table, 'phase')).toMatchObject({ writer: writer.tid, readers: 1 }); // announced, draining
    reader.release();
    expect(await reader.done).toMatchObject({ ok: true, seen: 0, seenAtEnd: 0 });
    await poll(() => writer.got());
    writer.release();
    expect(await writer.done).toMatchObject({ ok: true, seen: 0 });
  });

  test('once a writer has announced itself no new reader thread gets in, but a thread already holding a share does', async () => {
    const table = LockTable.create({ slots: 8 });
    const rw = table.rwlock('pref');
    const share = rw.readLockSync();
    const writer = await taker(table, 'pref', 'write');
    await poll(() => words(table, 'pref').writer === writer.tid);
    const late = await taker(table, 'pref', 'read', { timeout: 100, then: 'release' });
    expect(await late.done).toMatchObject({ ok: false, code: 'ERR_LOCK_TIMEOUT' });
    expect(rw.tryReadLock()).not.toBeNull(); // this thread is in already: a second share at once
    const third = rw.readLockSync({ timeout: 0 });
    expect(rw.readSharesHeld).toBe(3);
    expect(words(table, 'pref')).toMatchObject({ readers: 1, queued: 0 });
    rw.readUnlock();
    third.unlock();
    expect(writer.got()).toBe(false);
    share.unlock();
    await poll(() => writer.got());
    writer.release();
    expect(await writer.done).toMatchObject({ ok: true, abandoned: false });
  });
});
