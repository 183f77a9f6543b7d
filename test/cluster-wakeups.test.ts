// Cluster scope: a release wakes at most the next waiter (issue 14: no
// message to processes that wait for other names or cannot be granted).
// Three processes take and give back X for 1.5 s (hundreds of hand-overs);
// meanwhile a bystander holds Y and waits in the server for Z (held by a
// fourth process), and a fifth waits for W behind a holder that never lets
// go. Neither reads more than a few hundred bytes from its sockets in that
// time (a message per release of X, as a NOTIFY to every process was, is
// ≥ 50 bytes each: tens of kB), and each is granted once its lock is let go.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import {
  bytesRead, clusterCleanup, clusterKid, forgetNames, pgClient, pgUrl, uniquePrefix, useServerGate, waitingOnServer,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('wake');

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

describe('cluster release wake-ups', () => {
  test('3 processes hand X over for 1.5 s: processes waiting for other names read next to nothing, and are granted when their lock is let go', async () => {
    const [x, y, z, w] = ['x', 'y', 'z', 'w'].map((t) => `${PREFIX}-${t}`);
    const pg = await pgClient();
    const [a, b, c, bystander, holder, blocked] = await Promise.all(Array.from({ length: 6 }, () => clusterKid()));
    expect(await holder.call('lock', { key: 'z', name: z })).toMatchObject({ granted: true });
    expect(await holder.call('lock', { key: 'w', name: w })).toMatchObject({ granted: true });
    expect(await bystander.call('lock', { key: 'y', name: y })).toMatchObject({ granted: true });
    const zWait = bystander.call('lock', { key: 'z', name: z, opts: { timeout: 20_000 } }, 25_000);
    const wWait = blocked.call('lock', { key: 'w', name: w, opts: { timeout: 20_000 } }, 25_000);
    await waitingOnServer(pg, z, bystander.pid);
    await waitingOnServer(pg, w, blocked.pid);
    // Both are parked in the server and quiet now: their agents have nothing to say until their turn.
    await new Promise((r) => setTimeout(r, 200));

    const before = [bytesRead(bystander.pid), bytesRead(blocked.pid)];
    const loops = await Promise.all([a, b, c].map((k) => k.call('loop', { name: x, ms: 1500 }, 20_000)));
    const after = [bytesRead(bystander.pid), bytesRead(blocked.pid)];
    const grants = loops.reduce((n, l) => n + (l.ops as number), 0);
    const read = after.map((v, i) => v - before[i]!);
    console.log(`[wake-ups] ${grants} grants of X among 3 processes (${loops.map((l) => l.ops).join('/')}); bytes read meanwhile: bystander ${read[0]}, blocked waiter ${read[1]}`);
    for (const l of loops) expect(l).toMatchObject({ ok: true });
    // Enough hand-overs that a message per release to every process would be tens of kB.
    expect(grants).toBeGreaterThanOrEqual(100);
    expect(read[0], 'bytes the bystander (holding Y, waiting for Z) read while X changed hands').toBeLessThan(1000);
    expect(read[1], 'bytes the blocked waiter (waiting for W) read while X changed hands').toBeLessThan(1000);
    // Tokens of X rise in each process's grant order.
    for (const l of loops) {
      const t = l.tokens as number[];
      expect(t.every((v, i) => i === 0 || v > t[i - 1]!)).toBe(true);
    }

    // And each of them is granted as soon as its lock is let go.
    expect(await holder.call('unlock', { key: 'z' })).toMatchObject({ ok: true });
    expect(await zWait).toMatchObject({ granted: true, abandoned: false });
    expect(await holder.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
    expect(await wWait).toMatchObject({ granted: true, abandoned: false });
  }, 40_000);
});
