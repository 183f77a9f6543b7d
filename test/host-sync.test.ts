// Host scope, blocking: locks.lockSync(name, {scope:'host'}) in a worker
// thread blocks that worker only, while another process holds the lock: the
// main thread's event loop keeps running (timers, IPC, its own host locks),
// and the worker is granted when the other process lets go.
import { afterEach, describe, expect, test } from 'vitest';
import { type Backend, type Child, cleanup, freshDir, hostChild, msBetween, readyChild } from './fixtures/host-util.js';

afterEach(cleanup);

function syncChild(backend: Backend, dir: string): Promise<Child> {
  return readyChild('host-sync', { LATCHKEY_DIR: dir, LATCHKEY_BACKEND: backend });
}

describe.each(['file', 'sqlite'] as const)('host lockSync (%s backend)', (backend: Backend) => {
  test('a worker blocked in lockSync leaves its main thread running, and is granted when the other process releases', async () => {
    const dir = freshDir();
    const [holder, s] = await Promise.all([hostChild(backend, dir), syncChild(backend, dir)]);
    const h = await holder.call('lock', { name: 'sync' });
    expect(h).toMatchObject({ granted: true });
    expect(await s.call('go', { name: 'sync', timeout: 20_000 })).toMatchObject({ ok: true });
    await s.next((m) => m.ev === 'locking', 10_000, 'the worker to start locking');
    const first = await s.call('status');
    await new Promise((r) => setTimeout(r, 400)); // the test is about the loop running meanwhile
    const second = await s.call('status');
    expect(first.granted).toBe(false);
    expect(second.granted).toBe(false);
    // 400 ms of a 10 ms interval: the main thread ran (generously: a fifth of the ticks).
    expect(second.ticks - first.ticks).toBeGreaterThanOrEqual(8);
    // And it can take host locks of its own meanwhile.
    expect(await s.call('other', { name: 'sync-other' })).toMatchObject({ ok: true });
    expect(s.seen((m) => m.ev === 'granted' || m.ev === 'threw')).toBe(false);
    const released = await holder.call('unlock', { key: 'sync' });
    expect(released).toMatchObject({ ok: true });
    const g = await s.next((m) => m.ev === 'granted' || m.ev === 'threw', 10_000, 'the worker\'s grant');
    expect(g).toMatchObject({ ev: 'granted', abandoned: false });
    // After the holder began to let go (its unlock() may return after the grant: a busy machine deschedules it).
    expect(g.at).toBeGreaterThan(released.t0);
    expect(msBetween(released.t0, g.at)).toBeLessThan(1000);
    expect(g.token).toBeGreaterThan(h.token);
    const unlocked = await s.next((m) => m.ev === 'unlocked');
    // Given back: the other process takes it again (a waiting request: an idle
    // host grant may linger a moment, LINGER_MS, and refuse an ifAvailable meanwhile).
    const again = await holder.call('lock', { key: 'again', name: 'sync', opts: { timeout: 5000 } });
    expect(again).toMatchObject({ granted: true, abandoned: false });
    expect(msBetween(unlocked.at, again.at)).toBeLessThan(1000);
  }, 30_000);

  test('lockSync with a timeout throws ERR_LOCK_TIMEOUT in the worker, the main thread ticking all along', async () => {
    const dir = freshDir();
    const [holder, s] = await Promise.all([hostChild(backend, dir), syncChild(backend, dir)]);
    expect(await holder.call('lock', { name: 'sync' })).toMatchObject({ granted: true });
    expect(await s.call('go', { name: 'sync', timeout: 600 })).toMatchObject({ ok: true });
    const locking = await s.next((m) => m.ev === 'locking');
    const r = await s.next((m) => m.ev === 'granted' || m.ev === 'threw', 10_000, 'the worker to give up');
    expect(r).toMatchObject({ ev: 'threw', error: { code: 'ERR_LOCK_TIMEOUT' } });
    const waited = msBetween(locking.at, r.at);
    expect(waited).toBeGreaterThanOrEqual(550);
    expect(waited).toBeLessThan(3000);
    expect(r.ticks - locking.ticks).toBeGreaterThanOrEqual(10);
    // The holder never noticed.
    expect(holder.seen((m) => m.ev === 'aborted' || m.ev === 'compromised')).toBe(false);
    expect(await holder.call('unlock', { key: 'sync' })).toMatchObject({ ok: true });
  }, 30_000);
});
