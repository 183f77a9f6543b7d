// Cluster scope: a holder whose connection to the server drops (a TCP proxy
// in front of the server resets both sides of every connection at once) is
// told at once (onCompromised; its guard's unlock() throws
// ERR_LOCK_COMPROMISED), the server frees the lock with the session, and a
// process waiting for it is granted at once, told abandoned. The holder's
// process goes on with new connections.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { type Server, type Socket, connect, createServer } from 'node:net';
import {
  clusterCleanup, clusterKid, forgetNames, hr, msBetween, pgClient, pgPort, pgUrl, uniquePrefix, useServerGate, waitingOnServer,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('dropped');

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

/** A TCP proxy to the server: drop() resets every connection it carries, both sides. */
async function proxy(): Promise<{ url: string; drop: () => void; close: () => Promise<void> }> {
  const target = new URL(pgUrl()), pairs = new Set<[Socket, Socket]>();
  const server: Server = createServer((client) => {
    const upstream = connect(pgPort(), target.hostname);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const u = new URL(pgUrl());
  u.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    url: u.toString(),
    drop: () => {
      for (const [a, b] of pairs) {
        a.resetAndDestroy();
        b.resetAndDestroy();
      }
      pairs.clear();
    },
    close: async () => {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('cluster connection dropped', () => {
  test('the holder\'s connection drops: it is told at once, the waiter is granted at once (abandoned), and the holder goes on', async () => {
    const name = `${PREFIX}-x`;
    const pg = await pgClient();
    const p = await proxy();
    try {
      const [holder, waiter] = await Promise.all([clusterKid({ LATCHKEY_PG_URL: p.url }), clusterKid()]);
      const g = await holder.call('lock', { key: 'h', name });
      expect(g).toMatchObject({ granted: true });
      const waits = waiter.call('lock', { key: 'w', name, opts: { timeout: 10_000 } });
      await waitingOnServer(pg, name, waiter.pid);
      const droppedAt = hr();
      p.drop();
      const w = await waits;
      expect(w).toMatchObject({ granted: true, abandoned: true });
      expect(w.token).toBeGreaterThan(g.token);
      console.log(`[dropped] waiter granted ${msBetween(droppedAt, w.at).toFixed(1)} ms after the drop`);
      expect(msBetween(droppedAt, w.at)).toBeLessThan(1000);
      // The holder was told at once, before the waiter's grant was answered (held back 100 ms after a death).
      const told = await holder.next((m) => m.ev === 'compromised' && m.key === 'h', 5000, 'onCompromised');
      console.log(`[dropped] holder told ${msBetween(droppedAt, told.at).toFixed(1)} ms after the drop`);
      expect(told.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
      expect(told.at).toBeLessThan(w.at);
      const u = await holder.call('unlock', { key: 'h' });
      expect(u).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });
      // The holder's process goes on: new connections, and the lock after the waiter.
      const again = holder.call('lock', { key: 'h2', name, opts: { timeout: 10_000 } });
      await waitingOnServer(pg, name, holder.pid);
      expect(await waiter.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
      const g2 = await again;
      expect(g2).toMatchObject({ granted: true, abandoned: false });
      expect(g2.token).toBeGreaterThan(w.token);
      expect(await holder.call('unlock', { key: 'h2' })).toMatchObject({ ok: true });
    } finally {
      await p.close();
    }
  }, 30_000);
});
