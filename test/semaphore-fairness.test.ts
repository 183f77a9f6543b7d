import { expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { HEIR_MASK } from '../src/atomics/semaphore-word.js';
import { control, result, signalWord, start, until } from './helpers.js';

test('Semaphore: while a waiter older than 1 ms is heir, tryAcquire() finds no permit though one is free, and the heir is served first', async () => {
  const table = LockTable.create({ slots: 8 });
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  const s = table.semaphore('heir', 4);
  const ctl = control();
  const holder = start('semaphore-hold', { table: table.buffer, name: 'heir', permits: 4, n: 3, then: 'release', control: ctl.buffer });
  await until(ctl, 0, 1);
  const waiterCtl = control();
  const waiter = start('semaphore-acquire', {
    table: table.buffer, name: 'heir', permits: 4, n: 4, how: 'sync', timeout: 10_000, control: waiterCtl.buffer,
  });
  const bell = slotBase(s.slot) + 1;
  const deadline = performance.now() + 5000;
  while ((Atomics.load(core.words, bell) & HEIR_MASK) === 0) {
    if (performance.now() > deadline) throw new Error('the waiter never became heir');
    await new Promise((r) => setTimeout(r, 1));
  }
  expect(s.available).toBe(1);
  expect(s.tryAcquire(1)).toBeNull(); // the free permit is kept for the heir
  signalWord(ctl, 1); // the holder gives back 3: now all 4 fit the heir
  let guard = null;
  while (guard === null) guard = s.tryAcquire(1); // barge as hard as this thread can
  // We got one only after the heir had had all four (its acquire has returned).
  expect(Atomics.load(waiterCtl, 5)).toBe(1);
  guard.release();
  await expect(result(waiter)).resolves.toMatchObject({ ok: true });
  await result(holder);
  expect(Atomics.load(core.words, bell)).toBe(0);
});

test('Semaphore.acquireSync(4) of 4 is served within a bound while three workers hammer tryAcquire(1)', async () => {
  const table = LockTable.create({ slots: 8 });
  const ctl = control(8);
  const common = { table: table.buffer, name: 'wide', permits: 4, control: ctl.buffer };
  const hammers = [0, 1, 2].map(() => start('semaphore-hammer', { ...common, role: 'hammer' }));
  const counts = hammers.map((h) => result<{ taken: number }>(h));
  await until(ctl, 0, 3);
  const measured = start('semaphore-hammer', { ...common, role: 'measure', rounds: 200, n: 4 });
  const waits = await result<{ maxMs: number; p99: number; p50: number }>(measured);
  signalWord(ctl, 1);
  expect((await Promise.all(counts)).every(({ taken }) => taken > 0)).toBe(true);
  // 1 ms to become heir, then the hammers' permits drain (a few µs each) and
  // one wake-up. Four busy threads share 2 cores here, and a hammer
  // preempted while it holds a permit keeps it for a time slice: the bounds
  // leave room for the scheduler (p99 ~1-50 ms, max ~50-600 ms measured,
  // the larger under a load average of 9), not for starvation: with the heir
  // disabled (FAIR_MS = 1e9) the same run measured p99 7.4 s, max 10.8 s.
  expect(waits.p99).toBeLessThan(100);
  expect(waits.maxMs).toBeLessThan(2000);
});
