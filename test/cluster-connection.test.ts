// Cluster scope: the holder's PostgreSQL session is lost while it holds.
//  - Its backend is killed server-side (pg_terminate_backend): the holder is
//    told (onCompromised, lock.signal; request() rejects; a guard's unlock()
//    throws ERR_LOCK_COMPROMISED) before anybody else gets in, and another
//    process's waiting request is granted.
//  - Its backend is frozen (SIGSTOP): the agent's heartbeat tells the holder
//    within seconds, and the lock is free once the backend thaws.
//  - The server restarts (LATCHKEY_PG_RESTART) while 3 processes hammer a
//    name: no two holders ever overlap (a holder counts as holding until it
//    was told), tokens keep increasing across the restart, and every
//    process carries on afterwards.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import {
  clusterChild, clusterCleanup, exclusiveGate, forgetNames, holdersOnServer, hr, pgClient, pgRestartCommand, pgUrl, readyChild, restartServer,
  terminateHolder, uniquePrefix, useServerGate, waitingOnServer,
} from './fixtures/cluster-util.js';
import { type HammerSection, readHammerLogs } from './fixtures/tier-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('conn');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;

const work: string[] = [];
useServerGate();
afterEach(clusterCleanup);
afterAll(async () => {
  for (const d of work) fs.rmSync(d, { recursive: true, force: true });
  await forgetNames(PREFIX);
});

describe('cluster connection lost', () => {
  test('pg_terminate_backend on a guard holder: told before anybody else gets in, unlock() throws ERR_LOCK_COMPROMISED, a waiter is granted', async () => {
    const name = fresh('guard');
    const pg = await pgClient();
    const [holder, waiter] = await Promise.all([clusterChild(), clusterChild()]);
    const h = await holder.call('lock', { key: 'h', name });
    expect(h).toMatchObject({ granted: true });
    expect(await waiter.call('request', { key: 'w', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await waitingOnServer(pg, name, waiter.pid);

    const killedAt = hr();
    expect(await terminateHolder(pg, name), 'backends terminated').toBe(1);
    const [compromised, aborted, granted] = await Promise.all([
      holder.next((m) => m.ev === 'compromised' && m.key === 'h', 5000, 'onCompromised'),
      holder.next((m) => m.ev === 'aborted' && m.key === 'h', 5000, 'lock.signal abort'),
      waiter.next((m) => m.ev === 'granted' && m.key === 'w', 5000, 'the waiter\'s grant'),
    ]);
    expect(compromised.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
    expect(aborted.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
    console.log(`[terminate] holder told ${(Number(compromised.at - killedAt) / 1e6).toFixed(1)} ms after, waiter granted ${(Number(granted.at - killedAt) / 1e6).toFixed(1)} ms after`);
    // The holder learned of it before the other process could use the lock.
    expect(compromised.at).toBeLessThan(granted.at);
    expect(granted.token).toBeGreaterThan(h.token);
    // Its guard does not let go silently.
    const u = await holder.call('unlock', { key: 'h' });
    expect(u).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });

    // The holder's process carries on: a new session, and a grant after the waiter's.
    const again = holder.call('lock', { key: 'h2', name, opts: { timeout: 10_000 } }, 15_000);
    await new Promise((r) => setTimeout(r, 100));
    await waiter.call('release', { key: 'w' });
    expect(await waiter.next((m) => m.ev === 'settled' && m.key === 'w')).toMatchObject({ ok: true });
    const g2 = await again;
    expect(g2).toMatchObject({ granted: true });
    expect(g2.token).toBeGreaterThan(granted.token);
    expect(await holder.call('unlock', { key: 'h2' })).toMatchObject({ ok: true });
  }, 30_000);

  test('the holder\'s backend frozen (SIGSTOP: no FIN, no RST, like a vanished server): told by the heartbeat within seconds; the lock is freed once it thaws', async () => {
    const name = fresh('frozen');
    const pg = await pgClient();
    const [holder, waiter] = await Promise.all([clusterChild(), clusterChild()]);
    const h = await holder.call('lock', { key: 'h', name });
    expect(h).toMatchObject({ granted: true });
    const rows = await holdersOnServer(pg, name);
    expect(rows).toHaveLength(1);
    const backend = rows[0]!;
    process.kill(backend, 'SIGSTOP');
    const frozenAt = hr();
    try {
      const told = await holder.next((m) => m.ev === 'compromised' && m.key === 'h', 15_000, 'onCompromised from the heartbeat');
      expect(told.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
      const ms = Number(told.at - frozenAt) / 1e6;
      console.log(`[frozen backend] holder told ${ms.toFixed(0)} ms after`);
      expect(ms).toBeLessThan(12_000); // heartbeat every 2 s, lost when silent for 6 s
      // The frozen backend still holds the advisory lock: nobody else may be in yet.
      expect(await waiter.call('lock', { key: 'w0', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    } finally {
      process.kill(backend, 'SIGCONT');
    }
    // Thawed, it finds its client gone and ends: the lock is free.
    expect(await waiter.call('lock', { key: 'w', name, opts: { timeout: 10_000 } }, 15_000)).toMatchObject({ granted: true });
    expect(await waiter.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
    expect(await holder.call('unlock', { key: 'h' })).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });
  }, 40_000);

  test('pg_terminate_backend on a request() holder: its promise rejects ERR_LOCK_COMPROMISED, lock.signal aborts, onCompromised runs', async () => {
    const name = fresh('request');
    const pg = await pgClient();
    const [holder, waiter] = await Promise.all([clusterChild(), clusterChild()]);
    expect(await holder.call('request', { key: 'h', name })).toMatchObject({ queued: true });
    const hg = await holder.next((m) => m.ev === 'granted' && m.key === 'h');
    expect(await waiter.call('lock', { key: 'w', name, opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    const waiting = waiter.call('lock', { key: 'w', name, opts: { timeout: 10_000 } }, 15_000);
    await waitingOnServer(pg, name, waiter.pid);
    expect(await terminateHolder(pg, name)).toBe(1);
    const settled = await holder.next((m) => m.ev === 'settled' && m.key === 'h', 5000, 'the request to settle');
    expect(settled).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });
    expect(await holder.next((m) => m.ev === 'aborted' && m.key === 'h', 5000, 'lock.signal abort')).toMatchObject({ error: { code: 'ERR_LOCK_COMPROMISED' } });
    expect(await holder.next((m) => m.ev === 'compromised' && m.key === 'h', 5000, 'onCompromised')).toMatchObject({ error: { code: 'ERR_LOCK_COMPROMISED' } });
    const w = await waiting;
    expect(w).toMatchObject({ granted: true });
    expect(w.token).toBeGreaterThan(hg.token);
    expect(settled.at).toBeLessThan(w.at);
    await holder.call('release', { key: 'h' }); // its callback ends now; nothing to give back
    expect(await waiter.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
  }, 30_000);

  test('the server restarts while 3 processes hammer a name: no overlap, tokens increase across it, all carry on', async () => {
    pgRestartCommand(); // no restart command, no test: fail here, loudly
    // No other cluster test (of any file or run) may be running while the server restarts.
    await exclusiveGate();
    const name = fresh('restart');
    const dir = fs.mkdtempSync(join(os.tmpdir(), 'lk-cluster-'));
    work.push(dir);
    const kids = await Promise.all(Array.from({ length: 3 }, () => readyChild('host-rmw', { LATCHKEY_PG_URL: pgUrl() }, ['cluster'])));
    // Beside the hammering: a holder of another name all through the restart, and a waiter behind it.
    const long = fresh('restart-long');
    const [holder, waiter] = await Promise.all([clusterChild(), clusterChild()]);
    const lh = await holder.call('lock', { key: 'l', name: long });
    expect(lh).toMatchObject({ granted: true });
    expect(await waiter.call('request', { key: 'w', name: long })).toMatchObject({ queued: true });

    const logs = kids.map((c) => join(dir, `log-${c.pid}`));
    kids.forEach((c, i) => c.send({ op: 'hammer', name, log: logs[i], steps: 4 }));
    await new Promise((r) => setTimeout(r, 1500));
    const restartAt = hr();
    const { ms } = await restartServer();
    const upAt = hr();

    // The long holder is told, and its guard will not let go silently.
    const told = await holder.next((m) => m.ev === 'compromised' && m.key === 'l', 5000, 'onCompromised of the long holder');
    expect(told.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
    expect(await holder.next((m) => m.ev === 'aborted' && m.key === 'l', 5000, 'its lock.signal')).toMatchObject({ error: { code: 'ERR_LOCK_COMPROMISED' } });
    expect(told.at).toBeGreaterThan(restartAt);
    expect(told.at).toBeLessThan(upAt);
    expect(await holder.call('unlock', { key: 'l' })).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });
    // Its waiter: granted once the server is back (after the holder was told, with a larger token), or failed with ERR_LOCK_BACKEND.
    const outcome = await waiter.peek((m) => (m.ev === 'granted' || m.ev === 'settled') && m.key === 'w', 10_000, 'the long waiter\'s outcome');
    if (outcome.ev === 'granted') {
      expect(outcome.at).toBeGreaterThan(told.at);
      expect(outcome.token).toBeGreaterThan(lh.token);
      await waiter.call('release', { key: 'w' });
    } else {
      expect(outcome).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
    }
    // The long holder's process carries on too.
    const again = await holder.call('lock', { key: 'l2', name: long, opts: { timeout: 10_000 } }, 15_000);
    expect(again).toMatchObject({ granted: true });
    expect(again.token).toBeGreaterThan(outcome.ev === 'granted' ? outcome.token : lh.token);
    expect(await holder.call('unlock', { key: 'l2' })).toMatchObject({ ok: true });
    const longSummary = `long holder told ${(Number(told.at - restartAt) / 1e6).toFixed(1)} ms into the restart; its waiter ${outcome.ev === 'granted' ? 'was granted after it' : `failed ${outcome.error.code}`}`;

    await new Promise((r) => setTimeout(r, 2500));
    for (const c of kids) c.send({ op: 'stop' });
    const reports = await Promise.all(kids.map((c) => c.next((m) => m.ev === 'stopped' || m.ev === 'failed', 20_000, 'stopped')));
    for (const r of reports) expect(r, 'a hammer failed with an error other than ERR_LOCK_BACKEND / ERR_LOCK_COMPROMISED').toMatchObject({ ev: 'stopped' });

    const { sections, errors } = readHammerLogs(logs);
    const toldSections = sections.filter((s) => s.told !== 0n);
    const summary = `${longSummary}; restart took ${ms.toFixed(0)} ms; ${sections.length} sections, ${toldSections.length} told they lost the lock `
      + `(${toldSections.map((s) => `${s.steps} of 4 steps`).join(', ')}), ${errors.length} errors (${[...new Set(errors.map((e) => e.code))].join(', ')}), `
      + `reports ${JSON.stringify(reports.map((r) => r.codes))}`;
    console.log(`[restart] ${summary}`);
    const near = [...sections.map((s) => ({ ...s, kind: 'section' as const })), ...errors.map((e) => ({ ...e, kind: 'error' as const }))]
      .filter((x) => ('enter' in x ? x.enter : x.at) > restartAt - 30_000_000n && ('enter' in x ? x.enter : x.at) < upAt + 100_000_000n)
      .sort((a, b) => Number(('enter' in a ? a.enter : a.at) - ('enter' in b ? b.enter : b.at)));
    if (process.env.LK_DEBUG_RESTART) {
      console.log(`restartAt 0, upAt ${(Number(upAt - restartAt) / 1e6).toFixed(1)}`);
      for (const x of near) {
        console.log('enter' in x
          ? `  ${x.pid} section token ${x.token} ${(Number(x.enter - restartAt) / 1e6).toFixed(1)} .. ${(Number(x.exit - restartAt) / 1e6).toFixed(1)} told ${x.told === 0n ? '-' : (Number(x.told - restartAt) / 1e6).toFixed(1)} steps ${x.steps}`
          : `  ${x.pid} error ${x.code} at ${(Number(x.at - restartAt) / 1e6).toFixed(1)}`);
      }
    }

    // No overlap: a holder holds from its enter until its exit, or until it was told, whichever is first.
    let maxEnd = -1n, maxWho: HammerSection | undefined;
    const overlaps: string[] = [];
    for (const s of sections) {
      if (maxWho !== undefined && s.enter <= maxEnd) {
        overlaps.push(`${maxWho.pid}/token ${maxWho.token} (told ${maxWho.told !== 0n}) still in when ${s.pid}/token ${s.token} entered`);
      }
      const end = s.told !== 0n && s.told < s.exit ? s.told : s.exit;
      if (end > maxEnd) {
        maxEnd = end;
        maxWho = s;
      }
    }
    expect(overlaps, 'holders overlapping (counting a holder only until it was told)').toEqual([]);
    // A told holder stopped at once: it did no step after being told.
    for (const s of toldSections) expect(s.exit - s.told, 'a told holder left within 50 ms').toBeLessThan(50_000_000n);

    // Tokens strictly increase in grant order, across the restart.
    const backwards = sections.filter((s, i) => i > 0 && s.token <= sections[i - 1]!.token);
    expect(backwards.map((s) => s.token), 'tokens not strictly increasing in grant order').toEqual([]);
    const before = sections.filter((s) => s.enter < restartAt), after = sections.filter((s) => s.enter > upAt);
    expect(before.length).toBeGreaterThan(0);
    expect(Math.min(...after.map((s) => s.token))).toBeGreaterThan(Math.max(...before.map((s) => s.token)));
    // Every process carried on after the restart.
    for (const c of kids) {
      const mine = after.filter((s) => s.pid === c.pid);
      expect(mine.length, `process ${c.pid}: sections after the restart`).toBeGreaterThanOrEqual(5);
    }
    // Errors only while the server was down (or just after, reconnecting).
    const late = errors.filter((e) => e.at > upAt + 2_000_000_000n);
    expect(late, 'errors more than 2 s after the server was back').toEqual([]);
  }, 60_000);
});
