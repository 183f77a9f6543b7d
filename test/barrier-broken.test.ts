import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, exited, result, start, until } from './helpers.js';

interface Outcome { ok: boolean; last?: boolean; code?: string; message?: string; ms: number }
interface Report { outcomes: Outcome[]; tid: number }

async function poll(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

function party(table: LockTable, ctl: Int32Array, parties: number, extra: Record<string, unknown> = {}) {
  const worker = start('barrier-roles', { role: 'arrive', table: table.buffer, control: ctl.buffer, parties, ...extra });
  return { worker, report: result<Report>(worker), gone: exited(worker) };
}

const broken = (reason: string) => expect.objectContaining({ ok: false, code: 'ERR_LOCK_BARRIER_BROKEN', message: expect.stringContaining(reason) });

describe('Barrier breakage', () => {
  test.each(['sync', 'async'] as const)(
    'a terminated party breaks the barrier: the %s waiters get ERR_LOCK_BARRIER_BROKEN promptly, later arrivals too, until reset()', async (how) => {
      const table = LockTable.create({ slots: 8 });
      const b = table.barrier('b', 3);
      const ctl = control();
      // Generation 1: A, B and C pass together. Then C stops arriving (blocked) and A, B wait in generation 2.
      const a = party(table, ctl, 3, { how, times: 2 });
      const bb = party(table, ctl, 3, { how, times: 2 });
      const c = party(table, ctl, 3, { how: 'sync', times: 1, then: 'block' });
      const cReport = await c.report;
      expect(cReport.outcomes).toEqual([expect.objectContaining({ ok: true })]);
      await poll('A and B wait in generation 2', () => b.arrived === 2);
      expect(table.stats('b')!.holders).toEqual([cReport.tid]); // the member they wait for
      const t0 = performance.now();
      await c.worker.terminate();
      const [ra, rb] = await Promise.all([a.report, bb.report]);
      expect(performance.now() - t0).toBeLessThan(1000);
      for (const r of [ra, rb]) expect(r.outcomes).toEqual([expect.objectContaining({ ok: true }), broken('a party exited or died')]);
      expect(b.broken).toBe(true);
      expect(() => b.arriveSync()).toThrow(expect.objectContaining({ code: 'ERR_LOCK_BARRIER_BROKEN' }));
      await expect(b.arrive()).rejects.toMatchObject({ code: 'ERR_LOCK_BARRIER_BROKEN' });
      // Repair once the old parties are gone (their exit breaks it too), then three new parties pass.
      await Promise.all([a.gone, bb.gone]);
      b.reset();
      expect(b.broken).toBe(false);
      const d = party(table, ctl, 3, { how });
      const e = party(table, ctl, 3, { how });
      const mine = await b.arrive({ timeout: 10_000 });
      const all = [mine, ...(await Promise.all([d.report, e.report])).map((r) => r.outcomes[0]!.last)];
      expect(all.filter((last) => last === true)).toHaveLength(1);
    });

  test.each(['sync', 'async'] as const)('a %s arrival that times out breaks the barrier for the others', async (how) => {
    const table = LockTable.create({ slots: 8 });
    const b = table.barrier('b', 3);
    const ctl = control();
    const a = party(table, ctl, 3, { how: 'sync', timeout: 10_000 });
    await poll('A waits', () => b.arrived === 1);
    const t0 = performance.now();
    if (how === 'sync') expect(() => b.arriveSync({ timeout: 50 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    else await expect(b.arrive({ timeout: 50 })).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(49);
    expect((await a.report).outcomes).toEqual([broken('a party timed out')]);
    expect(b.broken).toBe(true);
    expect(b.arrived).toBe(2); // the broken generation's count stays as it was, for diagnosis
    expect(() => b.arriveSync({ timeout: 10_000 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_BARRIER_BROKEN' }));
  });

  test('timeout 0 fails at once unless the arrival completes the generation', async () => {
    const table = LockTable.create({ slots: 8 });
    expect(table.barrier('one', 1).arriveSync({ timeout: 0 })).toBe(true);
    expect(await table.barrier('one', 1).arrive({ timeout: 0 })).toBe(true);
    const b = table.barrier('two', 2);
    expect(() => b.arriveSync({ timeout: 0 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    expect(b.broken).toBe(true);
  });

  test('an abort while arriving rejects with AbortError and breaks the barrier for the others', async () => {
    const table = LockTable.create({ slots: 8 });
    const b = table.barrier('b', 3);
    const ctl = control();
    const a = party(table, ctl, 3, { how: 'async', timeout: 10_000 });
    await poll('A waits', () => b.arrived === 1);
    const ac = new AbortController(), reason = new Error('enough');
    const pending = b.arrive({ signal: ac.signal });
    setTimeout(() => ac.abort(reason), 20);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError', cause: reason });
    expect((await a.report).outcomes).toEqual([broken('a party was aborted')]);
    expect(b.broken).toBe(true);
  });

  test('reset() breaks a generation that parties wait in; they can arrive again at once', async () => {
    const table = LockTable.create({ slots: 8 });
    const b = table.barrier('b', 2);
    const ctl = control();
    const a = party(table, ctl, 2, { how: 'sync', retry: true, timeout: 10_000 });
    await poll('A waits', () => b.arrived === 1);
    b.reset();
    expect(b.arrived).toBe(0);
    await poll('A arrives again by itself', () => b.arrived === 1); // reset() left 0
    expect(b.arriveSync({ timeout: 10_000 })).toBe(true);
    expect((await a.report).outcomes).toEqual([broken('it was reset'), expect.objectContaining({ ok: true, last: false })]);
    b.reset(); // intact and empty: nothing to do
    expect(b.broken).toBe(false);
  });

  test('a member that exits normally breaks the barrier for the next generation; reset() after its exit repairs it', async () => {
    const table = LockTable.create({ slots: 8 });
    const b = table.barrier('b', 2);
    const ctl = control();
    const a = party(table, ctl, 2, { how: 'sync' });
    expect(typeof (await b.arrive({ timeout: 10_000 }))).toBe('boolean');
    await a.report;
    await a.gone;
    await expect(b.arrive()).rejects.toMatchObject({ code: 'ERR_LOCK_BARRIER_BROKEN' });
    b.reset();
    const a2 = party(table, ctl, 2, { how: 'async' });
    await b.arrive({ timeout: 10_000 });
    expect((await a2.report).outcomes).toEqual([expect.objectContaining({ ok: true })]);
  });

  test('a blocking arrival that would close a cycle with a party blocked on this thread\'s mutex fails with ERR_LOCK_DEADLOCK on one side', async () => {
    const table = LockTable.create({ slots: 8 });
    const b = table.barrier('b', 2), m = table.mutex('m');
    const ctl = control();
    const w = start('barrier-roles', { role: 'deadlock', table: table.buffer, control: ctl.buffer, parties: 2 });
    const report = result<{ first: Outcome; locked: boolean; code?: string; second?: Outcome }>(w);
    await b.arrive({ timeout: 10_000 }); // generation 1 with the worker: both are members now
    await until(ctl, 0, 1);
    const g = m.lockSync();
    Atomics.store(ctl, 1, 1);
    Atomics.notify(ctl, 1);
    await until(ctl, 2, 1); // the worker is about to block on m
    let mine: unknown = 'passed';
    try { b.arriveSync({ timeout: 10_000 }); } catch (err) { mine = (err as { code?: string }).code; }
    g.unlock();
    const theirs = await report;
    // This thread refused to wait for a party blocked on its mutex (and broke the barrier),
    // or the worker refused to block on the mutex of a thread waiting for it, or both: each
    // walks the graph after recording its own wait, so two walks at once can both close it.
    const refused = [mine, theirs.code].filter((c) => c === 'ERR_LOCK_DEADLOCK');
    expect(refused.length).toBeGreaterThanOrEqual(1);
    if (mine !== 'ERR_LOCK_DEADLOCK') expect(theirs).toMatchObject({ locked: false, code: 'ERR_LOCK_DEADLOCK', second: { ok: true } });
    else if (theirs.code !== 'ERR_LOCK_DEADLOCK') expect(theirs).toMatchObject({ locked: true });
  });
});

describe('Barrier bad input', () => {
  test('bad parties and options throw (sync) or reject (async) with stable codes before the barrier is touched', async () => {
    const table = LockTable.create({ slots: 8 });
    for (const [parties, code] of [[0, 'ERR_OUT_OF_RANGE'], [4096, 'ERR_OUT_OF_RANGE'], [1.5, 'ERR_OUT_OF_RANGE'], [NaN, 'ERR_OUT_OF_RANGE'], ['2', 'ERR_INVALID_ARG_TYPE'], [undefined, 'ERR_INVALID_ARG_TYPE']] as const) {
      expect(() => table.barrier('x', parties as never)).toThrow(expect.objectContaining({ code }));
    }
    const b = table.barrier('b', 2);
    expect(b.parties).toBe(2);
    expect(() => table.barrier('b', 3)).toThrow(expect.objectContaining({ code: 'ERR_LOCK_SLOT_IN_USE' }));
    expect(() => table.mutex('b')).toThrow(expect.objectContaining({ code: 'ERR_LOCK_SLOT_IN_USE' }));
    for (const [options, code] of [
      [{ timeout: -1 }, 'ERR_OUT_OF_RANGE'], [{ timeout: NaN }, 'ERR_OUT_OF_RANGE'], [{ timeout: '5' }, 'ERR_INVALID_ARG_TYPE'],
      [{ signal: {} }, 'ERR_INVALID_ARG_TYPE'], ['x', 'ERR_INVALID_ARG_TYPE'],
    ] as const) {
      expect(() => b.arriveSync(options as never)).toThrow(expect.objectContaining({ code }));
      await expect(b.arrive(options as never)).rejects.toMatchObject({ code });
    }
    const signal = AbortSignal.abort(new Error('no'));
    await expect(b.arrive({ signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(b.arrived).toBe(0);
    expect(b.broken).toBe(false);
    expect(table.stats('b')!.holders).toEqual([]); // not even a member yet
  });

  test('a thread cannot arrive twice in one generation: ERR_LOCK_DEADLOCK, and its first arrival is unharmed', async () => {
    const table = LockTable.create({ slots: 8 });
    const b = table.barrier('b', 2);
    const ctl = control();
    const first = b.arrive({ timeout: 10_000 });
    await expect(b.arrive()).rejects.toMatchObject({ code: 'ERR_LOCK_DEADLOCK' });
    expect(() => b.arriveSync()).toThrow(expect.objectContaining({ code: 'ERR_LOCK_DEADLOCK' }));
    expect(b.arrived).toBe(1);
    const a = party(table, ctl, 2, { how: 'sync' });
    expect(await first).toBe(false);
    expect((await a.report).outcomes).toEqual([expect.objectContaining({ ok: true, last: true })]);
  });
});

describe('Barrier tryArrive', () => {
  test('tryArrive() completes a generation only when every other party waits, and otherwise changes nothing', async () => {
    const table = LockTable.create({ slots: 8 });
    const b = table.barrier('b', 2);
    const ctl = control();
    expect(b.tryArrive()).toBe(false);
    expect(b.arrived).toBe(0);
    expect(b.broken).toBe(false);
    const a = party(table, ctl, 2, { how: 'sync', timeout: 10_000 });
    await poll('A waits', () => b.arrived === 1);
    // This thread only tried: it is no party, so A waits for nobody it knows of.
    expect(table.stats('b')!.holders).toEqual([]);
    expect(b.tryArrive()).toBe(true);
    expect((await a.report).outcomes).toEqual([expect.objectContaining({ ok: true, last: false })]);
    expect(table.stats('b')!.holders).toContain(table.threadId); // a member now, not arriving
    await a.gone;
    expect(() => b.tryArrive()).toThrow(expect.objectContaining({ code: 'ERR_LOCK_BARRIER_BROKEN' })); // A's exit broke it
  });
});
