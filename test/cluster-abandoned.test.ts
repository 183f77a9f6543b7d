// Cluster scope: `abandoned` is exact, round after round. A holder that
// releases cleanly is never reported dead to the waiter parked behind it
// (its release receipt says so, though its row still names it); a holder
// whose session ends holding the lock (pg_terminate_backend) is always
// reported to the next holder; and a thread that dies holding the lock in a
// process that lives on is reported to the next process.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import {
  type Child, clusterCleanup, clusterKid, forgetNames, pgClient, pgUrl, terminateHolder, uniquePrefix, useServerGate, waitingOnServer,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('abandoned');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

describe('cluster abandoned', () => {
  test('12 rounds: a clean release to a parked waiter is never reported; a holder whose session is terminated always is', async () => {
    const name = fresh('exact');
    const pg = await pgClient();
    const [a, b] = await Promise.all([clusterKid(), clusterKid()]) as [Child, Child];
    const clean: boolean[] = [], died: boolean[] = [];
    let last = 0;
    for (let round = 0; round < 12; round++) {
      // Clean: a holds, b waits in the server, a lets go.
      const ga = await a.call('lock', { key: 'a', name, opts: { timeout: 10_000 } });
      expect(ga).toMatchObject({ granted: true });
      expect(ga.token).toBeGreaterThan(last);
      const bWaits = b.call('lock', { key: 'b', name, opts: { timeout: 10_000 } });
      await waitingOnServer(pg, name, b.pid);
      expect(await a.call('unlock', { key: 'a' })).toMatchObject({ ok: true });
      const gb = await bWaits;
      expect(gb).toMatchObject({ granted: true });
      expect(gb.token).toBeGreaterThan(ga.token);
      clean.push(gb.abandoned as boolean);
      // Death: b holds, a waits in the server, b's session is terminated.
      const aWaits = a.call('lock', { key: 'a', name, opts: { timeout: 10_000 } });
      await waitingOnServer(pg, name, a.pid);
      expect(await terminateHolder(pg, name)).toBe(1);
      const ga2 = await aWaits;
      expect(ga2).toMatchObject({ granted: true });
      expect(ga2.token).toBeGreaterThan(gb.token);
      died.push(ga2.abandoned as boolean);
      // b's guard knows it lost the lock; a lets go for the next round.
      expect(await b.call('unlock', { key: 'b' })).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_COMPROMISED' } });
      expect(await a.call('unlock', { key: 'a' })).toMatchObject({ ok: true });
      last = ga2.token as number;
    }
    console.log(`[abandoned] clean hand-overs reported dead: ${clean.filter(Boolean).length} of ${clean.length}; terminated holders reported: ${died.filter(Boolean).length} of ${died.length}`);
    expect(clean, 'a clean release reported as a death').toEqual(clean.map(() => false));
    expect(died, 'a terminated holder not reported').toEqual(died.map(() => true));
  }, 60_000);

  test('a worker thread terminated while it holds: the next process is told abandoned, and the one after it is not', async () => {
    const name = fresh('thread');
    const pg = await pgClient();
    const [a, b] = await Promise.all([clusterKid(), clusterKid()]) as [Child, Child];
    const held = await a.call('workerHold', { key: 'w', name });
    expect(held).toMatchObject({ granted: true });
    const bWaits = b.call('lock', { key: 'b', name, opts: { timeout: 10_000 } });
    await waitingOnServer(pg, name, b.pid);
    expect(await a.call('workerKill', { key: 'w' })).toMatchObject({ ok: true });
    const gb = await bWaits;
    expect(gb).toMatchObject({ granted: true, abandoned: true });
    expect(gb.token).toBeGreaterThan(held.token);
    // a's process lives on: it waits for the name, and is told nothing (b let go cleanly).
    const aWaits = a.call('lock', { key: 'a', name, opts: { timeout: 10_000 } });
    await waitingOnServer(pg, name, a.pid);
    expect(await b.call('unlock', { key: 'b' })).toMatchObject({ ok: true });
    expect(await aWaits).toMatchObject({ granted: true, abandoned: false });
    expect(await a.call('unlock', { key: 'a' })).toMatchObject({ ok: true });
  }, 30_000);
});
