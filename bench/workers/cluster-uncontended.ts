// One uncontended process of bench/cluster.ts, forked with argv [kind, name]
// and LATCHKEY_PG_URL. Takes and gives back a lock in batches, nobody else
// asking for it:
//   pg-try     the floor: a plain `pg` client, pg_try_advisory_lock + pg_advisory_unlock (2 round trips)
//   advisory-lock  the npm package: lock() + release() (it opens a connection per lock())
//   latchkey   locks.lockSync() + unlock(), scope 'cluster', each time another of NAMES names (taken once
//              before, so the server has their rows): every grant comes from the server and goes back to it
//              (a name's grant lingers 2 ms after unlock(), then the agent gives it back; a name comes round
//              again only after ~NAMES round trips)
//   retake     locks.lockSync() + unlock() of one name in a loop: the process re-takes a name nobody else
//              waits for (the cohort's linger: no round trip, but one every budget)
// Says 'ready' after a warm-up; each {n} → n lock + unlock → {us: µs per op, cpuUs: CPU µs per op}.
import { createHash } from 'node:crypto';
import pg from 'pg';
import { locks } from '../../src/index.js';
import { advisoryLock } from './cluster-advisory-lock.js';

const [kind, name] = process.argv.slice(2) as ['pg-try' | 'advisory-lock' | 'latchkey' | 'retake', string];
const url = process.env.LATCHKEY_PG_URL!;
const NAMES = 64;

async function open(): Promise<() => unknown> {
  switch (kind) {
    case 'pg-try': {
      const c = new pg.Client({ connectionString: url, application_name: 'latchkey-bench floor' });
      await c.connect();
      const key = createHash('sha256').update(`floor:${name}`).digest().readBigInt64BE(0).toString();
      return async () => {
        if (!(await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [key])).rows[0]!.ok) throw new Error('the floor was refused');
        await c.query('SELECT pg_advisory_unlock($1)', [key]);
      };
    }
    case 'advisory-lock': {
      const mutex = advisoryLock(url)(`floor:${name}`);
      return async () => {
        const release = await mutex.lock();
        await release();
      };
    }
    case 'latchkey': {
      let i = 0;
      const names = Array.from({ length: NAMES }, (_, k) => `${name}:${k}`);
      return () => locks.lockSync(names[i++ % NAMES]!, { scope: 'cluster' })!.unlock();
    }
    case 'retake':
      return () => locks.lockSync(name, { scope: 'cluster' })!.unlock();
  }
}

const op = await open();
// Warm up: connections, schema, the agent thread, every name's row (its first grant is the slow path).
for (let i = 0; i < (kind === 'latchkey' ? 2 * NAMES : 20); i++) await op();
process.on('disconnect', () => process.exit(0));
process.on('message', async (m: { n: number }) => {
  const cpu0 = process.cpuUsage(), t0 = performance.now();
  for (let i = 0; i < m.n; i++) await op();
  const us = ((performance.now() - t0) * 1000) / m.n, cpu = process.cpuUsage(cpu0);
  process.send!({ us, cpuUs: (cpu.user + cpu.system) / m.n });
});
process.send!('ready');
