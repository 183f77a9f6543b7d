// Cluster scope on Redis: mutual exclusion across real processes through a
// real redis-server (LATCHKEY_REDIS_URL). Six processes × many grants of one
// name, each a non-atomic read-modify-write of a counter file under the
// lock, logging enter/exit (CLOCK_MONOTONIC: one clock for every process of
// the host) and the token; shared readers beside exclusive writers; and
// real worker threads of two processes sharing each process's grant
// (cohorting).
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { TOKEN_SPAN } from '../src/atomics/queue/word.js';
import { freshDir, readyChild } from './fixtures/host-util.js';
import { forgetRedisNames, redisCleanup, redisEnv, redisUrl, uniquePrefix } from './fixtures/redis-util.js';
import { expectExclusive, expectReadersWriters, rmwRun } from './fixtures/tier-util.js';

redisUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('excl');

afterEach(redisCleanup);
afterAll(() => forgetRedisNames(PREFIX));

describe('Redis exclusion', () => {
  test('6 processes × 150 exclusive grants: exact counter, no overlap, tokens increase in grant order', async () => {
    const r = await rmwRun('cluster', redisEnv(), freshDir('lk-work-'), 6, { name: `${PREFIX}-x`, iterations: 150, mix: 'x', timeout: 20_000, window: true });
    const switches = expectExclusive(r, 6, 150);
    console.log(`[redis exclusion] ${r.all.length} grants in ${r.ms.toFixed(0)} ms, ${switches} hand-overs between processes`);
  }, 50_000);

  test('4 processes, shared readers and exclusive writers: writers never overlap anyone, readers see whole values', async () => {
    const r = await rmwRun('cluster', redisEnv(), freshDir('lk-work-'), 4, { name: `${PREFIX}-rw`, iterations: 120, mix: 'rw', timeout: 20_000, window: true, stayMs: 2 });
    const { readers, readerOverlaps } = expectReadersWriters(r, 4, 120);
    console.log(`[redis rw] ${readers} reader sections, ${readerOverlaps} overlaps between processes`);
  }, 50_000);

  test('2 processes × 4 worker threads: exact counts, fair shares, increasing tokens, far fewer server grants than grants', async () => {
    const work = freshDir('lk-work-'), counter = join(work, 'counter');
    fs.writeFileSync(counter, '0');
    const kids = await Promise.all([0, 1].map(() => readyChild('host-cohort', redisEnv(), ['4', 'cluster'])));
    // Every thread takes the lock once first (its process's agent started, its connections open), then all start.
    for (const c of kids) c.send({ op: 'go', name: `${PREFIX}-cohort`, counter, warm: true });
    await Promise.all(kids.map((c) => c.next((m) => m.ev === 'warm', 20_000, 'warm')));
    for (const c of kids) c.send({ op: 'start' });
    await new Promise((r) => setTimeout(r, 1500)); // the test is about shares of a time
    for (const c of kids) c.send({ op: 'stop' });
    const done = await Promise.all(kids.map((c) => c.next((m) => m.ev === 'done' || m.ev === 'failed', 20_000, 'done')));
    for (const d of done) {
      expect(d.ev).toBe('done');
      expect(d.errors).toEqual([]);
      expect(d.violations, 'two threads of one process inside at once').toBe(0);
      expect(d.local, 'the per-process counter lost updates').toBe(d.grants);
      for (const n of d.perThread) expect(n, `threads' grants ${d.perThread.join(', ')}`).toBeGreaterThan(0);
    }
    const total = done.reduce((s, d) => s + d.grants, 0);
    expect(Number(fs.readFileSync(counter, 'utf8')), 'the cross-process counter lost updates').toBe(total);
    for (const d of done) expect(d.grants / total, 'a process starved').toBeGreaterThanOrEqual(0.2);
    const grants = done.flatMap((d, p) => (d.times as bigint[]).map((t, i) => ({ t, token: (d.tokens as number[])[i]!, p })));
    grants.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
    let backwards = 0, handovers = 0;
    for (let i = 1; i < grants.length; i++) {
      if (grants[i]!.token <= grants[i - 1]!.token) backwards++;
      if (grants[i]!.p !== grants[i - 1]!.p) handovers++;
    }
    expect(backwards, 'grants whose token is not above the previous grant\'s').toBe(0);
    // Cohorting: the threads of a process share one server grant (token = server token × TOKEN_SPAN + pass).
    const serverGrants = new Set(grants.map((g) => Math.floor(g.token / TOKEN_SPAN))).size;
    expect(serverGrants * 4, `${serverGrants} server grants for ${total} grants`).toBeLessThanOrEqual(total);
    expect(handovers, 'the lock changed hands between the processes').toBeGreaterThan(10);
    console.log(`[redis cohort] ${total} grants (${done.map((d) => d.grants).join(' + ')}), ${serverGrants} server grants, ${handovers} hand-overs`);
  }, 40_000);
});
