// Cluster scope when the agent gets no answer: a "server" that accepts TCP
// connections and never speaks (a hung server, or a network that drops
// packets once connected), and no LATCHKEY_PG_URL at all. A request's
// `timeout` and `ifAvailable` still answer within a few seconds, query()
// rejects, and nothing takes the process down.
// Each test cleans up its own children, so that the tests can run at once
// (each waits ~10 s: the agent's query deadline).
import { afterAll, describe, test } from 'vitest';
import { type Server, type Socket, createServer } from 'node:net';
import { Child, cleanup, clusterChild, pgUrl } from './fixtures/cluster-util.js';

pgUrl(); // the cluster suite needs the server: fail here, loudly, when it is not given

afterAll(cleanup);

async function silentServer(): Promise<{ url: string; close: () => Promise<void>; accepted: () => number }> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const s: Server = createServer((sock) => {
    accepted++;
    sockets.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as { port: number };
  return {
    url: `postgres://latchkey@127.0.0.1:${port}/latchkey`,
    accepted: () => accepted,
    close: async () => {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
}

/** The reply to `op`, or {hung} when none came within `ms`. */
async function within(c: Child, op: string, args: Record<string, unknown>, ms: number): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  try {
    return { ...(await c.call(op, args, ms)), ms: performance.now() - t0 };
  } catch (err) {
    return { hung: `no reply within ${ms} ms`, exited: c.gone, detail: String((err as Error).message).slice(0, 300) };
  }
}

/** Whether the child is still running `ms` from now, answering a ping. */
async function aliveAfter(c: Child, ms: number): Promise<{ alive: boolean; stderr: string }> {
  await new Promise((r) => setTimeout(r, ms));
  if (c.gone) return { alive: false, stderr: c.stderr.join('').split('\n').slice(0, 6).join('\n') };
  const p = await within(c, 'ping', {}, 2000);
  return { alive: p.ok === true, stderr: c.stderr.join('').split('\n').slice(0, 6).join('\n') };
}

describe.concurrent('cluster scope with a server that never answers', () => {
  test('lock() with timeout 1000 rejects (ERR_LOCK_TIMEOUT or ERR_LOCK_BACKEND) within 5 s', async ({ expect }) => {
    const server = await silentServer();
    const c = await clusterChild({ LATCHKEY_PG_URL: server.url });
    try {
      const r = await within(c, 'lock', { key: 'x', name: 'lkt-silent-timeout', opts: { timeout: 1000 } }, 5000);
      expect(server.accepted(), 'the agent connected to the silent server').toBeGreaterThan(0);
      expect(r, 'a request with a 1 s timeout against a server that never answers').toMatchObject({ granted: false });
      expect(['ERR_LOCK_TIMEOUT', 'ERR_LOCK_BACKEND']).toContain((r.error as { code: string }).code);
    } finally {
      await c.destroy();
      await server.close();
    }
  }, 20_000);

  test('lock() with ifAvailable answers (null or ERR_LOCK_BACKEND) within 5 s', async ({ expect }) => {
    const server = await silentServer();
    const c = await clusterChild({ LATCHKEY_PG_URL: server.url });
    try {
      const r = await within(c, 'lock', { key: 'x', name: 'lkt-silent-ifavailable', opts: { ifAvailable: true } }, 5000);
      expect(r, 'ifAvailable against a server that never answers').toMatchObject({ granted: false });
      if (r.error !== undefined) expect(r.error).toMatchObject({ code: 'ERR_LOCK_BACKEND' });
    } finally {
      await c.destroy();
      await server.close();
    }
  }, 20_000);

  test('query() rejects ERR_LOCK_BACKEND, and the process lives on after it', async ({ expect }) => {
    const server = await silentServer();
    const c = await clusterChild({ LATCHKEY_PG_URL: server.url });
    try {
      const r = await within(c, 'query', {}, 15_000);
      expect.soft(r).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
      const after = await aliveAfter(c, 1000);
      expect(after.alive, `the process died after query() rejected:\n${after.stderr}`).toBe(true);
    } finally {
      await c.destroy();
      await server.close();
    }
  }, 30_000);
});

describe.concurrent('cluster scope without LATCHKEY_PG_URL', () => {
  test('lock() and request() reject ERR_LOCK_BACKEND at once, naming LATCHKEY_PG_URL', async ({ expect }) => {
    const c = await clusterChild({ LATCHKEY_PG_URL: undefined });
    try {
      const r = await within(c, 'lock', { key: 'x', name: 'lkt-nourl' }, 3000);
      expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
      expect((r.error as { message: string }).message).toMatch(/LATCHKEY_PG_URL is not set/);
      expect(await within(c, 'request', { key: 'r', name: 'lkt-nourl' }, 3000)).toMatchObject({ queued: true });
      expect(await c.next((m) => m.ev === 'settled', 3000)).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
    } finally {
      await c.destroy();
    }
  }, 20_000);

  test('query() rejects ERR_LOCK_BACKEND at once, naming LATCHKEY_PG_URL, and the process lives on', async ({ expect }) => {
    const c = await clusterChild({ LATCHKEY_PG_URL: undefined });
    try {
      const r = await within(c, 'query', {}, 15_000);
      expect.soft(r, 'query() without LATCHKEY_PG_URL').toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
      expect.soft(String((r.error as { message?: string } | undefined)?.message), 'the error says what is missing').toMatch(/LATCHKEY_PG_URL is not set/);
      expect.soft(r.ms as number, 'ms until query() rejected').toBeLessThan(3000);
      const after = await aliveAfter(c, 1000);
      expect(after.alive, `the process died after query() rejected:\n${after.stderr}`).toBe(true);
    } finally {
      await c.destroy();
    }
  }, 30_000);
});
