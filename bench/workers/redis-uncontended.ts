// bench/redis.ts's uncontended figures, in one process of their own (its
// cluster agent on Redis: LATCHKEY_CLUSTER_URL): forked with argv [name,
// rounds, ops]. Each round, `ops` times: one lock+unlock pair of every
// candidate that goes to the server, one after the other in a rotating
// order (so that a drift of the machine hits them alike), each pair timed on
// hrtime; then a block of `ops` pairs of the front door re-taking its
// lingering grant (it needs the pairs back to back). The reply is {µs p50
// per candidate}.
//   floor          SET key v NX PX 10000, then EVALSHA of a compare-and-delete (one round trip each: the least a Redis lock pays)
//   engine         latchkey's Redis engine itself (redis.ts): acquire() + release() (the release is sent, not awaited: the next
//                  acquire goes after it on the same connection)
//   front door     locks.lock(name, {scope:'cluster'}) + unlock(): as a program calls it, through this process's agent thread;
//                  a grant nobody uses lingers 2 ms, so a loop re-takes it without a round trip
//   front, served  the same on 64 names in turn: every lock() goes to the server (each name's lingering grant was given back
//                  2 ms after its unlock, off the loop, well before its turn comes again)
//   redlock        redlock 5.0.0-beta.2 acquire() + release() (ioredis)
//   semaphore      redis-semaphore Mutex acquire() + release() (ioredis)
import { createRequire } from 'node:module';
import { Redis } from 'ioredis';
import Redlock from 'redlock';
import { Mutex } from 'redis-semaphore';
import { locks } from '../../src/index.js';
import { openRedisEngine } from '../../src/bridge/cluster/redis.js';
import type * as RedisClient from '@redis/client';

const [name, roundsArg, opsArg] = process.argv.slice(2) as [string, string, string];
const url = process.env.LATCHKEY_CLUSTER_URL!;
const rounds = Number(roundsArg), ops = Number(opsArg);
const now = () => process.hrtime.bigint();
const CAD = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

const { createClient } = createRequire(import.meta.url)('@redis/client') as typeof RedisClient;
const floor = createClient({ url, RESP: 2, disableOfflineQueue: true, socket: { noDelay: true } });
await floor.connect();
const sha = String(await floor.sendCommand(['SCRIPT', 'LOAD', CAD]));
const engine = openRedisEngine(url, { lost() {}, wanted() {} });
const io = new Redis(url, { maxRetriesPerRequest: 0 });
const redlock = new Redlock([io], { retryCount: -1 });
redlock.on('error', () => {});

let v = 0, fresh = 0;
const candidates: Record<string, () => Promise<void>> = {
  async floor() {
    const val = `v${v++}`, key = `${name}:floor`;
    if (String(await floor.sendCommand(['SET', key, val, 'NX', 'PX', '10000'])) !== 'OK') throw new Error('floor: not acquired');
    if (Number(await floor.sendCommand(['EVALSHA', sha, '1', key, val])) !== 1) throw new Error('floor: not released');
  },
  async engine() {
    const g = await engine.acquire(`${name}:engine`, { mode: 'exclusive', once: false, steal: false, ttl: 10_000, deadline: Infinity, signal: new AbortController().signal });
    if (g === null) throw new Error('engine: not acquired');
    await engine.release(`${name}:engine`, g.token, false);
  },
  async front() {
    (await locks.lock(`${name}:front`, { scope: 'cluster' }))!.unlock();
  },
  async served() {
    (await locks.lock(`${name}:served:${fresh++ % 64}`, { scope: 'cluster' }))!.unlock();
  },
  async redlock() {
    const l = await redlock.acquire([`${name}:redlock`], 10_000);
    await l.release();
  },
  async semaphore() {
    const m = new Mutex(io, `${name}:semaphore`, { acquireTimeout: 60_000 });
    await m.acquire();
    await m.release();
  },
};

const samples: Record<string, number[]> = {};
for (const [k, op] of Object.entries(candidates)) {
  samples[k] = [];
  for (let i = 0; i < 20; i++) await op(); // warm-up (the agent thread starts on the first front-door lock)
}
const time = async (k: string) => {
  const t0 = now();
  await candidates[k]!();
  samples[k]!.push(Number(now() - t0) / 1000);
};
const served = Object.keys(candidates).filter((k) => k !== 'front');
for (let r = 0; r < rounds; r++) {
  for (let i = 0; i < ops; i++) {
    for (let j = 0; j < served.length; j++) await time(served[(i + j) % served.length]!);
  }
  for (let i = 0; i < ops; i++) await time('front');
}
const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const out: Record<string, number> = {};
for (const [k, xs] of Object.entries(samples)) out[k] = p50(xs);
await engine.close();
floor.destroy();
io.disconnect();
process.send!(out, () => process.exit(0));
