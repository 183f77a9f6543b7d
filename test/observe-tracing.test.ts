// TracingChannel 'latchkey:request': every front-door request as
// start / end / asyncStart / asyncEnd / error, so that an APM tool draws
// the wait (start → asyncStart) and the hold (asyncStart → asyncEnd) of a
// request() as spans; a store bound to `start` (as an OpenTelemetry-style
// tool binds its span) is the active context inside the callback.
import { AsyncLocalStorage } from 'node:async_hooks';
import { tracingChannel } from 'node:diagnostics_channel';
import { describe, expect, test } from 'vitest';
import { locks } from '../src/index.js';

interface Ctx {
  kind: string; name: string; mode: string; scope: string; ifAvailable: boolean; steal: boolean; timeout: number;
  granted?: boolean; token?: number; abandoned?: boolean; waitedMs?: number; heldMs?: number; result?: unknown; error?: unknown;
}

const tc = tracingChannel<unknown, Ctx>('latchkey:request');
let n = 0;
const unique = (what: string) => `observe-tracing:${what}:${process.pid}:${n++}`;

/** The tracing events (kind of event, context) while `fn` runs. */
async function trace(fn: () => Promise<void> | void): Promise<Array<[string, Ctx]>> {
  const seen: Array<[string, Ctx]> = [];
  const on = (event: string) => (ctx: Ctx) => seen.push([event, ctx]);
  const handlers = { start: on('start'), end: on('end'), asyncStart: on('asyncStart'), asyncEnd: on('asyncEnd'), error: on('error') };
  tc.subscribe(handlers);
  try {
    await fn();
  } finally {
    tc.unsubscribe(handlers);
  }
  return seen;
}

describe('TracingChannel latchkey:request', () => {
  test('request(): start, end, then asyncStart as the callback begins, asyncEnd once the lock is given back', async () => {
    const name = unique('request'), order: string[] = [];
    const seen = await trace(async () => {
      const p = locks.request(name, { mode: 'shared' }, (lock) => {
        order.push('callback');
        return lock.token;
      });
      order.push('returned');
      expect(await p).toBeGreaterThan(0);
    });
    expect(seen.map(([e]) => e)).toEqual(['start', 'end', 'asyncStart', 'asyncEnd']);
    expect(order).toEqual(['returned', 'callback']);
    const ctx = seen[0]![1];
    expect(seen.every(([, c]) => c === ctx)).toBe(true); // one context per request
    expect(ctx).toMatchObject({ kind: 'request', name, mode: 'shared', scope: 'thread', ifAvailable: false, steal: false, timeout: Infinity, granted: true, abandoned: false });
    expect(ctx.result).toBe(ctx.token);
    expect(ctx.waitedMs).toBe(0);
    expect(ctx.heldMs!).toBeGreaterThanOrEqual(0);
  });

  test('request() that waits: asyncStart comes when the holder lets go; waitedMs and heldMs measure the wait and the hold', async () => {
    const name = unique('wait');
    const g = await locks.lock(name);
    const marks: Array<[string, number]> = [];
    const seen = await trace(async () => {
      const p = locks.request(name, async () => {
        marks.push(['callback', performance.now()]);
        await new Promise((r) => setTimeout(r, 20)); // a 20 ms hold
      });
      await new Promise((r) => setTimeout(r, 20)); // a 20 ms wait
      marks.push(['unlock', performance.now()]);
      g.unlock();
      await p;
    });
    expect(seen.map(([e]) => e)).toEqual(['start', 'end', 'asyncStart', 'asyncEnd']);
    expect(marks.map(([m]) => m)).toEqual(['unlock', 'callback']);
    const ctx = seen[0]![1];
    expect(ctx.waitedMs!).toBeGreaterThanOrEqual(15);
    expect(ctx.heldMs!).toBeGreaterThanOrEqual(15);
  });

  test('request() that times out: start, end, error (ERR_LOCK_TIMEOUT), asyncStart, asyncEnd; never granted', async () => {
    const name = unique('timeout');
    const g = await locks.lock(name);
    const seen = await trace(async () => {
      await expect(locks.request(name, { timeout: 10 }, () => {})).rejects.toMatchObject({ code: 'ERR_LOCK_TIMEOUT' });
    });
    g.unlock();
    expect(seen.map(([e]) => e)).toEqual(['start', 'end', 'error', 'asyncStart', 'asyncEnd']);
    expect(seen[2]![1]).toMatchObject({ timeout: 10, error: expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }) });
    expect(seen[2]![1].granted).toBeUndefined();
  });

  test('request() whose callback throws: asyncStart, then error and asyncEnd (the lock given back)', async () => {
    const name = unique('throws'), boom = new Error('boom');
    const seen = await trace(async () => {
      await expect(locks.request(name, () => {
        throw boom;
      })).rejects.toBe(boom);
    });
    expect(seen.map(([e]) => e)).toEqual(['start', 'end', 'asyncStart', 'error', 'asyncEnd']);
    expect(seen[3]![1]).toMatchObject({ granted: true, error: boom });
    expect(locks.lockSync(name, { ifAvailable: true })?.unlock()).toBeUndefined(); // free again
  });

  test('ifAvailable finding it taken: granted false, the callback runs with null', async () => {
    const name = unique('busy');
    const g = await locks.lock(name);
    const seen = await trace(async () => {
      expect(await locks.request(name, { ifAvailable: true }, (lock) => lock)).toBeNull();
    });
    g.unlock();
    expect(seen.map(([e]) => e)).toEqual(['start', 'end', 'asyncStart', 'asyncEnd']);
    expect(seen[0]![1]).toMatchObject({ ifAvailable: true, granted: false, result: null });
  });

  test('lock() and lockSync(): tracePromise and traceSync shapes, the guard as the result', async () => {
    const name = unique('guards');
    const seen = await trace(async () => {
      const g = await locks.lock(name);
      g.unlock();
      locks.lockSync(name, { timeout: 100 }).unlock();
    });
    expect(seen.map(([e, c]) => `${c.kind}:${e}`)).toEqual(['lock:start', 'lock:end', 'lock:asyncStart', 'lock:asyncEnd', 'lockSync:start', 'lockSync:end']);
    expect(seen[2]![1]).toMatchObject({ granted: true, timeout: Infinity });
    expect((seen[2]![1].result as { token: number }).token).toBe(seen[2]![1].token);
    expect(seen[4]![1]).toMatchObject({ kind: 'lockSync', timeout: 100, granted: true });
  });

  test('a store bound to start is the active context inside the callback (a span around the request)', async () => {
    const name = unique('als');
    const store = new AsyncLocalStorage<{ span: string }>();
    tc.start.bindStore(store, (ctx) => ({ span: `lock ${ctx.name}` }));
    try {
      const g = await locks.lock(name);
      const seen: Array<string | undefined> = [];
      const p = locks.request(name, () => {
        seen.push(store.getStore()?.span);
      });
      g.unlock();
      await p;
      expect(seen).toEqual([`lock ${name}`]);
      expect(store.getStore()).toBeUndefined(); // only inside the request
    } finally {
      tc.start.unbindStore(store);
    }
  });
});
