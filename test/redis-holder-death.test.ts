// Cluster scope on Redis: holders and waiters that die, freeze, stay busy or
// lose their connection. Redis tells nobody that a client went away; the
// waiters look (engine probe: CLIENT LIST ID, every 200 ms while queued), so
// a dead holder's lock is taken over within 1 s, told `abandoned`, with a
// larger token; a frozen one when its lease (on the server's clock) runs
// out, and it is told when it resumes; a busy main thread keeps its lock
// (the agent thread renews the lease).
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { askerToldOfDeath, oneOfTwoToldOfDeath, waiterToldOfDeath } from './fixtures/tier-util.js';
import {
  agentKeysOf, connectionsOf, forgetRedisNames, holdersOf, hr, msBetween, raw, redisChild, redisCleanup, redisUrl, uniquePrefix, until,
  waitingPids,
} from './fixtures/redis-util.js';

redisUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('death');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;

afterEach(redisCleanup);
afterAll(() => forgetRedisNames(PREFIX));

/** Resolves once the server's queue for `name` lists `pids` (in that order, nobody else). */
async function queued(name: string, ...pids: number[]): Promise<void> {
  const c = await raw();
  await until(`the queue of ${name} is [${pids.join(', ')}]`, async () => JSON.stringify(await waitingPids(c, name)) === JSON.stringify(pids));
}

describe('Redis holder death', () => {
  test('a waiting process gets the lock within 1 s of the holder\'s SIGKILL, abandoned, with a larger token', async () => {
    const name = fresh('victim');
    const [holder, waiter] = await Promise.all([redisChild(), redisChild()]);
    const ms = await waiterToldOfDeath(holder, waiter, name, () => queued(name, waiter.pid));
    console.log(`[redis holder death] granted ${ms.toFixed(1)} ms after the SIGKILL`);
  }, 30_000);

  test('a process that asks right after the SIGKILL gets it within 1 s, abandoned', async () => {
    const name = fresh('after');
    const [holder, next] = await Promise.all([redisChild(), redisChild()]);
    // Its agent thread started and connected first (loading the Redis client alone takes ~150 ms here): the 1 s is the takeover's.
    await next.call('lock', { key: 'warm', name: fresh('warm') });
    await next.call('unlock', { key: 'warm' });
    await askerToldOfDeath(holder, next, name);
  }, 30_000);

  test('two processes wait: exactly one of them is told the holder died', async () => {
    const name = fresh('two');
    const [holder, w1, w2] = await Promise.all([redisChild(), redisChild(), redisChild()]);
    await oneOfTwoToldOfDeath(holder, w1, w2, name, 300);
  }, 30_000);

  test('the holder is killed while the grant message is on its way to it: the grant passes on within 1 s', async () => {
    const name = fresh('inflight');
    const [holder, a, b] = await Promise.all([redisChild(), redisChild(), redisChild()]);
    const c = await raw();
    const h = await holder.call('lock', { key: 'h', name });
    expect(h).toMatchObject({ granted: true });
    expect(await a.call('request', { key: 'a', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await queued(name, a.pid);
    expect(await b.call('request', { key: 'b', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await queued(name, a.pid, b.pid);
    // a is frozen: its agent cannot read the grant the release pushes to its inbox.
    a.kill('SIGSTOP');
    await holder.call('unlock', { key: 'h' });
    await until('the server granted it to a', async () => (await holdersOf(c, name)).some((x) => x.pid === a.pid));
    // The server answered a's blocking pop with the grant message at once: it sits in a's socket, unread.
    const killedAt = hr();
    a.kill('SIGKILL');
    const g = await b.next((m) => m.ev === 'granted' && m.key === 'b', 10_000, 'b\'s grant');
    const ms = msBetween(killedAt, g.at);
    expect(ms).toBeLessThan(1000);
    // The server cannot tell 'died before reading its grant' from 'died using it': b is told, to be safe.
    expect(g.abandoned).toBe(true);
    expect(g.token).toBeGreaterThan(h.token);
    console.log(`[redis grant in flight] passed on ${ms.toFixed(1)} ms after the SIGKILL`);
  }, 30_000);

  test('a waiter killed while queued leaves the queue, and the next one is granted at once, not abandoned', async () => {
    const name = fresh('waiter');
    const [holder, a, b] = await Promise.all([redisChild(), redisChild(), redisChild()]);
    const h = await holder.call('lock', { key: 'h', name });
    expect(await a.call('request', { key: 'a', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await queued(name, a.pid);
    expect(await b.call('request', { key: 'b', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await queued(name, a.pid, b.pid);
    const t0 = performance.now();
    a.kill('SIGKILL');
    await queued(name, b.pid); // b's probe found a's connection gone
    const goneMs = performance.now() - t0;
    expect(goneMs).toBeLessThan(1000);
    const u = await holder.call('unlock', { key: 'h' });
    const g = await b.next((m) => m.ev === 'granted' && m.key === 'b', 10_000, 'b\'s grant');
    expect(g).toMatchObject({ abandoned: false });
    expect(g.token).toBeGreaterThan(h.token);
    expect(msBetween(u.t0, g.at)).toBeLessThan(500);
    console.log(`[redis waiter death] gone from the queue ${goneMs.toFixed(0)} ms after the SIGKILL`);
  }, 30_000);

  test('a holder SIGSTOPped past its ttl is taken over; resumed, it is told ERR_LOCK_COMPROMISED at once', async () => {
    const name = fresh('frozen');
    const [holder, waiter] = await Promise.all([redisChild(), redisChild()]);
    const h = await holder.call('lock', { key: 'h', name, opts: { ttl: 1000 } });
    expect(h).toMatchObject({ granted: true });
    expect(await waiter.call('request', { key: 'w', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await queued(name, waiter.pid);
    const stoppedAt = hr();
    holder.kill('SIGSTOP');
    const g = await waiter.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the grant');
    const ms = msBetween(stoppedAt, g.at);
    // Its lease had up to 1 s left (renewed every ttl/3); a waiter's probe reaps it within 200 ms of its end.
    expect(ms).toBeGreaterThan(500);
    expect(ms).toBeLessThan(2500);
    expect(g).toMatchObject({ abandoned: true });
    expect(g.token).toBeGreaterThan(h.token);
    const resumedAt = hr();
    holder.kill('SIGCONT');
    const told = await holder.next((m) => m.ev === 'compromised' && m.key === 'h', 5000, 'the holder told');
    expect(told.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
    expect(msBetween(resumedAt, told.at)).toBeLessThan(1000);
    expect(await holder.next((m) => m.ev === 'aborted' && m.key === 'h', 5000, 'lock.signal')).toMatchObject({ error: { code: 'ERR_LOCK_COMPROMISED' } });
    console.log(`[redis frozen holder] taken over ${ms.toFixed(0)} ms after SIGSTOP (ttl 1000); told '${told.error.reason}' ${msBetween(resumedAt, told.at).toFixed(1)} ms after SIGCONT`);
  }, 30_000);

  test('a holder whose main thread is busy for 5 × its ttl keeps the lock: its agent thread renews the lease', async () => {
    // ttl 1 s, main thread busy 5 s: the same proof as 15 s busy with the default 10 s ttl... at a third of the wall time.
    const name = fresh('busy');
    const [holder, waiter] = await Promise.all([redisChild(), redisChild()]);
    const c = await raw();
    const h = await holder.call('lock', { key: 'h', name, opts: { ttl: 1000 } });
    expect(h).toMatchObject({ granted: true });
    expect(await waiter.call('request', { key: 'w', name, opts: { timeout: 20_000 } })).toMatchObject({ queued: true });
    await queued(name, waiter.pid);
    const before = (await holdersOf(c, name))[0]!.expires;
    const busy = await holder.call('busy', { ms: 5000 }, 15_000);
    expect(busy).toMatchObject({ ok: true });
    // The lease was renewed meanwhile (its end moved by about the 5 s), and nobody else got in.
    const after = await holdersOf(c, name);
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({ pid: holder.pid, token: Math.floor(h.token / 1000) });
    expect(after[0]!.expires - before).toBeGreaterThan(4000);
    expect(waiter.seen((m) => m.ev === 'granted'), 'the waiter got in while the holder was busy').toBe(false);
    expect(holder.seen((m) => m.ev === 'compromised' || m.ev === 'aborted'), 'the busy holder was told it lost the lock').toBe(false);
    const u = await holder.call('unlock', { key: 'h' });
    expect(u).toMatchObject({ ok: true });
    const g = await waiter.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the grant');
    expect(g).toMatchObject({ abandoned: false });
    expect(g.token).toBeGreaterThan(h.token);
  }, 30_000);

  test('a process that unlocks and exits leaves nothing behind and nobody is told abandoned; one that exits holding gives it back, abandoned', async () => {
    const name = fresh('exit');
    const c = await raw();
    let last = 0;
    for (let round = 0; round < 2; round++) {
      const p = await redisChild();
      const h = await p.call('lock', { key: 'h', name, opts: { timeout: 5000 } });
      expect(h).toMatchObject({ granted: true, abandoned: false });
      expect(h.token).toBeGreaterThan(last);
      last = h.token as number;
      const [inbox] = await agentKeysOf(c, p.pid);
      expect(inbox).toBeDefined();
      p.send({ id: 999, op: 'unlockExit', key: 'h' });
      expect(await p.exited).toMatchObject({ code: 0 });
      // Its agent closed its engine at exit: its agent key and inbox are gone. The exit waits for the
      // close's answer at most EXIT_MS (cluster.ts); the DEL it sent may reach the server just after.
      await until(`process ${p.pid}'s agent key and inbox gone`, async () => Number(await c.send(['EXISTS', inbox!, inbox!.replace(':agent:', ':inbox:')])) === 0, 3000);
    }
    expect(await holdersOf(c, name)).toEqual([]);
    // A process that exits (process.exit) while a thread holds the lock: given back at exit, told to the next one.
    const [p, next] = await Promise.all([redisChild(), redisChild()]);
    const h = await p.call('lock', { key: 'h', name, opts: { timeout: 5000 } });
    expect(h.token).toBeGreaterThan(last);
    expect(await next.call('request', { key: 'n', name, opts: { timeout: 10_000 } })).toMatchObject({ queued: true });
    await queued(name, next.pid);
    const [agent] = await agentKeysOf(c, p.pid);
    const exitAt = hr();
    p.send({ id: 998, op: 'exit', code: 0 });
    const g = await next.next((m) => m.ev === 'granted' && m.key === 'n', 10_000, 'the next grant');
    expect(g).toMatchObject({ abandoned: true });
    expect(g.token).toBeGreaterThan(h.token);
    expect(msBetween(exitAt, g.at)).toBeLessThan(1000);
    // Given back by the exiting process itself, which closed its engine: its agent key is gone (a reap by the
    // waiter would only have given it a TTL). Looked for until gone, as above: the close's DEL may land after the exit.
    await until(`process ${p.pid}'s agent key gone`, async () => Number(await c.send(['EXISTS', agent!])) === 0, 3000);
  }, 30_000);

  test('CLIENT KILL of a holder\'s connection: it is told at once, the waiter gets the lock within 1 s, and the holder\'s agent reconnects', async () => {
    const name = fresh('clientkill');
    const [holder, waiter] = await Promise.all([redisChild(), redisChild()]);
    const c = await raw();
    const h = await holder.call('lock', { key: 'h', name });
    expect(await waiter.call('request', { key: 'w', name, opts: { timeout: 15_000 } })).toMatchObject({ queued: true });
    await queued(name, waiter.pid);
    const { cmd } = await connectionsOf(c, holder.pid);
    expect(cmd).toHaveLength(1);
    const killedAt = hr();
    await c.send(['CLIENT', 'KILL', 'ID', cmd[0]!]);
    const told = await holder.next((m) => m.ev === 'compromised' && m.key === 'h', 5000, 'the holder told');
    expect(told.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED', reason: 'owner-changed' });
    const g = await waiter.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the grant');
    expect(msBetween(killedAt, g.at)).toBeLessThan(1000);
    expect(g).toMatchObject({ abandoned: true });
    expect(g.token).toBeGreaterThan(h.token);
    // The holder's agent opens a new session for its next request (once the compromised lock is let go of locally).
    await holder.call('unlock', { key: 'h' });
    expect(await waiter.call('release', { key: 'w' })).toMatchObject({ ok: true });
    const again = await holder.call('lock', { key: 'h2', name, opts: { timeout: 5000 } });
    expect(again).toMatchObject({ granted: true, abandoned: false });
    expect(again.token).toBeGreaterThan(g.token);
    expect(await holder.call('unlock', { key: 'h2' })).toMatchObject({ ok: true });
    // And the blocking connection, the one that waits on the inbox: the same.
    const h3 = await holder.call('lock', { key: 'h3', name });
    const { blk } = await connectionsOf(c, holder.pid);
    expect(blk).toHaveLength(1);
    await c.send(['CLIENT', 'KILL', 'ID', blk[0]!]);
    expect(await holder.next((m) => m.ev === 'compromised' && m.key === 'h3', 5000, 'told of the blocking connection')).toMatchObject({ error: { reason: 'owner-changed' } });
    const g4 = await waiter.call('lock', { key: 'w4', name, opts: { timeout: 5000 } });
    expect(g4).toMatchObject({ granted: true, abandoned: true });
    expect(g4.token).toBeGreaterThan(h3.token);
    console.log(`[redis client kill] holder told ${msBetween(killedAt, told.at).toFixed(1)} ms, waiter granted ${msBetween(killedAt, g.at).toFixed(1)} ms after the kill`);
  }, 30_000);
});


