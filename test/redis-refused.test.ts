// Cluster scope on Redis: servers latchkey must refuse, and bad input.
// A URL that is not one, names no engine, no host or a path that is no
// database number: ERR_LOCK_BACKEND at once, in the requesting thread,
// before anything is queued or started. A server that cannot be reached,
// refuses the password (wrong or missing), may evict lock keys
// (maxmemory-policy allkeys-*) or is a read-only replica: ERR_LOCK_BACKEND
// naming the cause; the process lives on. @redis/client not installed:
// ERR_LOCK_BACKEND naming the package.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { locks } from '../src/index.js';
import { bareProject } from './fixtures/bare-project.js';
import { closedPort } from './fixtures/cluster-util.js';
import { privateServer, redisChild, redisCleanup, redisUrl, uniquePrefix } from './fixtures/redis-util.js';

redisUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('refused');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;

afterEach(redisCleanup);

describe('Redis URLs that name nothing usable: ERR_LOCK_BACKEND before anything is queued', () => {
  const saved = { cluster: process.env.LATCHKEY_CLUSTER_URL, pg: process.env.LATCHKEY_PG_URL };
  afterAll(() => {
    for (const [k, v] of [['LATCHKEY_CLUSTER_URL', saved.cluster], ['LATCHKEY_PG_URL', saved.pg]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  test.each([
    ['not a URL', 'redis 127.0.0.1', /LATCHKEY_CLUSTER_URL is not a URL/],
    ['another scheme', 'http://127.0.0.1:6379', /names no engine latchkey has: its scheme is http:/],
    ['no host', 'redis://', /names no host/],
    ['a path that is no database number', 'redis://127.0.0.1:6379/locks', /path is "\/locks" \(expected nothing, or a database number/],
  ])('%s (%s)', async (_what, url, message) => {
    process.env.LATCHKEY_CLUSTER_URL = url;
    process.env.LATCHKEY_PG_URL = 'postgres://nobody@127.0.0.1:1/never'; // LATCHKEY_CLUSTER_URL wins, even when it is wrong
    const name = fresh('url');
    const t0 = performance.now();
    const lock = await locks.lock(name, { scope: 'cluster' }).catch((e: unknown) => e);
    const request = await locks.request(name, { scope: 'cluster' }, () => 'ran').catch((e: unknown) => e);
    let sync: unknown;
    try {
      locks.lockSync(name, { scope: 'cluster' });
    } catch (e) {
      sync = e;
    }
    const query = await locks.query({ scope: 'cluster' }).catch((e: unknown) => e);
    for (const e of [lock, request, sync, query]) {
      expect(e).toMatchObject({ code: 'ERR_LOCK_BACKEND' });
      expect((e as Error).message).toMatch(message);
    }
    expect(performance.now() - t0, 'at once, with nothing to wait for').toBeLessThan(1000);
    // Nothing was queued: the name has no queue in this process's cluster table.
    expect(locks.stats(name, { scope: 'cluster' })).toBeUndefined();
  });

  test('a URL with a password: the message never shows it', async () => {
    process.env.LATCHKEY_CLUSTER_URL = 'redis://user:s3cret@127.0.0.1:6379/x';
    const e = await locks.lock(fresh('secret'), { scope: 'cluster' }).catch((err: unknown) => err);
    expect(e).toMatchObject({ code: 'ERR_LOCK_BACKEND' });
    expect((e as Error).message).not.toContain('s3cret');
  });

  test('LATCHKEY_CLUSTER_URL picks the engine by scheme: steal is offered on redis://, refused on postgres:// (NotSupportedError)', async () => {
    process.env.LATCHKEY_CLUSTER_URL = 'postgres://nobody@127.0.0.1:1/never';
    const pg = await locks.lock(fresh('steal'), { scope: 'cluster', steal: true }).catch((e: unknown) => e);
    expect(pg).toMatchObject({ name: 'NotSupportedError' });
    expect((pg as Error).message).toMatch(/on PostgreSQL/);
  });
});

describe('Redis servers that cannot be used: ERR_LOCK_BACKEND naming the cause, and the process lives on', () => {
  async function refused(url: string, message: RegExp): Promise<void> {
    const c = await redisChild(url);
    const t0 = performance.now();
    const r = await c.call('lock', { key: 'x', name: fresh('srv'), opts: { timeout: 10_000 } }, 15_000);
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
    expect(r.error.message).toMatch(message);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(await c.call('query')).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
    expect(await c.call('ping')).toMatchObject({ ok: true });
  }

  test('nothing listens at the address', async () => {
    await refused(`redis://127.0.0.1:${await closedPort()}`, /cannot be reached \(LATCHKEY_CLUSTER_URL\)/);
  }, 30_000);

  test('a wrong password, and none where one is needed; the right one works', async () => {
    const s = await privateServer(['--requirepass', 'sekrit'], ':sekrit@');
    await refused(`redis://:wrong@127.0.0.1:${s.port}`, /refused the credentials/);
    await refused(`redis://127.0.0.1:${s.port}`, /refused the credentials/);
    const c = await redisChild(`redis://:sekrit@127.0.0.1:${s.port}`);
    const g = await c.call('lock', { key: 'x', name: fresh('auth'), opts: { timeout: 5000 } });
    expect(g).toMatchObject({ granted: true });
    expect(await c.call('unlock', { key: 'x' })).toMatchObject({ ok: true });
  }, 30_000);

  test('maxmemory-policy allkeys-lru (may evict lock keys) is refused; volatile-lru is not', async () => {
    const lru = await privateServer(['--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru']);
    await refused(lru.url, /may evict lock keys: its maxmemory-policy is allkeys-\*/);
    const volatile = await privateServer(['--maxmemory', '64mb', '--maxmemory-policy', 'volatile-lru']);
    const c = await redisChild(volatile.url);
    const g = await c.call('lock', { key: 'x', name: fresh('volatile'), opts: { timeout: 5000 } });
    expect(g).toMatchObject({ granted: true });
    expect(await c.call('unlock', { key: 'x' })).toMatchObject({ ok: true });
  }, 30_000);

  test('a read-only replica is refused', async () => {
    const master = await privateServer();
    const replica = await privateServer(['--replicaof', '127.0.0.1', String(master.port)]);
    await refused(replica.url, /read-only replica: point LATCHKEY_CLUSTER_URL at the master/);
  }, 30_000);

  test('a database number the server does not have', async () => {
    await refused(`${redisUrl()}/99`, /has no such database/);
  }, 30_000);
});

describe('@redis/client not installed', () => {
  test('scope cluster on a redis:// URL fails with ERR_LOCK_BACKEND naming the package, before anything is queued', () => {
    // latchkey as installed without the optional peer: the built package and its one dependency, nothing else.
    const dir = bareProject();
    try {
      fs.writeFileSync(join(dir, 'script.mjs'), `
const { locks } = await import('latchkey');
const err = await locks.lock('x', { scope: 'cluster' }).catch((e) => e);
const sync = (() => { try { locks.lockSync('x', { scope: 'cluster' }); } catch (e) { return e.code; } })();
console.log(JSON.stringify({ code: err.code, backend: err.backend, message: err.message, sync, queued: locks.stats('x', { scope: 'cluster' }) !== undefined }));
`);
      const env: NodeJS.ProcessEnv = { ...process.env, LATCHKEY_CLUSTER_URL: redisUrl() };
      delete env.NODE_OPTIONS;
      const r = spawnSync(process.execPath, ['script.mjs'], { cwd: dir, env, encoding: 'utf8', timeout: 30_000 });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
      expect(out).toMatchObject({ code: 'ERR_LOCK_BACKEND', backend: 'redis', sync: 'ERR_LOCK_BACKEND', queued: false });
      expect(out.message).toContain('npm install @redis/client');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
