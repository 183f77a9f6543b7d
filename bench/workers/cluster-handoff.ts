// One side of bench/cluster.ts's wake-up measure, forked with argv
// [kind, role, name]: kind 'latchkey' (locks.lock() scope 'cluster') or
// 'poll' (a plain pg client: pg_advisory_lock to hold, pg_try_advisory_lock
// every 10 ms to wait); role 'holder' or 'waiter'. Driven over IPC:
//   holder: {op:'take'} → {taken}; {op:'release'} → {releasedNs} (hrtime just before the release)
//   waiter: {op:'wait'} → {grantedNs} (hrtime when granted; it lets go at once after)
import { createHash } from 'node:crypto';
import pg from 'pg';
import { locks, type LockGuard } from '../../src/index.js';

const [kind, role, name] = process.argv.slice(2) as ['latchkey' | 'poll', 'holder' | 'waiter', string];
const now = () => process.hrtime.bigint();
const key = createHash('sha256').update(`poll:${name}`).digest().readBigInt64BE(0).toString();
const POLL_MS = 10;

let client: pg.Client | undefined;
async function pgc(): Promise<pg.Client> {
  if (client === undefined) {
    client = new pg.Client({ connectionString: process.env.LATCHKEY_PG_URL, application_name: 'latchkey-bench poll' });
    await client.connect();
  }
  return client;
}

let guard: LockGuard | null = null;
const send = (m: unknown) => process.send!(m);
process.on('disconnect', () => process.exit(0));

process.on('message', async (m: { op: string }) => {
  if (role === 'holder' && m.op === 'take') {
    if (kind === 'latchkey') guard = await locks.lock(name, { scope: 'cluster' });
    else await (await pgc()).query('SELECT pg_advisory_lock($1)', [key]);
    send({ taken: true });
  } else if (role === 'holder' && m.op === 'release') {
    const c = kind === 'poll' ? await pgc() : undefined;
    const releasedNs = now();
    if (kind === 'latchkey') guard!.unlock();
    else await c!.query('SELECT pg_advisory_unlock($1)', [key]);
    send({ releasedNs: releasedNs.toString() });
  } else if (role === 'waiter' && m.op === 'wait') {
    let grantedNs: bigint;
    if (kind === 'latchkey') {
      const g = (await locks.lock(name, { scope: 'cluster' }))!;
      grantedNs = now();
      g.unlock();
    } else {
      const c = await pgc();
      for (;;) {
        const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [key]);
        if (r.rows[0]!.ok) break;
        await new Promise((res) => setTimeout(res, POLL_MS));
      }
      grantedNs = now();
      await c.query('SELECT pg_advisory_unlock($1)', [key]);
    }
    send({ grantedNs: grantedNs.toString() });
  } else if (m.op === 'ready?') {
    if (kind === 'poll') await pgc();
    send({ ready: true });
  }
});
send('up');
