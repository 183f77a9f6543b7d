import { expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';
import { HEIR_MASK, HEIR_SHIFT } from '../src/atomics/mutex-word.js';

test('Mutex: a waiter older than 1 ms is handed the lock before a thread spinning on tryLock()', async () => {
  const table = LockTable.create({ slots: 8 });
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  const ctl = control();
  const holder = start('hold', { table: table.buffer, name: 'heir', then: 'release', control: ctl.buffer });
  await until(ctl, 0, 1);
  const waiterCtl = control();
  const waiter = start('acquire', { table: table.buffer, name: 'heir', how: 'sync', timeout: 10_000, control: waiterCtl.buffer });
  const state = slotBase(table.mutex('heir').slot);
  // The waiter claims the heir bits once it has waited FAIR_MS.
  const deadline = performance.now() + 5000;
  while ((Atomics.load(core.words, state) & HEIR_MASK) === 0) {
    if (performance.now() > deadline) throw new Error('the waiter never became heir');
    await new Promise((r) => setTimeout(r, 1));
  }
  signalWord(ctl, 1); // the holder releases: the hand-over must go to the heir
  let guard = null;
  while (guard === null) guard = table.mutex('heir').tryLock(); // barge as hard as this thread can
  // holder, then the heir, then us: we got it only after the heir had it.
  expect(table.stats('heir')!.acquisitions).toBe(3);
  guard.unlock();
  const heir = (Atomics.load(core.words, state) & HEIR_MASK) >>> HEIR_SHIFT;
  expect(heir).toBe(0);
  await expect(result(waiter)).resolves.toMatchObject({ ok: true });
  await result(holder);
});

test('Mutex.lockSync() serves a waiter within a bound while two others hammer the lock with tryLock()', async () => {
  const table = LockTable.create({ slots: 8 });
  const ctl = control(8);
  const common = { table: table.buffer, name: 'fair', control: ctl.buffer };
  const hammers = [start('hammer', { ...common, role: 'hammer' }), start('hammer', { ...common, role: 'hammer' })];
  await until(ctl, 0, 2);
  const measured = start('hammer', { ...common, role: 'measure', rounds: 2000 });
  const waits = await result<{ maxMs: number; p99: number; p50: number }>(measured);
  signalWord(ctl, 1);
  const counts = await Promise.all(hammers.map((h) => result<{ n: number }>(h)));
  expect(counts.every(({ n }) => n > 0)).toBe(true);
  // 1 ms to become heir, plus a critical section and a wake-up. Three busy
  // threads share 2 cores here, and other test files run beside this one,
  // so the scheduler adds its time slices (p99 ~5 ms quiet, ~13 ms loaded):
  // the bounds leave room for that, not for starvation, which runs to
  // seconds. The test above proves the hand-over itself.
  expect(waits.p99).toBeLessThan(50);
  expect(waits.maxMs).toBeLessThan(1000);
});
