// Host scope with threads: 2 processes × 4 worker threads on one name. The
// threads of a process share a host grant (cohorting): exact counts within
// each process and across both, both processes get a fair share, tokens
// increase in grant order, and the backend sees far fewer acquisitions
// (token = backendToken × TOKEN_SPAN + local pass) than the threads make.
import { afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { TOKEN_SPAN } from '../src/atomics/queue/word.js';
import { type Backend, cleanup, freshDir, readyChild } from './fixtures/host-util.js';

afterEach(cleanup);

const PROCS = 2;
const THREADS = 4;
const RUN_MS = 1500;

describe.each(['file', 'sqlite'] as const)('host cohort (%s backend)', (backend: Backend) => {
  test(`${PROCS} processes × ${THREADS} threads: exact counts, fair shares, increasing tokens, few backend grants`, async () => {
    expect(TOKEN_SPAN).toBe(1000);
    const dir = freshDir(), work = freshDir('lk-work-');
    const counter = join(work, 'counter');
    fs.writeFileSync(counter, '0');
    const kids = await Promise.all(Array.from({ length: PROCS }, () =>
      readyChild('host-cohort', { LATCHKEY_DIR: dir, LATCHKEY_BACKEND: backend }, [String(THREADS)])));
    for (const c of kids) c.send({ op: 'go', name: 'cohort', counter });
    await new Promise((r) => setTimeout(r, RUN_MS)); // the test is about shares of a time
    for (const c of kids) c.send({ op: 'stop' });
    const done = await Promise.all(kids.map((c) => c.next((m) => m.ev === 'done' || m.ev === 'failed', 20_000, 'done')));
    for (const d of done) {
      expect(d.ev).toBe('done');
      expect(d.errors).toEqual([]);
      expect(d.violations, 'two threads of one process inside at once').toBe(0);
      expect(d.local, 'the per-process counter lost updates').toBe(d.grants);
      expect(d.perThread).toHaveLength(THREADS);
    }
    const total = done.reduce((s, d) => s + d.grants, 0);
    expect(Number(fs.readFileSync(counter, 'utf8')), 'the cross-process counter lost updates').toBe(total);
    // Neither process starves, nor does any thread.
    const shares = done.map((d) => d.grants / total);
    for (const s of shares) expect(s, `shares ${shares.map((x) => x.toFixed(2)).join(' / ')} of ${total}`).toBeGreaterThanOrEqual(0.2);
    for (const d of done) for (const n of d.perThread) expect(n, `threads' grants ${d.perThread.join(', ')}`).toBeGreaterThan(0);
    // Tokens strictly increase in grant order, across processes and threads.
    const grants = done.flatMap((d, p) => (d.times as bigint[]).map((t, i) => ({ t, token: (d.tokens as number[])[i], p })));
    grants.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
    let backwards = 0;
    for (let i = 1; i < grants.length; i++) if (grants[i].token <= grants[i - 1].token) backwards++;
    expect(backwards, 'grants whose token is not above the previous grant\'s').toBe(0);
    // Cohorting: far fewer backend acquisitions than grants.
    const backendGrants = new Set(grants.map((g) => Math.floor(g.token / TOKEN_SPAN))).size;
    expect(backendGrants * 4, `${backendGrants} backend grants for ${total} grants`).toBeLessThanOrEqual(total);
    // And the host lock did change hands between the processes, many times.
    let handovers = 0;
    for (let i = 1; i < grants.length; i++) if (grants[i].p !== grants[i - 1].p) handovers++;
    expect(handovers).toBeGreaterThan(10);
    console.log(`[${backend}] ${total} grants (${done.map((d) => d.grants).join(' + ')}), ${backendGrants} backend grants, ${handovers} hand-overs, threads ${done.map((d) => d.perThread.join('/')).join(' | ')}`);
  }, 40_000);
});
