import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { T_WAIT_SLOT, threadBase } from '../src/atomics/layout.js';
import { control, exited, result, start, until } from './helpers.js';

async function poll(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('Condition and thread death', () => {
  test('a waiter that a notify(1) woke, killed before it re-took the mutex, passes the wake-up on to a live waiter', async () => {
    const table = LockTable.create({ slots: 8 });
    const { core } = LockTable.unsafeExposeInternals(table);
    const m = table.mutex('m'), cv = table.condition('cv');
    const waitsOn = (tid: number) => Atomics.load(core.words, threadBase(tid) + T_WAIT_SLOT) - 1;
    const ctl = control();
    const workers = [0, 1].map(() => start('condition-roles', { role: 'waiter', table: table.buffer, control: ctl.buffer, how: 'sync', timeout: 10_000 }));
    const results = workers.map((w) => result<{ ok: boolean; tid: number; code?: string; ms: number }>(w));
    await poll('both wait', () => cv.waiters === 2);
    const tids = () => Array.from({ length: core.threads }, (_, i) => i + 1).filter((tid) => waitsOn(tid) === cv.slot);
    await poll('both sleep on the condition', () => tids().length === 2);
    const [t1, t2] = tids() as [number, number];
    await new Promise((r) => setTimeout(r, 20)); // from "recorded" to "inside Atomics.wait" is a few instructions

    const g = m.lockSync();
    cv.notify(); // wakes exactly one; it then blocks on m, which this thread holds
    await poll('the woken one waits for the mutex', () => waitsOn(t1) === m.slot || waitsOn(t2) === m.slot);
    const victim = waitsOn(t1) === m.slot ? t1 : t2;
    expect(waitsOn(victim === t1 ? t2 : t1)).toBe(cv.slot); // the other still sleeps on the condition
    const victimWorker = whichWorker(workers, core.words, victim);
    results[workers.indexOf(victimWorker)]!.catch(() => {}); // it never reports
    await victimWorker.terminate();
    const t0 = performance.now();
    g.unlock();
    const survivor = results[workers.indexOf(victimWorker) === 0 ? 1 : 0]!;
    const r = await survivor;
    // Without the recovery's wake-up the survivor would sleep until its 10 s timeout.
    expect(r).toMatchObject({ ok: true });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(cv.waiters).toBe(0); // the dead waiter's count was taken back
    expect(m.locked).toBe(false);
  });

  test.each(['exit', 'terminate'] as const)(
    'when the mutex holder dies (%s) while a waiter waits, the waiter gets the mutex back with guard.abandoned', async (then) => {
      const table = LockTable.create({ slots: 8 });
      const m = table.mutex('m'), cv = table.condition('cv');
      const ctl = control();
      const g = await m.lock();
      expect(g.abandoned).toBe(false);
      const pending = cv.wait(g, { timeout: 10_000 });
      const dier = start('condition-roles', { role: 'notify-then-die', table: table.buffer, control: ctl.buffer, then });
      const gone = exited(dier);
      await until(ctl, 3, 1);
      if (then === 'terminate') await dier.terminate();
      await gone;
      await pending;
      expect(g.abandoned).toBe(true);
      expect(table.stats('m')!.owner).toBe(table.threadId);
      g.unlock();
      expect(m.locked).toBe(false);
      // The next acquisition is clean again.
      const h = m.lockSync();
      expect(h.abandoned).toBe(false);
      h.unlock();
    });
});

/** The worker whose registry entry is `tid` (T_LIVE holds its Node threadId + 1). */
function whichWorker<W extends { threadId: number }>(workers: W[], words: Int32Array, tid: number): W {
  const live = Atomics.load(words, threadBase(tid)) - 1;
  const w = workers.find((x) => x.threadId === live);
  if (w === undefined) throw new Error(`no worker has registry entry ${tid}`);
  return w;
}
