// The command line on Redis: `latchkey run --scope cluster` takes the lock
// on the server LATCHKEY_CLUSTER_URL names, and `latchkey status --scope
// cluster` lists every machine's cluster locks as the server keeps them:
// the holder with its host, pid, the token its command was given and the
// lease left; the waiter.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Latchkey, cleanup, freshDir, holdArgs } from './fixtures/cli-util.js';
import { forgetRedisNames, redisUrl, uniquePrefix } from './fixtures/redis-util.js';

redisUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('cli');
const env = () => ({ LATCHKEY_CLUSTER_URL: redisUrl() });

afterEach(cleanup);
afterAll(() => forgetRedisNames(PREFIX));

/** `latchkey ARGS...` to its end, on the Redis server. */
async function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const l = new Latchkey(args, null, env());
  l.proc.stdin!.end();
  const exit = await l.exited;
  return { code: exit.code, stdout: l.stdout, stderr: l.stderr };
}

interface Report { scope: string; backend: string; location: string; locks: Array<Record<string, unknown>> }
async function status(): Promise<Report> {
  const r = await run(['status', '--scope', 'cluster', '--json']);
  if (r.code !== 0) throw new Error(`latchkey status --scope cluster --json exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Report;
}

describe('latchkey on Redis', () => {
  test('run --scope cluster excludes across processes; status --scope cluster shows the holder (its token, host, lease) and the waiter', async () => {
    const name = `${PREFIX}-run`, stamps = join(freshDir(), 'stamps');
    const a = new Latchkey(holdArgs(name, stamps, 'a', ['--scope', 'cluster', '--ttl', '5000']), null, env());
    const seenA = await a.started('a');
    expect(seenA.abandoned).toBe('0');
    const b = new Latchkey(holdArgs(name, stamps, 'b', ['--scope', 'cluster']), null, env());
    let r: Report;
    for (const end = Date.now() + 20_000; ;) {
      r = await status();
      if (r.locks.some((l) => l.name === name && l.state === 'waiting' && l.pid === b.pid)) break;
      if (Date.now() > end) throw new Error(`b never showed as waiting: ${JSON.stringify(r)}`);
    }
    expect(r).toMatchObject({ scope: 'cluster', backend: 'redis' });
    expect(r.location).toBe(redisUrl());
    const held = r.locks.filter((l) => l.name === name && l.state === 'held');
    expect(held).toHaveLength(1);
    expect(held[0]).toMatchObject({ mode: 'exclusive', pid: a.pid, host: hostname(), token: seenA.token });
    expect(held[0]!.leaseLeftMs as number).toBeGreaterThan(0);
    expect(held[0]!.leaseLeftMs as number).toBeLessThanOrEqual(5000);
    expect(b.lines.some((l) => l.startsWith('started b')), 'b ran while a held the lock').toBe(false);

    const text = await run(['status', '--scope', 'cluster', name]);
    expect(text.code).toBe(0);
    expect(text.stdout.split('\n')[0]).toMatch(/^redis backend at redis:\/\/127\.0\.0\.1:\d+: 1 held, 1 waiting$/);
    const heldLine = text.stdout.split('\n').find((l) => l.includes(' held '))!;
    expect(heldLine.split(/\s+/).slice(0, 6)).toEqual([name, 'held', 'exclusive', hostname(), String(a.pid), String(seenA.token)]);

    a.go();
    const seenB = await b.started('b');
    expect(seenB.token).toBeGreaterThan(seenA.token);
    expect(seenB.abandoned).toBe('0');
    b.go();
    expect(await a.exited).toMatchObject({ code: 0 });
    expect(await b.exited).toMatchObject({ code: 0 });
    expect((await status()).locks.filter((l) => l.name === name)).toEqual([]);
  }, 60_000);

  test('status --scope with anything but host or cluster is a usage error (exit 64)', async () => {
    const r = await run(['status', '--scope', 'thread']);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/--scope must be host or cluster/);
  }, 30_000);
});
