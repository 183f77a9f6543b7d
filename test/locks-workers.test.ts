// locks.request() / locks.query() across real worker threads: one lock
// manager for every thread of the process.
import { afterEach, describe, expect, test, vi } from 'vitest';
import { threadId, type Worker } from 'node:worker_threads';
import { locks } from '../src/index.js';
import type { LockInfo } from '../src/index.js';
import { control, exited, result, signalWord, start, until } from './helpers.js';
import { deferred, hold, namer, turns } from './locks-helpers.js';

// A lock that is never granted should fail a test in seconds, not after the global minute.
vi.setConfig({ testTimeout: 10_000 });

const uniqueName = namer('locks-workers');

const named = (list: LockInfo[], name: string) => list.filter((l) => l.name === name);
const mainClientId = `${process.pid}:${threadId}`;
const clientIdOf = (w: Worker) => `${process.pid}:${w.threadId}`;

interface RoleReport {
  events: string[];
  token: number;
  abandoned: boolean;
  clientId: string;
}

const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
});

/** Start a locks-roles worker; its control words (see the fixture) and its report. */
function role(data: { role: 'hold' | 'hold-blocking'; name: string; mode?: string; steal?: boolean; inner?: string }) {
  const ctl = control(8);
  const w = start('locks-roles', { ...data, control: ctl.buffer });
  workers.push(w);
  w.on('error', () => {});
  const report = result<RoleReport>(w);
  report.catch(() => {}); // terminated workers never report
  return { w, ctl, report, release: () => signalWord(ctl, 2) };
}

describe('locks.request() across worker threads', () => {
  async function race(mode: 'exclusive' | 'unlocked' | 'mixed', n: number, m: number) {
    const name = uniqueName(`counter-${mode}`);
    const counter = new SharedArrayBuffer(24), tokens = new SharedArrayBuffer(8), gate = control(2);
    const ws = Array.from({ length: n }, () => start('locks-counter', { name, iterations: m, counter, tokens, gate: gate.buffer, mode }));
    workers.push(...ws);
    const reports = ws.map((w) => result<{ granted: number }>(w));
    await until(gate, 0, n);
    signalWord(gate, 1); // everyone starts at once
    const done = await Promise.all(reports);
    const { held, pending } = await locks.query();
    expect([...named(held, name), ...named(pending, name)]).toEqual([]);
    const c = new Int32Array(counter);
    return { count: c[0], violations: c[2], mostReaders: c[5], granted: done.map((r) => r.granted) };
  }

  test('locks.request(): 4 workers × 2000 requests with a non-atomic read-modify-write inside lose no update', async () => {
    const r = await race('exclusive', 4, 2000);
    expect(r.count).toBe(8000);
    expect(r.granted).toEqual([2000, 2000, 2000, 2000]);
    expect(r.violations).toBe(0); // every grant's token above the one before it
  });

  test('locks.request(): the same read-modify-writes without the lock do lose updates (the test can see a race)', async () => {
    expect((await race('unlocked', 4, 200_000)).count).toBeLessThan(800_000);
  });

  test('locks.request(): 4 workers mixing shared and exclusive requests never see a writer beside anyone', async () => {
    const r = await race('mixed', 4, 1000);
    expect(r.violations).toBe(0);
    expect(r.count).toBe(1000); // 4 × 250 exclusive read-modify-writes
    expect(r.granted).toEqual([1000, 1000, 1000, 1000]);
  });

  test('locks.request(): a worker\'s request waits for a lock held by the main thread and is granted after release', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const r = role({ role: 'hold', name });
    await until(r.ctl, 0, 1); // the worker's request() has returned: it is queued
    await turns();
    expect(Atomics.load(r.ctl, 1)).toBe(0);
    expect(named((await locks.query()).pending, name)).toEqual([{ name, mode: 'exclusive', clientId: clientIdOf(r.w) }]);
    h.release();
    await h.done;
    await until(r.ctl, 1, 1);
    r.release();
    const report = await r.report;
    expect(report.events).toEqual(['granted', 'callback-end', 'resolved:value']);
    expect(report.token).toBeGreaterThan(h.lock!.token);
  });

  test('locks.request(): the main thread\'s request waits for a worker\'s lock and is granted after release', async () => {
    const name = uniqueName();
    const r = role({ role: 'hold', name });
    await until(r.ctl, 1, 1);
    let granted = false;
    const mine = locks.request(name, (l) => {
      granted = true;
      return l!.abandoned;
    });
    await turns();
    expect(granted).toBe(false);
    r.release();
    expect(await mine).toBe(false);
    await r.report;
  });

  test('locks.query(): the main thread sees a worker\'s held lock with the worker\'s clientId', async () => {
    const name = uniqueName();
    const r = role({ role: 'hold', name, mode: 'shared' });
    await until(r.ctl, 1, 1);
    const held = named((await locks.query()).held, name);
    expect(held).toEqual([{ name, mode: 'shared', clientId: clientIdOf(r.w) }]);
    expect(held[0].clientId).not.toBe(mainClientId);
    r.release();
    expect((await r.report).clientId).toBe(clientIdOf(r.w));
  });

  test('locks.query(): shared holders in two threads are listed with their own clientIds', async () => {
    const name = uniqueName();
    const h = await hold(name, { mode: 'shared' });
    const r = role({ role: 'hold', name, mode: 'shared' });
    await until(r.ctl, 1, 1); // granted alongside the main thread's shared lock
    const held = named((await locks.query()).held, name);
    expect(held.map((l) => l.clientId)).toEqual([mainClientId, clientIdOf(r.w)]);
    expect(held.every((l) => l.mode === 'shared')).toBe(true);
    r.release();
    h.release();
    await Promise.all([r.report, h.done]);
  });

  test('locks.query(): pending requests of two threads are listed in request order', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const r = role({ role: 'hold', name, mode: 'shared' });
    await until(r.ctl, 0, 1);
    const mine = locks.request(name, () => {});
    const pending = named((await locks.query()).pending, name);
    expect(pending).toEqual([
      { name, mode: 'shared', clientId: clientIdOf(r.w) },
      { name, mode: 'exclusive', clientId: mainClientId },
    ]);
    h.release();
    await until(r.ctl, 1, 1);
    r.release();
    await Promise.all([mine, r.report, h.done]);
  });

  test('locks.query(): can observe a deadlock between two threads', async () => {
    const a = uniqueName('a'), b = uniqueName('b');
    const ha = await hold(a);
    // The worker holds b, then asks for a.
    const r = role({ role: 'hold', name: b, inner: a });
    await until(r.ctl, 6, 1);
    const controller = new AbortController();
    const mine = locks.request(b, { signal: controller.signal }, () => 'never');
    const { held, pending } = await locks.query();
    const worker = clientIdOf(r.w);
    expect([...named(held, a), ...named(held, b)]).toEqual([
      { name: a, mode: 'exclusive', clientId: mainClientId },
      { name: b, mode: 'exclusive', clientId: worker },
    ]);
    expect([...named(pending, a), ...named(pending, b)]).toEqual([
      { name: a, mode: 'exclusive', clientId: worker },
      { name: b, mode: 'exclusive', clientId: mainClientId },
    ]);
    // Break it: this thread gives up waiting for b and lets a go.
    controller.abort();
    await expect(mine).rejects.toMatchObject({ name: 'AbortError' });
    ha.release();
    await until(r.ctl, 1, 1);
    r.release();
    expect((await r.report).events).toEqual(['granted', 'inner:inner', 'callback-end', 'resolved:value']);
    await ha.done;
  });

  test('locks.request(): a worker terminated while holding a lock releases it; the next holder sees lock.abandoned', async () => {
    const name = uniqueName();
    const r = role({ role: 'hold-blocking', name });
    await until(r.ctl, 1, 1);
    const next = locks.request(name, (l) => ({ abandoned: l!.abandoned, token: l!.token }));
    await turns();
    await r.w.terminate();
    const got = await next;
    expect(got.abandoned).toBe(true);
    // Only the first grant after the death says so.
    expect(await locks.request(name, (l) => l!.abandoned)).toBe(false);
    expect(named((await locks.query()).held, name)).toEqual([]);
  });

  test('locks.request(): a lock whose holder was terminated with nobody waiting is free, and its next grant is abandoned', async () => {
    const name = uniqueName();
    const r = role({ role: 'hold-blocking', name });
    await until(r.ctl, 1, 1);
    await r.w.terminate();
    expect(named((await locks.query()).held, name)).toEqual([]);
    expect(await locks.request(name, { ifAvailable: true }, (l) => l?.abandoned)).toBe(true);
  });

  test('locks.request(): a worker terminated while only waiting drops its request; the lock goes to the next one', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const r = role({ role: 'hold', name });
    await until(r.ctl, 0, 1);
    const mine = locks.request(name, (l) => l!.abandoned);
    expect(named((await locks.query()).pending, name).map((l) => l.clientId)).toEqual([clientIdOf(r.w), mainClientId]);
    await r.w.terminate();
    expect(Atomics.load(r.ctl, 1)).toBe(0); // never granted
    expect(named((await locks.query()).pending, name).map((l) => l.clientId)).toEqual([mainClientId]);
    h.release();
    expect(await mine).toBe(false); // the dead waiter never held it
    const { held, pending } = await locks.query();
    expect([...named(held, name), ...named(pending, name)]).toEqual([]);
  });

  test('locks.request(): a worker whose only work is awaiting a held lock stays alive until it is granted', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const ctl = control(2);
    const w = start('locks-await-only', { name, control: ctl.buffer });
    workers.push(w);
    let exitCode: number | undefined;
    const gone = exited(w).then((code) => (exitCode = code));
    const report = result<{ granted: boolean }>(w);
    report.catch(() => {});
    await until(ctl, 0, 1);
    // About time: a worker with nothing keeping its loop alive would exit within a few ms.
    await new Promise((r) => setTimeout(r, 100));
    expect(exitCode).toBeUndefined();
    expect(named((await locks.query()).pending, name).map((l) => l.clientId)).toEqual([clientIdOf(w)]);
    h.release();
    expect(await report).toEqual({ granted: true });
    expect(await gone).toBe(0);
  });

  test('locks.request() with steal: a worker holding the lock has its promise rejected and its lock.signal aborted', async () => {
    const name = uniqueName();
    const r = role({ role: 'hold', name });
    await until(r.ctl, 1, 1);
    const stealer = await hold(name, { steal: true });
    await until(r.ctl, 3, 1); // the worker's request() rejected
    await until(r.ctl, 5, 1); // and its lock.signal aborted
    expect(Atomics.load(r.ctl, 4)).toBe(0); // while its callback still runs
    expect(named((await locks.query()).held, name)).toEqual([{ name, mode: 'exclusive', clientId: mainClientId }]);
    r.release();
    const { events } = await r.report;
    expect(events[0]).toBe('granted');
    expect(events.slice(1, 3).sort()).toEqual(['rejected:DOMException:AbortError', 'signal:DOMException:AbortError']);
    expect(events[3]).toBe('callback-end');
    expect(events).toHaveLength(4);
    expect(stealer.lock!.signal.aborted).toBe(false);
    stealer.release();
    await stealer.done;
  });

  test('locks.request() with steal from a worker: the main thread\'s holder is rejected and its lock.signal aborts', async () => {
    const name = uniqueName();
    const h = await hold(name);
    const outcome = h.done.then(() => 'resolved', (e: unknown) => e);
    const aborted = deferred<unknown>();
    h.lock!.signal.addEventListener('abort', () => aborted.resolve(h.lock!.signal.reason));
    const r = role({ role: 'hold', name, steal: true });
    await until(r.ctl, 1, 1); // granted at once, though this thread holds it
    const err = await outcome;
    expect(err instanceof DOMException && err.name === 'AbortError', String(err)).toBe(true);
    expect(await aborted.promise).toBe(err);
    expect(named((await locks.query()).held, name)).toEqual([{ name, mode: 'exclusive', clientId: clientIdOf(r.w) }]);
    h.release(); // the stolen callback ends: the worker keeps the lock
    await turns();
    expect(await locks.request(name, { ifAvailable: true }, (l) => l !== null)).toBe(false);
    r.release();
    expect((await r.report).events).toEqual(['granted', 'callback-end', 'resolved:value']);
  });
});
