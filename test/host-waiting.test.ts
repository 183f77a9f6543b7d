// Host scope, how a process waits for another (issue 13), with real
// processes on both backends: a timeout is honoured and the request leaves
// the queue; an abort rejects at once and leaves it; a blocking lockSync()
// on the main thread gives up at its deadline (the lease keeper ticks its
// FIFO) and is woken by the release itself, not by a poll; after a holder's
// SIGKILL it is granted within 1 s, told abandoned; a dead process's FIFO
// goes back to the pool. And a stress run: 4 processes, exclusive sections
// with a read-modify-write of a counter file, every hand-over timed.
import { afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { encodeName } from '../src/bridge/host/file-dir.js';
import { type Backend, cleanup, freshDir, hostChild, hr, msBetween } from './fixtures/host-util.js';
import { expectExclusive, rmwRun } from './fixtures/tier-util.js';

afterEach(cleanup);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waiters queued for `name` at the backend. */
function queued(backend: Backend, dir: string, name: string): number {
  if (backend === 'file') {
    const q = join(dir, encodeName(name), 'q');
    return fs.existsSync(q) ? fs.readdirSync(q).filter((e) => fs.existsSync(join(q, e, 'r'))).length : 0;
  }
  const db = new Database(join(dir, 'locks.db'), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare("SELECT count(*) AS n FROM holders WHERE name = ? AND state = 'waiting'").get(name) as { n: number }).n;
  } finally {
    db.close();
  }
}

describe.each(['file', 'sqlite'] as const)('host waiting (%s backend)', (backend: Backend) => {
  test('lock({ timeout: 200 }) rejects ERR_LOCK_TIMEOUT near its deadline and leaves the queue; the name is usable after', async () => {
    const dir = freshDir();
    const [h, c] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    const held = await h.call('lock', { key: 'h', name: 'to' });
    const r = await c.call('lock', { key: 'c', name: 'to', opts: { timeout: 200 } });
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    const took = msBetween(r.t0, r.at);
    expect(took).toBeGreaterThanOrEqual(195);
    expect(took).toBeLessThan(600);
    expect(queued(backend, dir, 'to')).toBe(0);
    await h.call('unlock', { key: 'h' });
    const g = await c.call('lock', { key: 'c2', name: 'to', opts: { timeout: 2000 } });
    expect(g).toMatchObject({ granted: true, abandoned: false });
    expect(g.token).toBeGreaterThan(held.token);
  }, 30_000);

  test('an aborted wait rejects with the signal\'s reason at once and leaves the queue', async () => {
    const dir = freshDir();
    const [h, c] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    await h.call('lock', { key: 'h', name: 'ab' });
    const r = await c.call('lock', { key: 'c', name: 'ab', opts: { abortAfterMs: 100 } });
    expect(r).toMatchObject({ granted: false, error: { message: 'stop' } });
    expect(msBetween(r.abortedAt, r.at), 'from the abort to the rejection').toBeLessThan(20);
    expect(queued(backend, dir, 'ab')).toBe(0);
  }, 30_000);

  test('lockSync({ timeout: 300 }) on the main thread throws ERR_LOCK_TIMEOUT on time (the keeper ticks its blocked read)', async () => {
    const dir = freshDir();
    const [h, c] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    await h.call('lock', { key: 'h', name: 'sync' });
    await c.call('lock', { key: 'warm', name: 'warm' }); // its keeper runs
    await sleep(300);
    const r = await c.call('lockSync', { key: 'c', name: 'sync', opts: { timeout: 300 } });
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    const took = msBetween(r.t0, r.at);
    expect(took).toBeGreaterThanOrEqual(295);
    expect(took).toBeLessThan(800);
    expect(queued(backend, dir, 'sync')).toBe(0);
  }, 30_000);

  test('a blocked lockSync() is woken by the release itself, not by a 100 ms poll (median of 10 hand-overs)', async () => {
    const dir = freshDir();
    const [h, c] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    await c.call('lock', { key: 'warm', name: 'warm' });
    await sleep(300); // its keeper runs: the blocked read is ticked, not polled every ms
    const gaps: number[] = [];
    for (let i = 0; i < 10; i++) {
      await h.call('lock', { key: 'h', name: 'wake' });
      const p = c.call('lockSync', { key: `c${i}`, name: 'wake', opts: { timeout: 5000 } });
      await (async () => {
        while (queued(backend, dir, 'wake') === 0) await sleep(2);
      })();
      await sleep(20); // blocked in its read by now
      const u = await h.call('unlock', { key: 'h' });
      const g = await p;
      expect(g).toMatchObject({ granted: true });
      gaps.push(msBetween(u.t0, g.at));
      await c.call('unlock', { key: `c${i}` });
    }
    gaps.sort((a, b) => a - b);
    console.log(`[${backend}] release → blocked lockSync granted: median ${gaps[5]!.toFixed(2)} ms, max ${gaps[9]!.toFixed(2)} ms`);
    // A poll would take 75–125 ms; a tick 100 ms.
    expect(gaps[5]).toBeLessThan(50);
  }, 60_000);

  test('a lockSync() waiting when the holder is SIGKILLed is granted within 1 s, told abandoned', async () => {
    const dir = freshDir();
    const [h, c] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    await c.call('lock', { key: 'warm', name: 'warm' });
    await h.call('lock', { key: 'h', name: 'dead' });
    const p = c.call('lockSync', { key: 'c', name: 'dead', opts: { timeout: 5000 } });
    while (queued(backend, dir, 'dead') === 0) await sleep(2);
    await sleep(20);
    const killed = hr();
    h.kill('SIGKILL');
    const g = await p;
    expect(g).toMatchObject({ granted: true, abandoned: true });
    expect(msBetween(killed, g.at)).toBeLessThan(1000);
  }, 30_000);

  test('a dead process\'s FIFOs go back to the pool when the next process waits', async () => {
    const dir = freshDir();
    const [h, w] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    await h.call('lock', { key: 'h', name: 'fifo' });
    expect(await w.call('request', { key: 'w', name: 'fifo', opts: { timeout: 10_000 } })).toMatchObject({ queued: true });
    while (queued(backend, dir, 'fifo') === 0) await sleep(2);
    const mine = () => fs.readdirSync(join(dir, '.fifo')).filter((f) => f.startsWith(`${w.pid}-`));
    expect(mine().length).toBeGreaterThan(0);
    w.kill('SIGKILL');
    await w.exited;
    const next = await hostChild(backend, dir);
    expect(await next.call('lock', { key: 'n', name: 'fifo', opts: { timeout: 300 } })).toMatchObject({ granted: false }); // it waits: it claims a FIFO
    expect(mine()).toEqual([]);
  }, 30_000);

  test('stress: 4 processes × 250 exclusive sections, a counter file read-modified-written inside: exact, no overlap, tokens in grant order', async () => {
    const env = { LATCHKEY_DIR: freshDir(), LATCHKEY_BACKEND: backend };
    const run = await rmwRun('host', env, freshDir('lk-work-'), 4, { name: 'stress', iterations: 250, mix: 'x', window: true });
    const switches = expectExclusive(run, 4, 250);
    // Hand-overs between processes: the gap from one holder's exit to the next one's enter.
    const gaps: number[] = [];
    for (let i = 1; i < run.all.length; i++) {
      if (run.all[i]!.pid !== run.all[i - 1]!.pid) gaps.push(Number(run.all[i]!.enter - run.all[i - 1]!.exit) / 1e6);
    }
    gaps.sort((a, b) => a - b);
    const p50 = gaps[Math.floor(gaps.length / 2)] ?? 0, max = gaps.at(-1) ?? 0;
    console.log(`[${backend}] ${Math.round(1000 / run.ms * 1000)} sections/s, ${switches} changes of process, hand-over p50 ${p50.toFixed(2)} ms, max ${max.toFixed(1)} ms`);
  }, 60_000);
});
