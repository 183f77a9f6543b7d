// Regressions found in review of the recovery paths (each failed before its fix).
import { expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { T_WAIT_SLOT, threadBase } from '../src/atomics/layout.js';
import { control, exited, result, signalWord, start, until } from './helpers.js';

function setup() {
  const table = LockTable.create({ slots: 8, threads: 16 });
  const ctl = control(8);
  const run = (role: string) => start('roles', { role, table: table.buffer, control: ctl.buffer });
  return { table, ctl, run };
}

test('a waiter woken by an unlock and killed before it ran passes the wake-up on (no stranded sleeper)', async () => {
  const { table, ctl, run } = setup();
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  const state = slotBase(table.mutex('m').slot);
  const heirOf = () => (Atomics.load(core.words, state) >>> 12) & 0xfff;
  const blocked = () => Array.from({ length: 16 }, (_, i) => Atomics.load(core.words, threadBase(i + 1) + T_WAIT_SLOT)).filter((v) => v !== 0).length;
  const poll = async (ok: () => boolean) => {
    const deadline = performance.now() + 5000;
    while (!ok()) {
      if (performance.now() > deadline) throw new Error('setup did not reach its state');
      await new Promise((r) => setTimeout(r, 1));
    }
  };
  run('holder-then-unlock');
  await until(ctl, 0, 1);
  // 1. A blocking waiter becomes heir, so the sleepers below park with no fairness timer.
  const heir = run('sync-waiter');
  const heirDone = result(heir);
  await poll(() => heirOf() !== 0);
  // 2. The doomed async waiter parks first in line, then the sleeper behind it.
  const doomed = run('async-waiter-then-exit');
  await until(ctl, 2, 1);
  const sleeper = run('sync-waiter');
  const slept = result(sleeper);
  await poll(() => blocked() === 2);
  await new Promise((r) => setTimeout(r, 50)); // from its wait slot to Atomics.wait is a few instructions
  // 3. Unlock: hand-over to the heir, whose unlock's notify(1) wakes the doomed waiter.
  signalWord(ctl, 1);
  expect(await heirDone).toEqual({ ok: true });
  // 4. The doomed waiter exits without ever running that wake-up.
  const gone = exited(doomed);
  signalWord(ctl, 3);
  await gone;
  const t0 = performance.now();
  expect(await slept).toEqual({ ok: true });
  expect(performance.now() - t0).toBeLessThan(5000); // woken by recovery, not by its own 8 s timeout
});

test('a lock handed to an async heir that aborts stays marked abandoned for the next owner', async () => {
  const { table, ctl, run } = setup();
  const { core, slotBase } = LockTable.unsafeExposeInternals(table);
  const m = table.mutex('m');
  const state = slotBase(m.slot);
  run('holder-then-exit');
  await until(ctl, 0, 1);
  const ac = new AbortController();
  const pending = m.lock({ signal: ac.signal }).then(() => 'granted', (e: Error) => e.name);
  // Become heir: our waiter wakes by itself after 1 ms and claims the bits.
  while (((Atomics.load(core.words, state) >>> 12) & 0xfff) !== table.threadId) await new Promise((r) => setTimeout(r, 1));
  signalWord(ctl, 1); // the holder exits holding it: recovery hands it to us, abandoned
  while ((Atomics.load(core.words, state) & 0xfff) !== table.threadId) { /* spin: our continuation must not run yet */ }
  ac.abort(); // lands before the continuation that would take the lock
  expect(await pending).toBe('AbortError');
  const next = m.tryLock();
  expect(next?.abandoned).toBe(true);
  next!.unlock();
});

test('a worker stopped because its parent worker exited releases its locks', async () => {
  const { table, ctl, run } = setup();
  const parent = run('parent');
  await exited(parent);
  const g = await table.mutex('m').lock({ timeout: 5000 });
  expect(g.abandoned).toBe(true);
  g.unlock();
  expect(Atomics.load(ctl, 4)).toBe(1);
});

test('a lock taken by an exit listener that runs after latchkey\'s own is still released', async () => {
  const { table, run } = setup();
  await exited(run('lock-in-exit-listener'));
  const g = await table.mutex('m').lock({ timeout: 5000 });
  expect(g.abandoned).toBe(true);
  g.unlock();
});

test('a thread that imported latchkey but never touched the default table recovers the workers it terminates', async () => {
  // This file never calls LockTable.default() before this point.
  const ctl = control();
  const holder = start('hold', { table: null, name: 'default:unjoined', then: 'terminate', control: ctl.buffer });
  await until(ctl, 0, 1);
  await holder.terminate();
  const g = await LockTable.default().mutex('default:unjoined').lock({ timeout: 5000 });
  expect(g.abandoned).toBe(true);
  g.unlock();
});
