// diagnostics_channel events beyond grants and releases: a timeout, an
// abort, a steal (the stealer's latchkey:steal, the victim's latchkey:lost),
// all in the thread where they happen; and locks.stats(), the counters of
// what was taken through `locks`. And what it costs while nobody listens:
// no clock is read (checked by counting performance.now() calls in a
// child process).
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { describe, expect, test } from 'vitest';
import { locks } from '../src/index.js';

const root = new URL('..', import.meta.url);

/** Collect the messages of `channels` while `fn` runs. */
async function collect(channels: string[], fn: () => Promise<void>): Promise<Array<[string, Record<string, unknown>]>> {
  const seen: Array<[string, Record<string, unknown>]> = [];
  const handlers = channels.map((c) => [c, (m: unknown) => seen.push([c.replace('latchkey:', ''), m as Record<string, unknown>])] as const);
  for (const [c, h] of handlers) subscribe(c, h);
  try {
    await fn();
  } finally {
    for (const [c, h] of handlers) unsubscribe(c, h);
  }
  return seen;
}

const ALL = ['acquire', 'release', 'contention', 'timeout', 'abort', 'steal', 'lost'].map((c) => `latchkey:${c}`);
let n = 0;
const unique = (what: string) => `observe-events:${what}:${process.pid}:${n++}`;

describe('latchkey:timeout, latchkey:abort, latchkey:steal, latchkey:lost', () => {
  test('a request that times out: contention, then timeout with the timeout and the time waited; no acquire', async () => {
    const name = unique('timeout');
    const g = await locks.lock(name);
    const seen = await collect(ALL, async () => {
      const err = await locks.request(name, { timeout: 30 }, () => {}).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    });
    g.unlock();
    expect(seen.map(([c]) => c)).toEqual(['contention', 'timeout']);
    expect(seen[1]![1]).toMatchObject({ name, mode: 'exclusive', scope: 'thread', timeout: 30 });
    expect(seen[1]![1].waitedMs as number).toBeGreaterThanOrEqual(25);
  });

  test('lockSync() that times out publishes latchkey:timeout too (a worker holds the lock)', async () => {
    const name = unique('timeout-sync');
    const w = new Worker(`
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(new URL('dist/src/index.js', root).href)}).then(async ({ locks }) => {
        const g = await locks.lock(${JSON.stringify(name)});
        parentPort.postMessage('held');
        parentPort.once('message', () => { g.unlock(); parentPort.postMessage('released'); });
      });`, { eval: true });
    await new Promise((r) => w.once('message', r));
    const seen = await collect(ALL, async () => {
      expect(() => locks.lockSync(name, { timeout: 20 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    });
    w.postMessage('go');
    await new Promise((r) => w.once('message', r));
    await w.terminate();
    expect(seen.map(([c]) => c)).toEqual(['timeout']);
    expect(seen[0]![1]).toMatchObject({ name, scope: 'thread', timeout: 20 });
  });

  test('an aborted request: contention, then abort with the signal\'s reason', async () => {
    const name = unique('abort');
    const g = await locks.lock(name);
    const controller = new AbortController(), reason = new Error('changed my mind');
    const seen = await collect(ALL, async () => {
      const pending = locks.request(name, { signal: controller.signal }, () => {}).catch((e: unknown) => e);
      await null;
      controller.abort(reason);
      expect(await pending).toBe(reason);
    });
    g.unlock();
    expect(seen.map(([c]) => c)).toEqual(['contention', 'abort']);
    expect(seen[1]![1]).toMatchObject({ name, mode: 'exclusive', scope: 'thread', reason });
  });

  test('a steal: the holder\'s lost (reason stolen, token, heldMs), then the stealer\'s acquire and steal', async () => {
    const name = unique('steal');
    const seen = await collect(ALL, async () => {
      let held!: () => void;
      const holding = new Promise<void>((r) => (held = r));
      const victim = locks.request(name, async (lock) => {
        held();
        await new Promise((r) => lock.signal.addEventListener('abort', r));
      }).catch((e: unknown) => e);
      await holding;
      expect(await locks.request(name, { steal: true }, (lock) => lock.token)).toBeGreaterThan(0);
      expect(await victim).toMatchObject({ name: 'AbortError', reason: 'stolen' });
    });
    const kinds = seen.map(([c]) => c);
    expect(kinds.filter((c) => c !== 'release')).toEqual(['acquire', 'lost', 'acquire', 'steal']);
    const lost = seen.find(([c]) => c === 'lost')![1], steal = seen.find(([c]) => c === 'steal')![1];
    const [first, second] = seen.filter(([c]) => c === 'acquire').map(([, m]) => m);
    expect(lost).toMatchObject({ name, mode: 'exclusive', scope: 'thread', reason: 'stolen', token: first!.token });
    expect(lost.heldMs as number).toBeGreaterThanOrEqual(0);
    expect(steal).toMatchObject({ name, mode: 'exclusive', scope: 'thread', token: second!.token });
  });

  test('nobody listening: the front door reads no clock (the events cost a few property reads)', () => {
    // Counted: calls made by the front door's own files (the queue engine reads it for its deadlines).
    const script = `
      let calls = 0;
      const now = performance.now.bind(performance);
      performance.now = () => {
        const caller = new Error().stack.split('\\n')[2] ?? '';
        if (/dist\\/src\\/(locks|lock-guard|observe)\\.js/.test(caller)) calls++;
        return now();
      };
      const dc = await import('node:diagnostics_channel');
      const { locks } = await import(${JSON.stringify(new URL('dist/src/index.js', root).href)});
      const run = async () => {
        for (let i = 0; i < 200; i++) locks.lockSync('x').unlock();
        for (let i = 0; i < 200; i++) await locks.request('x', () => {});
        for (let i = 0; i < 200; i++) (await locks.lock('x')).unlock();
      };
      await run();
      const quiet = calls;
      const h = () => {};
      dc.subscribe('latchkey:release', h);
      await run();
      console.log(JSON.stringify({ quiet, listened: calls - quiet }));
    `;
    const env = { ...process.env };
    delete env.NODE_DEBUG;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env, timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    const { quiet, listened } = JSON.parse(r.stdout) as { quiet: number; listened: number };
    expect(quiet).toBe(0);
    expect(listened).toBeGreaterThanOrEqual(1200); // the control: a grant and a release each read it
  });
});

describe('locks.stats()', () => {
  test('counts the grants taken through locks, in every thread, and the contended ones', async () => {
    const name = unique('stats');
    expect(locks.stats(name)).toBeUndefined();
    for (let i = 0; i < 5; i++) await locks.request(name, () => {});
    const worker = new Worker(`
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(new URL('dist/src/index.js', root).href)}).then(async ({ locks }) => {
        for (let i = 0; i < 7; i++) locks.lockSync(${JSON.stringify(name)}).unlock();
        parentPort.postMessage('done');
      });`, { eval: true });
    await new Promise((r) => worker.once('message', r));
    await worker.terminate();
    // One contended grant: the second request waits for the first.
    let release!: () => void;
    const first = locks.request(name, () => new Promise<void>((r) => (release = r)));
    const second = locks.request(name, () => {});
    // A 5 ms hold: the second request's wait is long enough to be timed (waits won by spinning add no time).
    await new Promise((r) => setTimeout(r, 5));
    release();
    await Promise.all([first, second]);
    const s = locks.stats(name)!;
    expect(s).toMatchObject({ name, kind: 'queue', acquisitions: 14, contended: 1 });
    expect(s.waitNs).toBeGreaterThan(0);
    expect(locks.stats().find((x) => x.name === name)).toEqual(s);
    expect(locks.stats({ scope: 'thread' }).some((x) => x.name === name)).toBe(true);
  });

  test('a name with a lone surrogate is reported by its name; bad arguments throw with a code', async () => {
    const name = `${unique('surrogate')}\uD800`;
    await locks.request(name, () => {});
    expect(locks.stats(name)).toMatchObject({ name, acquisitions: 1 });
    expect(locks.stats().some((x) => x.name === name)).toBe(true);
    expect(() => locks.stats(5 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => locks.stats({ scope: 'galaxy' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });
});
