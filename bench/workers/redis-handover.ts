// One side of bench/redis.ts's hand-over measure, forked with argv [kind,
// role, name]: kind 'latchkey' (locks.lock() scope 'cluster', through this
// process's agent thread), 'engine' (latchkey's Redis engine used directly:
// what the agent threads add is the difference) or 'blpop' (the floor: the
// holder's release is an LPUSH, the waiter waits in BLPOP); role 'holder'
// or 'waiter'. Driven over IPC:
//   holder: {op:'take'} → {taken}; {op:'release'} → {releasedNs} (hrtime just before the release)
//   waiter: {op:'wait'} → {grantedNs} (hrtime when granted; it lets go at once after)
import { createRequire } from 'node:module';
import type * as RedisClient from '@redis/client';
import { locks, type LockGuard } from '../../src/index.js';
import { openRedisEngine } from '../../src/bridge/cluster/redis.js';

const [kind, role, name] = process.argv.slice(2) as ['latchkey' | 'engine' | 'blpop', 'holder' | 'waiter', string];
const url = process.env.LATCHKEY_CLUSTER_URL!;
const now = () => process.hrtime.bigint();
const send = (m: unknown) => process.send!(m);
process.on('disconnect', () => process.exit(0));

const { createClient } = createRequire(import.meta.url)('@redis/client') as typeof RedisClient;
const client = kind === 'blpop' ? createClient({ url, RESP: 2, socket: { noDelay: true } }) : undefined;
await client?.connect();
const engine = kind === 'engine' ? openRedisEngine(url, { lost() {}, wanted() {} }) : undefined;
const opts = () => ({ mode: 'exclusive' as const, once: false, steal: false, ttl: 10_000, deadline: Infinity, signal: new AbortController().signal });

// Warm up: the agent thread started, the connections open, the library loaded.
if (kind === 'latchkey') (await locks.lock(`${name}:warm:${role}`, { scope: 'cluster' }))!.unlock();
if (engine !== undefined) {
  const warm = (await engine.acquire(`${name}:warm:${role}`, opts()))!;
  await engine.release(`${name}:warm:${role}`, warm.token, false);
}
send({ ready: true });

let guard: LockGuard | null = null;
/** The engine's grant the holder holds (its token). */
let held = 0;
process.on('message', async (m: { op: string }) => {
  if (role === 'holder' && m.op === 'take') {
    if (kind === 'latchkey') guard = await locks.lock(name, { scope: 'cluster' });
    else if (engine !== undefined) held = (await engine.acquire(name, opts()))!.token;
    send({ taken: true });
  } else if (role === 'holder' && m.op === 'release') {
    const releasedNs = now();
    if (kind === 'latchkey') guard!.unlock();
    else if (engine !== undefined) await engine.release(name, held, false);
    else await client!.sendCommand(['LPUSH', name, String(releasedNs)]);
    send({ releasedNs: releasedNs.toString() });
  } else if (role === 'waiter' && m.op === 'wait') {
    let grantedNs: bigint;
    if (kind === 'latchkey') {
      const g = (await locks.lock(name, { scope: 'cluster' }))!;
      grantedNs = now();
      g.unlock();
    } else if (engine !== undefined) {
      const g = (await engine.acquire(name, opts()))!;
      grantedNs = now();
      await engine.release(name, g.token, false);
    } else {
      await client!.sendCommand(['BLPOP', name, '0']);
      grantedNs = now();
    }
    send({ grantedNs: grantedNs.toString() });
  }
});
