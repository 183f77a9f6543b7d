// Cluster scope on Redis: the server dies and comes back without its data
// (SIGKILL, no persistence: every key gone, as after a crash or a failover
// to a replica that had not caught up) while 4 processes hammer a name and
// another holds a second one. Every holder is told at once (its connection
// dropped); no two holders overlap (a holder counts as holding until it was
// told); tokens keep rising across the restart (they start again from the
// server's clock, above everything issued before); every process carries
// on. A private server: the shared one is not restarted under other tests.
import { afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { freshDir } from './fixtures/host-util.js';
import { type HammerSection, readHammerLogs } from './fixtures/tier-util.js';
import { hr, privateServer, readyChild, redisChild, redisCleanup, redisEnv, uniquePrefix } from './fixtures/redis-util.js';

const PREFIX = uniquePrefix('restart');

afterEach(redisCleanup);


describe('Redis server restarted without persistence', () => {
  test('under load: every holder told, no overlap, tokens still rising, every process carries on', async () => {
    const server = await privateServer();
    const env = redisEnv(server.url), name = `${PREFIX}-hammer`, long = `${PREFIX}-long`, read = `${PREFIX}-read`;
    const dir = freshDir('lk-work-');
    const kids = await Promise.all(Array.from({ length: 4 }, () => readyChild('host-rmw', env, ['cluster'])));
    // Beside the hammering, held all through the restart: an exclusive lock with a waiter behind it, and a shared one of two readers.
    const [holder, waiter, reader] = await Promise.all([redisChild(server.url), redisChild(server.url), redisChild(server.url)]);
    const lh = await holder.call('lock', { key: 'l', name: long });
    expect(lh).toMatchObject({ granted: true });
    for (const [c, key] of [[holder, 'r1'], [reader, 'r2']] as const) {
      expect(await c.call('lock', { key, name: read, opts: { mode: 'shared' } })).toMatchObject({ granted: true, mode: 'shared' });
    }
    expect(await waiter.call('request', { key: 'w', name: long, opts: { timeout: 20_000 } })).toMatchObject({ queued: true });

    const logs = kids.map((c) => join(dir, `log-${c.pid}`));
    kids.forEach((c, i) => c.send({ op: 'hammer', name, log: logs[i], steps: 8 }));
    // Every process in the game first (their agents started and connected), then a while of hammering.
    const entered = (log: string) => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('enter')).length : 0);
    for (const end = Date.now() + 15_000; !logs.every((l) => entered(l) >= 3);) {
      if (Date.now() > end) throw new Error(`the hammers did not get going: ${logs.map(entered).join(', ')} sections`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 500));
    const restartAt = hr();
    await server.restart();
    const upAt = hr();

    // The long holder is told (its connection dropped with the server), before the server is back.
    const told = await holder.next((m) => m.ev === 'compromised' && m.key === 'l', 5000, 'onCompromised of the long holder');
    expect(told.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED', reason: 'owner-changed' });
    expect(told.at).toBeGreaterThan(restartAt);
    expect(told.at).toBeLessThan(upAt);
    expect(await holder.call('unlock', { key: 'l' })).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });
    // Both readers too.
    for (const [c, key] of [[holder, 'r1'], [reader, 'r2']] as const) {
      const t = await c.next((m) => m.ev === 'compromised' && m.key === key, 5000, `reader ${key} told`);
      expect(t.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
      expect(t.at).toBeLessThan(upAt);
    }
    // Its waiter's request was sent again on a new session: granted once the server is back, with a larger token.
    const w = await waiter.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the long waiter\'s grant');
    expect(w.at).toBeGreaterThan(told.at);
    expect(w.token).toBeGreaterThan(lh.token);
    await waiter.call('release', { key: 'w' });
    const again = await holder.call('lock', { key: 'l2', name: long, opts: { timeout: 10_000 } }, 15_000);
    expect(again).toMatchObject({ granted: true });
    expect(again.token).toBeGreaterThan(w.token);
    expect(await holder.call('unlock', { key: 'l2' })).toMatchObject({ ok: true });

    await new Promise((r) => setTimeout(r, 2000));
    for (const c of kids) c.send({ op: 'stop' });
    const reports = await Promise.all(kids.map((c) => c.next((m) => m.ev === 'stopped' || m.ev === 'failed', 20_000, 'stopped')));
    for (const r of reports) expect(r, 'a hammer failed with an error other than ERR_LOCK_BACKEND / ERR_LOCK_COMPROMISED').toMatchObject({ ev: 'stopped' });
    const { sections, errors } = readHammerLogs(logs);
    const toldSections = sections.filter((s) => s.told !== 0n);
    console.log(`[redis restart] restart took ${(Number(upAt - restartAt) / 1e6).toFixed(0)} ms; ${sections.length} sections, `
      + `${toldSections.length} told they lost the lock (${toldSections.map((s) => `${s.steps} of 8 steps`).join(', ')}), `
      + `${errors.length} errors (${[...new Set(errors.map((e) => e.code))].join(', ')}); long holder told ${(Number(told.at - restartAt) / 1e6).toFixed(1)} ms into the restart`);

    if (process.env.LK_DEBUG_RESTART) {
      const rel = (t: bigint) => (Number(t - restartAt) / 1e6).toFixed(1);
      console.log(`restartAt 0, upAt ${rel(upAt)}`);
      for (const x of sections.filter((q) => q.exit > restartAt - 50_000_000n && q.enter < upAt + 50_000_000n)) {
        console.log(`  ${x.pid} token ${x.token} ${rel(x.enter)} .. ${rel(x.exit)} told ${x.told === 0n ? '-' : rel(x.told)} steps ${x.steps}`);
      }
      for (const e of errors) console.log(`  ${e.pid} error ${e.code} at ${rel(e.at)}`);
    }
    // Every hammering holder still inside its section when the server was back up had been told (the
    // kill lands inside a section or between two: which one, the test does not steer).
    const across = sections.filter((s) => s.enter < restartAt && s.exit > upAt);
    for (const s of across) {
      expect(s.told, `${s.pid}/token ${s.token}: held across the restart, never told`).not.toBe(0n);
      expect(s.told).toBeLessThan(upAt);
    }
    // No overlap: a holder holds from its enter until its exit, or until it was told, whichever is first.
    let maxEnd = -1n, maxWho: HammerSection | undefined;
    const overlaps: string[] = [];
    for (const s of sections) {
      if (maxWho !== undefined && s.enter <= maxEnd) overlaps.push(`${maxWho.pid}/token ${maxWho.token} still in when ${s.pid}/token ${s.token} entered`);
      const end = s.told !== 0n && s.told < s.exit ? s.told : s.exit;
      if (end > maxEnd) {
        maxEnd = end;
        maxWho = s;
      }
    }
    expect(overlaps, 'holders overlapping (counting a holder only until it was told)').toEqual([]);
    for (const s of toldSections) expect(s.exit - s.told, 'a told holder left within 50 ms').toBeLessThan(50_000_000n);
    // Tokens strictly increase in grant order, across the restart.
    const backwards = sections.filter((s, i) => i > 0 && s.token <= sections[i - 1]!.token);
    expect(backwards.map((s) => s.token), 'tokens not strictly increasing in grant order').toEqual([]);
    const before = sections.filter((s) => s.enter < restartAt), after = sections.filter((s) => s.enter > upAt);
    expect(before.length).toBeGreaterThan(0);
    expect(Math.min(...after.map((s) => s.token))).toBeGreaterThan(Math.max(...before.map((s) => s.token)));
    for (const c of kids) expect(after.filter((s) => s.pid === c.pid).length, `process ${c.pid}: sections after the restart`).toBeGreaterThanOrEqual(5);
    // Errors only while the server was down (or just after, reconnecting).
    expect(errors.filter((e) => e.at > upAt + 2_000_000_000n), 'errors more than 2 s after the server was back').toEqual([]);
  }, 60_000);
});
