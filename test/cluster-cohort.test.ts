// Cluster scope, the cohort (the threads of a process share one server
// grant per name; cluster.ts kEngines.postgres.cohort): while nobody else waits, a
// grant nobody local uses lingers, so a process re-taking a name costs no
// round trip (its grants share one server grant: token = server token ×
// 1000 + pass). Once another process waits (it knocked; or the grant came
// after a wait), no new local pass starts: the holder's next request goes
// behind the waiting process. Two processes hammering a name take turns.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import {
  type Child, clusterCleanup, clusterKid, forgetNames, pgClient, pgUrl, uniquePrefix, useServerGate, waitingOnServer,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('cohort');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const outer = (token: number) => Math.floor(token / 1000);

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

describe('cluster cohort', () => {
  test('a process re-taking a name nobody else waits for: its grants share few server grants (no round trip each)', async () => {
    const name = fresh('retake');
    const p = await clusterKid();
    const r = await p.call('loop', { name, ms: 400 });
    expect(r).toMatchObject({ ok: true, abandoned: 0 });
    const tokens = r.tokens as number[], servers = new Set(tokens.map(outer));
    console.log(`[cohort re-take] ${tokens.length} grants in 400 ms from ${servers.size} server grants`);
    expect(tokens.every((t, i) => i === 0 || t > tokens[i - 1]!)).toBe(true);
    expect(tokens.length).toBeGreaterThan(200);
    // At most 64 local grants per budget (then the grant goes back and is taken again): a round trip per ≥ 30 grants.
    expect(servers.size * 30).toBeLessThanOrEqual(tokens.length);
  }, 30_000);

  test('once another process waits, the holder\'s next request goes behind it (no local pass); with nobody waiting it is a local pass', async () => {
    const name = fresh('turn');
    const pg = await pgClient();
    const [p, q] = await Promise.all([clusterKid(), clusterKid()]) as [Child, Child];
    // Nobody waits: unlock and lock again is a local pass of the same server grant.
    const g0 = await p.call('lock', { key: 'h', name });
    expect(g0).toMatchObject({ granted: true });
    const g1 = await p.call('relock', { key: 'h', name });
    expect(g1).toMatchObject({ granted: true });
    expect(outer(g1.token), 'a re-take with nobody waiting: the same server grant').toBe(outer(g0.token));
    // q waits (parked in the server; its knock reached p): p's next request must wait for q's turn.
    const qWaits = q.call('lock', { key: 'w', name, opts: { timeout: 10_000 } });
    await waitingOnServer(pg, name, q.pid);
    await sleep(100);
    const relock = p.call('relock', { key: 'h', name });
    const gq = await qWaits;
    expect(gq).toMatchObject({ granted: true, abandoned: false });
    expect(gq.token).toBeGreaterThan(g1.token);
    await sleep(100);
    expect(p.seen((m) => m.granted === true && m.token > gq.token), 'p got in while q held it').toBe(false);
    expect(await q.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
    const g2 = await relock;
    expect(g2).toMatchObject({ granted: true });
    expect(g2.token, 'p\'s next grant comes after q\'s').toBeGreaterThan(gq.token);
    expect(outer(g2.token)).toBeGreaterThan(outer(g1.token));
    expect(await p.call('unlock', { key: 'h' })).toMatchObject({ ok: true });
  }, 30_000);

  test('2 processes × 4 requesters hammering a name for 1 s: they take turns (each ≥ 30 % of the grants), tokens rising in each', async () => {
    const name = fresh('turns');
    const [p, q] = await Promise.all([clusterKid(), clusterKid()]) as [Child, Child];
    // Warm: each agent up and connected (it starts on first use), and the name hot in both.
    await Promise.all([p, q].map((k) => k.call('loop', { name, ms: 300 })));
    const [rp, rq] = await Promise.all([p, q].map((k) => k.call('loop', { name, ms: 1000, threads: 4 }, 20_000)));
    expect(rp).toMatchObject({ ok: true, abandoned: 0 });
    expect(rq).toMatchObject({ ok: true, abandoned: 0 });
    const total = (rp.ops as number) + (rq.ops as number);
    console.log(`[cohort turns] ${rp.ops} + ${rq.ops} grants; server grants ${new Set((rp.tokens as number[]).map(outer)).size} + ${new Set((rq.tokens as number[]).map(outer)).size}`);
    for (const r of [rp, rq]) {
      const t = r.tokens as number[];
      expect(t.every((v, i) => i === 0 || v > t[i - 1]!)).toBe(true);
      expect((r.ops as number) / total).toBeGreaterThanOrEqual(0.3);
    }
  }, 30_000);
});
