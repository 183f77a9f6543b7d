// Cluster scope: mutual exclusion across real processes through the real
// PostgreSQL server (LATCHKEY_PG_URL). Four processes × many grants of one
// name, each a non-atomic read-modify-write of a counter file under the
// lock, logging enter/exit (CLOCK_MONOTONIC: the processes share one host,
// so one clock) and the token; then shared mode: readers overlap, a writer
// never overlaps anybody.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import {
  clusterChild, clusterCleanup, forgetNames, pgUrl, uniquePrefix, useServerGate,
} from './fixtures/cluster-util.js';
import { expectExclusive, expectReadersWriters, readersThenWriter, rmwRun } from './fixtures/tier-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('excl');
const PROCS = 4;
const ITERATIONS = 150;

const work: string[] = [];
function workDir(): string {
  const d = fs.mkdtempSync(join(os.tmpdir(), 'lk-cluster-'));
  work.push(d);
  return d;
}

function run(name: string, mix: 'x' | 'rw') {
  return rmwRun('cluster', { LATCHKEY_PG_URL: pgUrl() }, workDir(), PROCS, { name, iterations: ITERATIONS, mix, timeout: 20_000, window: true, stayMs: 2 });
}

useServerGate();
afterEach(clusterCleanup);
afterAll(async () => {
  for (const d of work) fs.rmSync(d, { recursive: true, force: true });
  await forgetNames(PREFIX);
});

describe('cluster exclusion', () => {
  test(`${PROCS} processes × ${ITERATIONS} exclusive grants: exact counter, no overlap, tokens increase in grant order`, async () => {
    const r = await run(`${PREFIX}-x`, 'x');
    const switches = expectExclusive(r, PROCS, ITERATIONS);
    console.log(`[cluster exclusion] ${r.all.length} grants in ${r.ms.toFixed(0)} ms, ${switches} hand-overs between processes`);
  }, 50_000);

  test(`${PROCS} processes, shared readers and exclusive writers: writers never overlap anyone, readers see whole values`, async () => {
    const { readers, readerOverlaps } = expectReadersWriters(await run(`${PREFIX}-rw`, 'rw'), PROCS, ITERATIONS);
    console.log(`[cluster rw] ${readers} reader sections, ${readerOverlaps} overlaps between processes`);
  }, 50_000);

  test('shared across processes: two readers in at once, a writer waits for both', async () => {
    const name = `${PREFIX}-seq`;
    const [a, b, c] = await Promise.all([clusterChild(), clusterChild(), clusterChild()]);
    // 300 ms for the writer to get in while b still reads (it must not).
    const w = await readersThenWriter(a, b, c, name, 300);
    // Free again: a reader gets in with ifAvailable, with a larger token. unlock()
    // returns before the agent has given the lock back to the server (one round
    // trip later, as the host tier's linger): allow for that, within 1 s.
    const freedAt = performance.now();
    let r3: Record<string, unknown> = {};
    while (performance.now() - freedAt < 1000) {
      r3 = await a.call('lock', { key: 'r3', name, opts: { mode: 'shared', ifAvailable: true } });
      if (r3.granted === true) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(r3, 'ifAvailable within 1 s of the writer\'s unlock()').toMatchObject({ granted: true, mode: 'shared' });
    expect(r3.token as number).toBeGreaterThan(w.token);
    expect(await a.call('unlock', { key: 'r3' })).toMatchObject({ ok: true });
  }, 30_000);
});
