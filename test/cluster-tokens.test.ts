// Cluster scope: fencing tokens strictly increase per name across holders,
// across the loss of the unlogged rows that count them (what a crash does),
// across a real crash of the server under load, and across the upgrade from
// the version 1 schema (latchkey_tokens). Tokens are counted in an unlogged
// row (no WAL flush per grant) under a durable reservation raised 1000 at a
// time: after a crash they go on above every token handed out before it.
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import {
  type Child, clusterCleanup, clusterKid, exclusiveGate, forgetNames, hr, pgClient, pgRestartCommand, pgUrl, readyChild, restartServer,
  uniquePrefix, useServerGate,
} from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('tokens');
let n = 0;
const fresh = (tag: string) => `${PREFIX}-${tag}-${++n}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const work: string[] = [];
useServerGate();
afterEach(clusterCleanup);
afterAll(async () => {
  for (const d of work) fs.rmSync(d, { recursive: true, force: true });
  await forgetNames(PREFIX);
});

interface Section { pid: number; enter: bigint; exit: bigint; token: number; abandoned: boolean; told: bigint }

/** `host-rmw` processes hammering `name` (exclusive, a few 1 ms steps a section) until stop(); their sections, in order of enter. */
async function hammer(name: string, procs: number): Promise<{ stop: () => Promise<{ sections: Section[]; errors: number }> }> {
  const dir = fs.mkdtempSync(join(os.tmpdir(), 'lk-cluster-'));
  work.push(dir);
  const kids = await Promise.all(Array.from({ length: procs }, () => readyChild('host-rmw', { LATCHKEY_PG_URL: pgUrl() }, ['cluster'])));
  const logs = kids.map((c) => join(dir, `log-${c.pid}`));
  kids.forEach((c, i) => c.send({ op: 'hammer', name, log: logs[i], steps: 2 }));
  return {
    async stop() {
      for (const c of kids) c.send({ op: 'stop' });
      const reports = await Promise.all(kids.map((c) => c.next((m) => m.ev === 'stopped' || m.ev === 'failed', 20_000, 'stopped')));
      for (const r of reports) expect(r, 'a hammer failed with an error other than ERR_LOCK_BACKEND / ERR_LOCK_COMPROMISED').toMatchObject({ ev: 'stopped' });
      const sections: Section[] = [];
      let errors = 0;
      for (const log of logs) {
        let open: Omit<Section, 'exit' | 'told'> | undefined;
        for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
          if (line === '') continue;
          const f = line.split(' ');
          if (f[0] === 'enter') open = { pid: Number(f[1]), enter: BigInt(f[2]!), token: Number(f[3]), abandoned: f[4] === 'true' };
          else if (f[0] === 'exit') {
            sections.push({ ...open!, exit: BigInt(f[2]!), told: BigInt(f[4]!) });
            open = undefined;
          } else errors++;
        }
      }
      sections.sort((a, b) => (a.enter < b.enter ? -1 : a.enter > b.enter ? 1 : 0));
      return { sections, errors };
    },
  };
}

/** No two holders at once (a holder counts until it exits or is told it lost the lock), and tokens strictly rising in grant order. */
function expectExclusiveRising(sections: Section[]): void {
  let maxEnd = -1n;
  const overlaps: string[] = [], falls: string[] = [];
  sections.forEach((s, i) => {
    if (i > 0 && s.enter <= maxEnd) overlaps.push(`${s.pid}/token ${s.token}`);
    if (i > 0 && s.token <= sections[i - 1]!.token) falls.push(`${sections[i - 1]!.token} → ${s.token}`);
    const end = s.told !== 0n && s.told < s.exit ? s.told : s.exit;
    if (end > maxEnd) maxEnd = end;
  });
  expect(overlaps, 'sections entered while another holder was still in').toEqual([]);
  expect(falls, 'tokens not strictly rising in grant order').toEqual([]);
}

describe('cluster fencing tokens', () => {
  test('the name\'s unlogged row lost while 3 processes hammer it (what a crash does): tokens go on above every one handed out, from the durable reservation', async () => {
    const name = fresh('lost');
    const pg = await pgClient();
    const h = await hammer(name, 3);
    await sleep(800);
    const before = Number((await pg.query('SELECT token FROM latchkey_live WHERE name = $1', [name])).rows[0].token);
    const reserved = Number((await pg.query('SELECT reserved FROM latchkey_reserved WHERE name = $1', [name])).rows[0].reserved);
    expect((await pg.query('DELETE FROM latchkey_live WHERE name = $1', [name])).rowCount).toBe(1);
    const lostAt = hr();
    await sleep(800);
    const { sections, errors } = await h.stop();
    const after = sections.filter((s) => s.enter > lostAt);
    // A grant the server made from the row before it went may be entered only after the DELETE returned: at most
    // that one server grant (its cohort passes share its token); the next grant of the name needs its release.
    const fromOldRow = after.filter((s) => s.token <= reserved * 1000);
    const fromNewRow = after.filter((s) => s.token > reserved * 1000);
    console.log(`[tokens lost row] ${sections.length} sections (${errors} errors); live token ${before} (reserved ${reserved}) when the row went; after it: ${fromOldRow.length} from the old row, then first token ${fromNewRow[0]?.token}`);
    expect(errors).toBe(0);
    expectExclusiveRising(sections);
    expect(new Set(fromOldRow.map((s) => Math.floor(s.token / 1000))).size).toBeLessThanOrEqual(1);
    expect(fromNewRow.length).toBeGreaterThan(5);
    // The first grant from the server after the loss takes its token above the reservation: every token handed out before is below it.
    expect(after.indexOf(fromNewRow[0]!)).toBe(fromOldRow.length);
    // Nobody can say who held it when the row was lost: its next holder is told (conservative), the ones after are not.
    expect(fromNewRow[0]!.abandoned).toBe(true);
    expect(fromNewRow.slice(1).filter((s) => s.abandoned)).toEqual([]);
  }, 40_000);

  test('version 1\'s tokens (latchkey_tokens) go on in version 2: an existing name\'s next token is above its last, and its abandoned flag is kept', async () => {
    const tag = `${process.pid}_${Math.floor(Math.random() * 1e9)}`, db = `lk_upgrade_${tag}`;
    const admin = await pgClient();
    await admin.query(`CREATE DATABASE ${db}`);
    try {
      const u = new URL(pgUrl());
      u.pathname = `/${db}`;
      const old = await pgClient(u.toString());
      // Version 1's token table, as its clients left it.
      await old.query('CREATE TABLE latchkey_tokens (name text PRIMARY KEY, token bigint NOT NULL, abandoned boolean NOT NULL DEFAULT false)');
      await old.query("INSERT INTO latchkey_tokens VALUES ('kept', 41, false), ('died', 7, true)");
      await old.end();
      const c: Child = await clusterKid({ LATCHKEY_PG_URL: u.toString() });
      const kept = await c.call('lock', { key: 'k', name: 'kept' });
      const died = await c.call('lock', { key: 'd', name: 'died' });
      const brandNew = await c.call('lock', { key: 'n', name: 'new' });
      expect(kept).toMatchObject({ granted: true, abandoned: false });
      expect(kept.token).toBeGreaterThan(41 * 1000);
      expect(died).toMatchObject({ granted: true, abandoned: true });
      expect(died.token).toBeGreaterThan(7 * 1000);
      expect(brandNew).toMatchObject({ granted: true, abandoned: false, token: 1000 });
      for (const k of ['k', 'd', 'n']) expect(await c.call('unlock', { key: k })).toMatchObject({ ok: true });
      await c.destroy();
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    }
  }, 30_000);

  test('the server crashes (immediate shutdown: unlogged rows lost) while 3 processes hammer a name: no overlap, tokens keep rising across it, all carry on', async () => {
    const fast = pgRestartCommand(), cmd = fast.replace(' -m fast ', ' -m immediate ');
    expect(cmd, 'the restart command has no "-m fast" to make immediate').not.toBe(fast);
    // No other cluster test (of any file or run) may be running while the server restarts.
    await exclusiveGate();
    const name = fresh('crash');
    const h = await hammer(name, 3);
    await sleep(1500);
    process.env.LATCHKEY_PG_RESTART = cmd;
    const crashAt = hr();
    let ms: number;
    try {
      ({ ms } = await restartServer());
    } finally {
      process.env.LATCHKEY_PG_RESTART = fast;
    }
    const upAt = hr();
    await sleep(2500);
    const { sections, errors } = await h.stop();
    const before = sections.filter((s) => s.enter < crashAt), after = sections.filter((s) => s.enter > upAt);
    console.log(`[tokens crash] crash and recovery took ${ms.toFixed(0)} ms; ${sections.length} sections, ${errors} errors while it was down; `
      + `last token before ${before.at(-1)?.token}, first after ${after[0]?.token} (abandoned ${after[0]?.abandoned})`);
    expectExclusiveRising(sections);
    expect(before.length).toBeGreaterThan(0);
    expect(Math.min(...after.map((s) => s.token))).toBeGreaterThan(Math.max(...before.map((s) => s.token)));
    for (const pid of new Set(sections.map((s) => s.pid))) {
      expect(after.filter((s) => s.pid === pid).length, `process ${pid}: sections after the crash`).toBeGreaterThanOrEqual(3);
    }
  }, 60_000);
});
