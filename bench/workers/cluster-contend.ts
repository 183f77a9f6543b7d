// One contending process of bench/cluster.ts, forked with argv
// [kind, name, ms, out]: kind 'latchkey' (locks.lock() scope 'cluster', on
// LATCHKEY_PG_URL) or 'advisory-lock' (the npm package, same server).
// Says 'ready' (after one warm-up grant); on {goNs} it loops for `ms`: take the lock, stamp enter and
// exit (process.hrtime.bigint(): CLOCK_MONOTONIC, one clock for every
// process of the host), empty section, release. Every 4th wait is kept.
// The intervals go to `out` as float64 pairs (ns since go) for the parent's
// overlap check; the reply is { ops, waits }.
import { writeFileSync } from 'node:fs';
import { locks } from '../../src/index.js';
import { advisoryLock } from './cluster-advisory-lock.js';

const [kind, name, ms, out] = process.argv.slice(2) as [string, string, string, string];
const now = () => process.hrtime.bigint();

async function loop(goNs: bigint): Promise<{ ops: number; waits: number[] }> {
  const end = goNs + BigInt(ms) * 1_000_000n;
  const pairs = new Float64Array(1 << 20);
  const waits: number[] = [];
  const mutex = kind === 'advisory-lock' ? advisoryLock(process.env.LATCHKEY_PG_URL!)(name) : undefined;
  while (now() < goNs) await new Promise((r) => setImmediate(r));
  let ops = 0;
  for (;;) {
    const t0 = now();
    if (t0 >= end) break;
    let enter: bigint, exit: bigint;
    if (mutex !== undefined) {
      const release = await mutex.lock();
      enter = now();
      exit = now();
      await release();
    } else {
      const g = (await locks.lock(name, { scope: 'cluster' }))!;
      enter = now();
      exit = now();
      g.unlock();
    }
    if (2 * ops + 1 < pairs.length) {
      pairs[2 * ops] = Number(enter - goNs);
      pairs[2 * ops + 1] = Number(exit - goNs);
    }
    if ((ops & 3) === 0) waits.push(Number(enter - t0) / 1e6);
    ops++;
  }
  writeFileSync(out, pairs.subarray(0, Math.min(2 * ops, pairs.length)));
  return { ops, waits };
}

// Warm up before 'ready': latchkey's agent thread starts, connects and checks its schema on the first request.
if (kind === 'latchkey') (await locks.lock(`${name}:warm-up`, { scope: 'cluster' }))!.unlock();
else await (await advisoryLock(process.env.LATCHKEY_PG_URL!)(`${name}:warm-up`).lock())();
process.send!('ready');
process.once('message', async (m: { goNs: string }) => {
  const r = await loop(BigInt(m.goNs));
  // unlock() hands the release to the agent thread; exiting at once can beat it,
  // and then the others wait for the agent's 200 ms poll instead of a NOTIFY
  // (test/cluster-holder-death.test.ts shows the same race): let it finish.
  await new Promise((res) => setTimeout(res, 100));
  process.send!(r, () => process.exit(0));
});
