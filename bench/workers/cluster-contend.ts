// One contending process of bench/cluster.ts, forked with argv
// [kind, name, ms, out, warmMs] and LATCHKEY_PG_URL:
//   pg-block       the floor: a plain `pg` client blocking in pg_advisory_lock, then pg_advisory_unlock
//   advisory-lock  the npm package (a new connection per lock())
//   latchkey       await locks.lock(name, { scope: 'cluster' }) + unlock()
// Warms up for `warmMs` on the same name (the processes start together, so the warm-up is contended too:
// a process's code is optimized before it is measured; measured over 12 s, the same code ran at 787 ops/s
// where a cold 3 s run gave 445), says 'ready'; on {goNs} it loops for `ms`: take the lock, stamp enter and exit
// (process.hrtime.bigint(): CLOCK_MONOTONIC, one clock for every process of the host), empty section,
// release. Writes [enter, exit, token] float64 triples (ns since go; token 0 where the client has none) to
// `out`; replies { ops, waits (ms, every 2nd acquisition), cpuMs (this process's CPU over the loop) }.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { locks } from '../../src/index.js';
import { advisoryLock } from './cluster-advisory-lock.js';

const [kind, name, ms, out, warmMs] = process.argv.slice(2) as ['pg-block' | 'advisory-lock' | 'latchkey', string, string, string, string];
const url = process.env.LATCHKEY_PG_URL!;
const now = () => process.hrtime.bigint();

/** lock() → the token (0: none); unlock(). */
async function open(lockName: string): Promise<{ lock(): Promise<number>; unlock(): unknown }> {
  if (kind === 'pg-block') {
    const c = new pg.Client({ connectionString: url, application_name: 'latchkey-bench floor' });
    await c.connect();
    const key = createHash('sha256').update(`floor:${lockName}`).digest().readBigInt64BE(0).toString();
    return {
      lock: async () => (await c.query('SELECT pg_advisory_lock($1)', [key]), 0),
      unlock: () => c.query('SELECT pg_advisory_unlock($1)', [key]),
    };
  }
  if (kind === 'advisory-lock') {
    const mutex = advisoryLock(url)(`floor:${lockName}`);
    let release: (() => Promise<void>) | undefined;
    return {
      lock: async () => ((release = await mutex.lock()), 0),
      unlock: () => release!(),
    };
  }
  let g: { token: number; unlock(): void } | null = null;
  return {
    lock: async () => (g = (await locks.lock(lockName, { scope: 'cluster' }))!).token,
    unlock: () => g!.unlock(),
  };
}

async function loop(client: Awaited<ReturnType<typeof open>>, goNs: bigint): Promise<{ ops: number; waits: number[]; cpuMs: number }> {
  const end = goNs + BigInt(ms) * 1_000_000n;
  const log = new Float64Array(3 << 18);
  const waits: number[] = [];
  while (now() < goNs) await new Promise((r) => setImmediate(r));
  const cpu0 = process.cpuUsage();
  let ops = 0;
  for (;;) {
    const t0 = now();
    if (t0 >= end) break;
    const token = await client.lock();
    const enter = now();
    const exit = now();
    await client.unlock();
    if (3 * ops + 2 < log.length) {
      log[3 * ops] = Number(enter - goNs);
      log[3 * ops + 1] = Number(exit - goNs);
      log[3 * ops + 2] = token;
    }
    if ((ops & 1) === 0) waits.push(Number(enter - t0) / 1e6);
    ops++;
  }
  const cpu = process.cpuUsage(cpu0);
  writeFileSync(out, log.subarray(0, Math.min(3 * ops, log.length)));
  return { ops, waits, cpuMs: (cpu.user + cpu.system) / 1000 };
}

// Warm up before 'ready': connections; latchkey's agent thread starts, connects and checks its schema; then
// contended rounds on the name itself.
const client = await open(name);
for (const end = performance.now() + Number(warmMs); performance.now() < end;) {
  await client.lock();
  await client.unlock();
}
process.send!('ready');
process.once('message', async (m: { goNs: string }) => {
  const r = await loop(client, BigInt(m.goNs));
  // Let the last release reach the server before the process goes (latchkey's agent sends it; exit settles it).
  await new Promise((res) => setTimeout(res, 100));
  process.send!(r, () => process.exit(0));
});
