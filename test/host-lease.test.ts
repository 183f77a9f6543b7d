// Host scope: leases. A holder frozen by SIGSTOP loses the lock to a waiting
// process once its lease runs out (not before); resumed, it learns that it
// lost it (onCompromised, lock.signal), its unlock() throws
// ERR_LOCK_COMPROMISED, and the new holder keeps the lock.
import { afterEach, describe, expect, test } from 'vitest';
import { type Backend, cleanup, freshDir, hostChild, hr, msBetween } from './fixtures/host-util.js';

afterEach(cleanup);

const TTL = 1000;

describe.each(['file', 'sqlite'] as const)('host lease (%s backend)', (backend: Backend) => {
  test(`a SIGSTOPped holder (ttl ${TTL} ms) loses the lock after about its lease, and learns it when resumed`, async () => {
    const dir = freshDir();
    const [frozen, waiter, probe] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir), hostChild(backend, dir)]);
    const h = await frozen.call('lock', { key: 'L', name: 'leased', opts: { ttl: TTL } });
    expect(h).toMatchObject({ granted: true, abandoned: false });
    // Held past a renewal or two: the lease is the keeper's, not the first grant's.
    await new Promise((r) => setTimeout(r, TTL * 0.8));
    expect(await probe.call('lock', { key: 'p', name: 'leased', opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await waiter.call('request', { key: 'w', name: 'leased', opts: { timeout: 15_000, ttl: 10_000 } })).toMatchObject({ queued: true });
    await waiter.call('ping');
    const stoppedAt = hr();
    frozen.kill('SIGSTOP');
    const g = await waiter.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the grant after the lease');
    const after = msBetween(stoppedAt, g.at);
    // The frozen holder renewed at most a third of a lease (plus a keeper tick) before the stop.
    expect(after, 'granted too early: the frozen holder\'s lease had not run out').toBeGreaterThan(TTL * 0.3);
    expect(after, 'granted too late').toBeLessThan(TTL + 3000);
    expect(g.abandoned).toBe(true);
    expect(g.token).toBeGreaterThan(h.token);
    // Resumed: it must learn it lost the lock, by its signal and onCompromised.
    // (Soft: the checks after these say whether the new holder is safe anyway.)
    const resumedAt = hr();
    frozen.kill('SIGCONT');
    const compromised = await frozen.next((m) => m.ev === 'compromised' && m.key === 'L', 5000, 'onCompromised').catch(() => null);
    const aborted = await frozen.next((m) => m.ev === 'aborted' && m.key === 'L', 1000, 'lock.signal to abort').catch(() => null);
    expect.soft(compromised, 'onCompromised was not called within 5 s of SIGCONT').not.toBeNull();
    expect.soft(aborted, 'lock.signal did not abort within 5 s of SIGCONT').not.toBeNull();
    if (compromised !== null) {
      expect.soft(compromised.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
      expect.soft(['expired', 'owner-changed', 'marker-missing']).toContain(compromised.error.reason);
      expect.soft(msBetween(resumedAt, compromised.at)).toBeLessThan(3000);
    }
    if (aborted !== null) expect.soft(aborted.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
    // Its unlock() says so, and gives nothing away: the waiter still holds it.
    const u = await frozen.call('unlock', { key: 'L' });
    expect.soft(u, 'unlock() of a lost lock must throw ERR_LOCK_COMPROMISED').toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });
    expect(await probe.call('lock', { key: 'p', name: 'leased', opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(waiter.seen((m) => m.ev === 'aborted' || m.ev === 'compromised' || m.ev === 'settled')).toBe(false);
    // The new holder gives it back normally; then the once-frozen process may take it again.
    await waiter.call('release', { key: 'w' });
    expect(await waiter.next((m) => m.ev === 'settled' && m.key === 'w')).toMatchObject({ ok: true, value: 'done' });
    const again = await frozen.call('lock', { key: 'L2', name: 'leased', opts: { timeout: 5000 } });
    expect(again).toMatchObject({ granted: true, abandoned: false });
    expect(again.token).toBeGreaterThan(g.token);
  }, 30_000);

  test('a request() holder frozen past its lease has its promise rejected with ERR_LOCK_COMPROMISED when resumed', async () => {
    const dir = freshDir();
    const [frozen, waiter] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    expect(await frozen.call('request', { key: 'r', name: 'leased2', opts: { ttl: 500 } })).toMatchObject({ queued: true });
    const h = await frozen.next((m) => m.ev === 'granted' && m.key === 'r');
    frozen.kill('SIGSTOP');
    const stoppedAt = hr();
    const g = await waiter.call('lock', { key: 'w', name: 'leased2', opts: { timeout: 10_000 } }, 15_000);
    expect(g).toMatchObject({ granted: true, abandoned: true });
    expect(msBetween(stoppedAt, g.at)).toBeGreaterThan(500 * 0.3);
    expect(g.token).toBeGreaterThan(h.token);
    frozen.kill('SIGCONT');
    // Without releasing: the callback is still running, the promise rejects by itself.
    const settled = await frozen.next((m) => m.ev === 'settled' && m.key === 'r', 5000, 'the request to settle').catch(() => null);
    expect.soft(settled, 'the request() promise did not reject within 5 s of SIGCONT').toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });
    const compromised = await frozen.next((m) => m.ev === 'compromised' && m.key === 'r', 1000).catch(() => null);
    expect.soft(compromised, 'onCompromised was not called').toMatchObject({ error: { code: 'ERR_LOCK_COMPROMISED' } });
    // The callback ending later releases nothing of the new holder's.
    await frozen.call('release', { key: 'r' });
    expect(await frozen.call('lock', { key: 'p', name: 'leased2', opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(await waiter.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
  }, 30_000);

  test('a holder that is not frozen keeps its lock past many leases (the keeper renews it)', async () => {
    const dir = freshDir();
    const [holder, other] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    const h = await holder.call('lock', { key: 'L', name: 'renewed', opts: { ttl: 250 } });
    expect(h).toMatchObject({ granted: true });
    const w = other.call('lock', { key: 'w', name: 'renewed', opts: { timeout: 1500 } }, 10_000);
    const r = await w;
    // 1.5 s is six leases of 250 ms: the holder kept it all along.
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    expect(holder.seen((m) => m.ev === 'aborted' || m.ev === 'compromised')).toBe(false);
    expect(await holder.call('unlock', { key: 'L' })).toMatchObject({ ok: true });
  }, 20_000);
});
