// Host scope: mutual exclusion across real processes, on both backends.
// Four processes × many grants of one name, each doing a non-atomic
// read-modify-write of a counter file under the lock, and logging
// enter/exit (CLOCK_MONOTONIC, comparable across processes) and the token.
import { afterEach, describe, test } from 'vitest';
import { type Backend, cleanup, freshDir, hostChild } from './fixtures/host-util.js';
import { expectExclusive, expectReadersWriters, readersThenWriter, rmwRun } from './fixtures/tier-util.js';

const PROCS = 4;
const ITERATIONS = 300;

function run(backend: Backend, mix: 'x' | 'rw') {
  const env = { LATCHKEY_DIR: freshDir(), LATCHKEY_BACKEND: backend };
  return rmwRun('host', env, freshDir('lk-work-'), PROCS, { name: 'shared-counter', iterations: ITERATIONS, mix });
}

afterEach(cleanup);

describe.each(['file', 'sqlite'] as const)('host exclusion (%s backend)', (backend) => {
  test(`${PROCS} processes × ${ITERATIONS} exclusive grants: exact counter, no overlap, tokens increase in grant order`, async () => {
    expectExclusive(await run(backend, 'x'), PROCS, ITERATIONS);
  }, 50_000);

  test(`${PROCS} processes, shared readers and exclusive writers: writers never overlap anyone, readers see whole values`, async () => {
    const { readers, readerOverlaps } = expectReadersWriters(await run(backend, 'rw'), PROCS, ITERATIONS);
    console.log(`[${backend}] ${readers} reader sections, ${readerOverlaps} overlaps between processes`);
  }, 50_000);

  test('shared across processes: two readers in at once, a writer waits for both', async () => {
    const dir = freshDir();
    const [a, b, c] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir), hostChild(backend, dir)]);
    await readersThenWriter(a, b, c, 'rw');
  }, 30_000);
});
