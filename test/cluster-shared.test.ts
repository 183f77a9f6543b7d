// Cluster scope, shared mode across processes: waiters are granted in Web
// Locks order (https://w3c.github.io/web-locks/#lock-request-grantable), as
// PostgreSQL's lock manager queues them: behind an exclusive holder, a
// shared request, an exclusive one and a shared one are granted one at a
// time in that order (the second shared one does not jump the waiting
// exclusive one); a shared request behind a waiting exclusive one waits,
// even while only shared holders hold, and ifAvailable is refused there.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import {
  type Child, clusterCleanup, clusterKid, forgetNames, pgClient, pgUrl, serverLocks, uniquePrefix, useServerGate, waitingOnServer,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('shared');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

describe('cluster shared mode order', () => {
  test('X0 held; S1, X2, S3 waiting in that order: S1 alone, then X2, then S3', async () => {
    const name = fresh('order');
    const pg = await pgClient();
    const [p0, p1, p2, p3] = await Promise.all(Array.from({ length: 4 }, () => clusterKid())) as Child[] as [Child, Child, Child, Child];
    const x0 = await p0.call('lock', { key: 'l', name });
    expect(x0).toMatchObject({ granted: true, mode: 'exclusive' });
    const s1 = p1.call('lock', { key: 'l', name, opts: { mode: 'shared', timeout: 20_000 } }, 25_000);
    await waitingOnServer(pg, name, p1.pid);
    const x2 = p2.call('lock', { key: 'l', name, opts: { timeout: 20_000 } }, 25_000);
    await waitingOnServer(pg, name, p2.pid);
    const s3 = p3.call('lock', { key: 'l', name, opts: { mode: 'shared', timeout: 20_000 } }, 25_000);
    await waitingOnServer(pg, name, p3.pid);

    let granted: string[] = [];
    const note = (who: string) => (r: Record<string, unknown>) => {
      granted = [...granted, who];
      return r;
    };
    const [g1, g2, g3] = [s1.then(note('S1')), x2.then(note('X2')), s3.then(note('S3'))];
    expect(await p0.call('unlock', { key: 'l' })).toMatchObject({ ok: true });
    const r1 = await g1;
    await sleep(300);
    expect(granted, 'S3 must not join S1 past the waiting X2').toEqual(['S1']);
    expect((await serverLocks(pg, name)).filter((l) => l.granted).map((l) => l.pid)).toEqual([p1.pid]);
    expect(await p1.call('unlock', { key: 'l' })).toMatchObject({ ok: true });
    const r2 = await g2;
    await sleep(300);
    expect(granted).toEqual(['S1', 'X2']);
    expect(await p2.call('unlock', { key: 'l' })).toMatchObject({ ok: true });
    const r3 = await g3;
    expect(granted).toEqual(['S1', 'X2', 'S3']);
    expect([r1, r2, r3].map((r) => r.mode)).toEqual(['shared', 'exclusive', 'shared']);
    const tokens = [x0, r1, r2, r3].map((r) => r.token as number);
    expect(tokens.every((t, i) => i === 0 || t > tokens[i - 1]!), `tokens ${tokens}`).toBe(true);
    expect(await p3.call('unlock', { key: 'l' })).toMatchObject({ ok: true });
  }, 40_000);

  test('a shared request behind a waiting exclusive one waits, though only shared holders hold; ifAvailable is refused', async () => {
    const name = fresh('behind');
    const pg = await pgClient();
    const [p0, p1, p2] = await Promise.all(Array.from({ length: 3 }, () => clusterKid())) as Child[] as [Child, Child, Child];
    expect(await p0.call('lock', { key: 'l', name, opts: { mode: 'shared' } })).toMatchObject({ granted: true, mode: 'shared' });
    const x1 = p1.call('lock', { key: 'l', name, opts: { timeout: 20_000 } }, 25_000);
    await waitingOnServer(pg, name, p1.pid);
    expect(await p2.call('lock', { key: 'a', name, opts: { mode: 'shared', ifAvailable: true } }), 'shared ifAvailable behind a waiting exclusive')
      .toMatchObject({ granted: false });
    const s2 = p2.call('lock', { key: 'l', name, opts: { mode: 'shared', timeout: 20_000 } }, 25_000);
    await waitingOnServer(pg, name, p2.pid);
    await sleep(200);
    expect((await serverLocks(pg, name)).filter((l) => l.granted).map((l) => l.pid), 'only the first reader holds').toEqual([p0.pid]);
    expect(await p0.call('unlock', { key: 'l' })).toMatchObject({ ok: true });
    const g1 = await x1;
    expect(g1).toMatchObject({ granted: true, mode: 'exclusive' });
    await sleep(200);
    expect((await serverLocks(pg, name)).filter((l) => l.granted).map((l) => l.pid)).toEqual([p1.pid]);
    expect(await p1.call('unlock', { key: 'l' })).toMatchObject({ ok: true });
    const g2 = await s2;
    expect(g2).toMatchObject({ granted: true, mode: 'shared' });
    expect(g2.token).toBeGreaterThan(g1.token);
    expect(await p2.call('unlock', { key: 'l' })).toMatchObject({ ok: true });
  }, 40_000);
});
