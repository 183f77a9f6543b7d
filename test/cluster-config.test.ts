// Cluster scope: what cannot work is said clearly, as ERR_LOCK_BACKEND, and
// leaves nothing behind. A LATCHKEY_PG_URL that is not a PostgreSQL URL is
// refused before anything is queued or connected; a database that does not
// exist is named as such; a role that may not create anything works with a
// schema an administrator made (given the rights the README lists, refused
// without them); and a grant that fails on the server after it
// took the lock (here a trigger makes the grant's row update fail) fails
// the request with the lock let go, not held by a session nobody uses.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import {
  clusterCleanup, clusterKid, forgetNames, pgClient, pgPort, pgUrl, portsTo, serverLocks, uniquePrefix, untilServer, useServerGate,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('config');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;

useServerGate();
afterEach(clusterCleanup);
afterAll(() => forgetNames(PREFIX));

describe('cluster configuration and server errors', () => {
  test('LATCHKEY_PG_URL that is not a URL, or not postgres://: ERR_LOCK_BACKEND saying so, at once, with no connection', async () => {
    for (const [url, message] of [
      ['not a url', /LATCHKEY_PG_URL is not a URL/],
      ['http://127.0.0.1:54329/latchkey', /LATCHKEY_PG_URL is not a PostgreSQL URL: its scheme is http:/],
    ] as const) {
      const c = await clusterKid({ LATCHKEY_PG_URL: url });
      const t0 = performance.now();
      for (const op of ['lock', 'query'] as const) {
        const r = await c.call(op, { key: 'x', name: fresh('url') });
        expect(r, `${op} with ${url}`).toMatchObject({ error: { code: 'ERR_LOCK_BACKEND' } });
        expect(r.error.message).toMatch(message);
      }
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(portsTo(c.pid, pgPort())).toEqual([]);
    }
  }, 30_000);

  test('a database that does not exist: ERR_LOCK_BACKEND naming it as missing', async () => {
    const u = new URL(pgUrl());
    u.pathname = `/lk_missing_${process.pid}`;
    const c = await clusterKid({ LATCHKEY_PG_URL: u.toString() });
    const r = await c.call('lock', { key: 'x', name: fresh('nodb') });
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
    expect(r.error.message).toMatch(/has no such database/);
  }, 30_000);

  test('a role that may not create anything uses a schema an administrator made, given the rights the README lists', async () => {
    const tag = `${process.pid}_${Math.floor(Math.random() * 1e9)}`, db = `lk_admin_${tag}`, role = `lk_user_${tag}`;
    const admin = await pgClient();
    await admin.query(`CREATE DATABASE ${db}`);
    await admin.query(`CREATE ROLE ${role} LOGIN`);
    try {
      const u = new URL(pgUrl());
      u.pathname = `/${db}`;
      // The administrator's first use makes the schema.
      const adm = await clusterKid({ LATCHKEY_PG_URL: u.toString() });
      expect(await adm.call('lock', { key: 'w', name: 'warm' })).toMatchObject({ granted: true });
      expect(await adm.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
      // It ends as a program does (its exit settles its release: nobody is told it died).
      adm.send({ id: 999, op: 'exit', code: 0 });
      expect(await adm.exited).toMatchObject({ code: 0 });
      const own = await pgClient(u.toString());
      await own.query('REVOKE CREATE ON SCHEMA public FROM PUBLIC');
      const user = new URL(u);
      user.username = role;
      // Without the rights: refused, saying so.
      const c1 = await clusterKid({ LATCHKEY_PG_URL: user.toString() });
      const refused = await c1.call('lock', { key: 'x', name: 'x' });
      expect(refused).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
      expect(refused.error.message).toMatch(/lacks the rights/);
      await c1.destroy();
      // With them: it works, tokens and all, and nothing is created.
      await own.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON latchkey_reserved, latchkey_live, latchkey_sharers, latchkey_procs TO ${role}`);
      await own.query(`GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO ${role}`);
      await own.query(`GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA public TO ${role}`);
      const c2 = await clusterKid({ LATCHKEY_PG_URL: user.toString() });
      const a = await c2.call('lock', { key: 'a', name: 'warm' });
      expect(a).toMatchObject({ granted: true, abandoned: false });
      expect(a.token).toBeGreaterThan(1000);
      expect(await c2.call('unlock', { key: 'a' })).toMatchObject({ ok: true });
      expect(await c2.call('query')).toMatchObject({ ok: true });
      await c2.destroy();
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await admin.query(`DROP ROLE IF EXISTS ${role}`);
    }
  }, 30_000);

  test('a grant that fails on the server after taking the lock: the request fails ERR_LOCK_BACKEND and the lock is let go', async () => {
    const db = `lk_poison_${process.pid}_${Math.floor(Math.random() * 1e9)}`;
    const admin = await pgClient();
    await admin.query(`CREATE DATABASE ${db}`);
    try {
      const u = new URL(pgUrl());
      u.pathname = `/${db}`;
      const c = await clusterKid({ LATCHKEY_PG_URL: u.toString() });
      // The schema, made by a first use.
      expect(await c.call('lock', { key: 'w', name: 'warm' })).toMatchObject({ granted: true });
      expect(await c.call('unlock', { key: 'w' })).toMatchObject({ ok: true });
      const own = await pgClient(u.toString());
      await own.query(`CREATE FUNCTION lk_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'poisoned row'; END $$`);
      await own.query(`CREATE TRIGGER lk_poison BEFORE UPDATE ON latchkey_live FOR EACH ROW WHEN (NEW.name = 'poison') EXECUTE FUNCTION lk_poison()`);
      const r = await c.call('lock', { key: 'p', name: 'poison' });
      expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
      // Its session took the advisory lock before the row update failed: it is let go.
      await untilServer(own, 'poison', (l) => l.length === 0, 'the poisoned lock let go', 2000);
      // The process goes on: other names, and the same one once the server lets the row be written.
      expect(await c.call('lock', { key: 'o', name: 'other' })).toMatchObject({ granted: true });
      expect(await c.call('unlock', { key: 'o' })).toMatchObject({ ok: true });
      await own.query('DROP TRIGGER lk_poison ON latchkey_live');
      expect(await c.call('lock', { key: 'p', name: 'poison' })).toMatchObject({ granted: true, token: 1000 });
      expect((await serverLocks(own, 'poison')).filter((l) => l.granted).map((l) => l.pid)).toEqual([c.pid]);
      expect(await c.call('unlock', { key: 'p' })).toMatchObject({ ok: true });
      await c.destroy();
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    }
  }, 30_000);
});
