// GuardedCache: a missing key is computed once however many threads (scope
// 'thread') or processes (scope 'host') ask for it at once; every caller
// gets that one value. Real threads and real processes; computations are
// counted in shared memory (threads) or in a file (processes).
import { createHash } from 'node:crypto';
import { afterAll, describe, expect, test, vi } from 'vitest';
import { Worker } from 'node:worker_threads';
import { fork } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { locks } from '../src/index.js';
import { GuardedCache } from '../src/workers/cache.js';
import type { CacheJob, Outcome } from './fixtures/workers-cache.js';
import { control, fixture, result, signalWord, until } from './helpers.js';

vi.setConfig({ testTimeout: 20_000 });

// This file's own lock directory (and so its own store), inherited by its workers.
const dirs: string[] = [];
const freshDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'lk-cache-'));
  dirs.push(d);
  return d;
};
process.env.LATCHKEY_DIR = freshDir();
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

let unique = 0;
const uniqueName = (tag: string) => `${tag}-${++unique}`;

/** `threads` workers that each get `keys` at once, with a shared compute counter. */
async function race(threads: number, job: Omit<CacheJob, 'counter' | 'gate'>) {
  const counter = new SharedArrayBuffer(4), gate = control(2);
  const data: CacheJob = { ...job, counter, gate: gate.buffer as SharedArrayBuffer };
  const workers = Array.from({ length: threads }, () => new Worker(fixture('workers-cache'), { workerData: data }));
  try {
    const reports = workers.map((w) => result<Outcome[]>(w));
    await until(gate, 0, threads);
    signalWord(gate, 1); // everyone asks at once
    return { outcomes: await Promise.all(reports), computes: new Int32Array(counter)[0] };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

describe('GuardedCache.get() across threads (scope thread)', () => {
  test('8 threads ask for one missing key at once: computed once, every thread gets that value', async () => {
    const { outcomes, computes } = await race(8, { name: uniqueName('one'), options: {}, keys: ['k'], delayMs: 100 });
    expect(computes).toBe(1);
    const values = outcomes.map((o) => o[0]);
    for (const v of values) expect(v.ok).toBe(true);
    const first = (values[0] as { value: unknown }).value;
    for (const v of values) expect((v as { value: unknown }).value).toEqual(first);
    expect(first).toMatchObject({ key: 'k', n: 0 });
    expect((first as { at: unknown }).at).toBeInstanceOf(Date); // structured clone keeps a Date a Date
  });

  test('8 threads ask for 6 keys at once: each key computed once', async () => {
    const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
    const { outcomes, computes } = await race(8, { name: uniqueName('many'), options: {}, keys, delayMs: 20 });
    expect(computes).toBe(keys.length);
    keys.forEach((key, i) => {
      const seen = new Set(outcomes.map((o) => JSON.stringify(o[i])));
      expect(seen.size).toBe(1);
      expect(outcomes[0][i]).toMatchObject({ ok: true, value: { key } });
    });
    // Every key got its own compute: the numbers 0..5, once each.
    expect(keys.map((_, i) => (outcomes[0][i] as { value: { n: number } }).value.n).sort()).toEqual([0, 1, 2, 3, 4, 5]);
  });

  test('a compute that throws: that caller gets the error, the key is released, and a waiter computes it instead', async () => {
    const { outcomes, computes } = await race(4, { name: uniqueName('fail'), options: {}, keys: ['k'], delayMs: 50, failFirst: true });
    const failed = outcomes.filter((o) => !o[0].ok), ok = outcomes.filter((o) => o[0].ok);
    expect(failed).toHaveLength(1);
    expect(failed[0][0]).toEqual({ ok: false, message: 'compute 0 of k failed' });
    // The failed compute stored nothing; the next holder computed (n = 1), the rest got its value.
    expect(computes).toBe(2);
    for (const o of ok) expect(o[0]).toMatchObject({ ok: true, value: { key: 'k', n: 1 } });
  });
});

describe('GuardedCache.get() when the computing thread dies', () => {
  test('a thread terminated mid-compute releases the key: the waiting caller computes it', async () => {
    const name = uniqueName('dead'), counter = new SharedArrayBuffer(4), gate = control(2);
    const job: CacheJob = { name, options: {}, keys: ['k'], counter, gate: gate.buffer as SharedArrayBuffer, delayMs: 30_000 };
    const w = new Worker(fixture('workers-cache'), { workerData: job });
    w.on('error', () => {});
    await until(gate, 0, 1);
    signalWord(gate, 1);
    await until(new Int32Array(counter), 0, 1); // the worker holds the key's lock, computing
    const mine = new GuardedCache<unknown>(name).get('k', () => 'computed here');
    const lockName = `cache:${name}:${createHash('sha256').update('k', 'utf16le').digest('base64url')}`;
    // Wait until this thread's request is queued behind the worker's, then kill the worker.
    for (;;) {
      const { pending } = await locks.query();
      if (pending.some((l) => l.name === lockName)) break;
      await new Promise((r) => setImmediate(r));
    }
    await w.terminate();
    expect(await mine).toBe('computed here');
  });
});

describe('GuardedCache.get() in one thread', () => {
  test('the longest name a cache may have (64 characters) still makes a lock name within 128 bytes', async () => {
    const name = uniqueName('long').padEnd(64, 'x');
    const cache = new GuardedCache<string>(name);
    expect(await cache.get('k', () => 'v')).toBe('v');
    expect(await new GuardedCache<string>(name).get('k', () => 'computed again')).toBe('v'); // from the store
  });

  test('a compute that throws lets the next caller compute; its value is kept after that', async () => {
    const cache = new GuardedCache<number>(uniqueName('retry'));
    await expect(cache.get('k', () => {
      throw new Error('boom');
    })).rejects.toThrow('boom');
    await expect(cache.get('k', () => Promise.reject(new Error('again')))).rejects.toThrow('again');
    expect(await cache.get('k', () => 42)).toBe(42);
    expect(await cache.get('k', () => 43)).toBe(42);
  });

  test('ttl: a fresh entry is served locally and from the store; an expired one is computed again, in both', async () => {
    const name = uniqueName('ttl');
    const a = new GuardedCache<string>(name, { ttl: 150 });
    let computes = 0;
    const compute = () => `v${++computes}`;
    expect(await a.get('k', compute)).toBe('v1');
    expect(await a.get('k', compute)).toBe('v1'); // local
    expect(await new GuardedCache<string>(name, { ttl: 150 }).get('k', compute)).toBe('v1'); // another local cache: the store
    await sleep(200);
    expect(await a.get('k', compute)).toBe('v2'); // expired locally and in the store
    expect(await new GuardedCache<string>(name, { ttl: 150 }).get('k', compute)).toBe('v2');
    expect(computes).toBe(2);
  });

  test('a compute may get() other keys of its cache (their own locks)', async () => {
    const cache = new GuardedCache<number>(uniqueName('nested'));
    const v = await cache.get('sum', async () => (await cache.get('a', () => 1)) + (await cache.get('b', async () => 2)));
    expect(v).toBe(3);
    expect(await cache.get('a', () => 100)).toBe(1);
  });

  test('undefined and null are values like any other; a value that cannot be cloned rejects', async () => {
    const cache = new GuardedCache<unknown>(uniqueName('values'));
    expect(await cache.get('u', () => undefined)).toBeUndefined();
    expect(await cache.get('u', () => 'computed again')).toBeUndefined();
    expect(await cache.get('n', () => null)).toBeNull();
    await expect(cache.get('f', () => () => 1)).rejects.toThrow(/could not be cloned/);
    expect(await cache.get('f', () => 'after')).toBe('after');
  });

  test('delete() and clear() drop entries from the local cache and the store', async () => {
    const name = uniqueName('drop');
    const cache = new GuardedCache<number>(name);
    expect(await cache.get('a', () => 1)).toBe(1);
    expect(await cache.get('b', () => 2)).toBe(2);
    expect(await cache.delete('a')).toBe(true);
    expect(await cache.delete('a')).toBe(false);
    expect(await cache.get('a', () => 10)).toBe(10);
    expect(await new GuardedCache<number>(name).get('a', () => 99)).toBe(10);
    await cache.clear();
    expect(readdirSync(cache.dir)).toEqual([]);
    expect(await cache.get('a', () => 20)).toBe(20);
    expect(await cache.get('b', () => 30)).toBe(30);
  });

  test('bad input: the constructor throws, get() rejects', async () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return (err as { code?: string }).code;
      }
      return undefined;
    };
    expect(code(() => new GuardedCache('../up'))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => new GuardedCache('.hidden'))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => new GuardedCache(7 as unknown as string))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => new GuardedCache('x', { ttl: 0 }))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => new GuardedCache('x', { ttl: Number.NaN }))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => new GuardedCache('x', { max: 0 }))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => new GuardedCache('x', { scope: 'cluster' as 'host' }))).toBe('ERR_INVALID_ARG_VALUE');
    const cache = new GuardedCache<number>(uniqueName('bad'));
    await expect(cache.get(1 as unknown as string, () => 1)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(cache.get('k', 1 as unknown as () => number)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });
});

describe('GuardedCache.get() across processes (scope host)', () => {
  test('3 child processes ask for one missing key at once: computed once, all get that value', async () => {
    const dir = freshDir(), work = freshDir();
    const log = join(work, 'computes');
    writeFileSync(log, '');
    const kids = Array.from({ length: 3 }, () => fork(fixture('workers-cache-child'), [], {
      env: { ...process.env, LATCHKEY_DIR: dir },
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }));
    type Report = { ev: string; value?: { pid: number }; computed?: boolean; message?: string };
    const next = (c: (typeof kids)[number], ev: string) => new Promise<Report>((resolve, reject) => {
      const onMessage = (m: Report) => {
        if (m.ev === ev || m.ev === 'failed') {
          c.off('message', onMessage);
          resolve(m);
        }
      };
      c.on('message', onMessage);
      c.once('exit', (code) => reject(new Error(`child exited (${code}) before ${ev}`)));
    });
    try {
      await Promise.all(kids.map((c) => next(c, 'ready')));
      const done = kids.map((c) => next(c, 'done'));
      for (const c of kids) c.send({ op: 'go', name: 'host-once', key: 'k', log, delayMs: 300 });
      const reports = await Promise.all(done);
      for (const r of reports) expect(r.ev).toBe('done');
      expect(readFileSync(log, 'utf8').trim().split('\n')).toHaveLength(1);
      expect(reports.filter((r) => r.computed)).toHaveLength(1);
      const computer = reports.find((r) => r.computed)!.value!.pid;
      for (const r of reports) expect(r.value).toMatchObject({ pid: computer });
    } finally {
      for (const c of kids) c.kill();
    }
  });
});
