// Host scope: a holder process that dies (SIGKILL) gives the lock up at once
// (not at the end of its lease), and the next holder is told (abandoned)
// and gets a larger token. Both backends: holders crafted by hand (records
// laid out as file.ts does, rows written as sqlite.ts does), for a reused
// pid (taken over at once) and for a holder that cannot be proved dead
// (another host, no start time, or another PID namespace: taken over only
// when its lease runs out).
import { afterEach, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { encodeName } from '../src/bridge/host/file-dir.js';
import { RECORD_BYTES } from '../src/bridge/host/file.js';
import { SqliteBackend } from '../src/bridge/host/sqlite.js';
import { me } from '../src/bridge/identity.js';
import { type Backend, cleanup, freshDir, hostChild, hostFixture, hr, msBetween } from './fixtures/host-util.js';
import { askerToldOfDeath, oneOfTwoToldOfDeath, waiterToldOfDeath } from './fixtures/tier-util.js';

afterEach(cleanup);

describe.each(['file', 'sqlite'] as const)('host holder death (%s backend)', (backend: Backend) => {
  test('a waiting process gets the lock within 1 s of the holder\'s SIGKILL, abandoned, with a larger token', async () => {
    const dir = freshDir();
    const [holder, waiter] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    // Default lease (10 s): only the death, not the lease, may let the waiter in.
    // The ping is answered after the request: it is in.
    await waiterToldOfDeath(holder, waiter, 'victim', () => waiter.call('ping'));
  }, 30_000);

  test('a process that asks right after the SIGKILL gets it within 1 s, abandoned', async () => {
    const dir = freshDir();
    const [holder, next] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    await askerToldOfDeath(holder, next, 'victim');
  }, 30_000);

  test('two processes wait: exactly one of them is told the holder died', async () => {
    const dir = freshDir();
    const [holder, w1, w2] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir), hostChild(backend, dir)]);
    await oneOfTwoToldOfDeath(holder, w1, w2, 'victim');
  }, 30_000);

  test('a holder killed but never reaped (a zombie: its parent does not wait for it) is dead too', async () => {
    const dir = freshDir();
    // sh starts the holder in the background and becomes `sleep`, which never reaps it.
    const sh = spawn('sh', ['-c', `"${process.execPath}" "${hostFixture('host-zombie-holder')}" zombie & exec sleep 60`], {
      env: { ...process.env, LATCHKEY_DIR: dir, LATCHKEY_BACKEND: backend }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    let zombiePid = 0;
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let buf = '';
        sh.stdout!.setEncoding('utf8');
        sh.stdout!.on('data', (d: string) => {
          buf += d;
          if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n')));
        });
        sh.once('exit', () => reject(new Error(`sh exited before the holder reported: ${buf}`)));
        setTimeout(() => reject(new Error('the holder did not report')), 15_000);
      });
      const { pid, token } = JSON.parse(line) as { pid: number; token: number };
      zombiePid = pid;
      const waiter = await hostChild(backend, dir);
      process.kill(pid, 'SIGKILL');
      const killedAt = hr();
      // It is a zombie now (state Z), its pid still taken.
      for (let i = 0; i < 200; i++) {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
        if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      expect(stat.slice(stat.lastIndexOf(')') + 2)[0]).toBe('Z');
      // The holder's lease is 30 s: only its death may let the waiter in.
      const g = await waiter.call('lock', { name: 'zombie', opts: { timeout: 4000 } }, 10_000);
      expect(g, 'a zombie holder is provably dead: its lock should be taken over at once').toMatchObject({ granted: true, abandoned: true });
      expect(msBetween(killedAt, g.at)).toBeLessThan(1000);
      expect(g.token).toBeGreaterThan(token);
    } finally {
      if (zombiePid > 0) {
        try {
          process.kill(zombiePid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      sh.kill('SIGKILL'); // the zombie is reaped by init then
    }
  }, 30_000);
});

// --- hand-made holders -----------------------------------------------------------

const bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();

function startOf(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

/** `space`: the pid space tag its id ends in (identity.ts); ours unless given. */
interface Fake { pid: number; start: string; host: string; boot?: string; space?: string; token: number; expires: number; ttl: number }

const ourSpace = me().id.split('-')[2]!;
const fakeId = (f: Fake) => `${f.pid}-${f.start || 'nostart'}-${f.space ?? ourSpace}`;

/**
 * Lay out the name directory as file.ts does for an exclusive holder:
 * `<dir>/<encodeName(name)>/` with `name`, `seq` (float64s: last token, flags,
 * readers, turn owner, turn since), the holder's record `o-<id>` (RECORD_BYTES
 * of JSON padded with spaces) and the gate `x`, a hard link to the record.
 */
function fakeFileHolder(dir: string, name: string, f: Fake): void {
  const nameDir = join(dir, encodeName(name));
  fs.mkdirSync(nameDir, { mode: 0o700 });
  fs.writeFileSync(join(nameDir, 'name'), name, { mode: 0o600 });
  fs.writeFileSync(join(nameDir, 'seq'), Buffer.from(new Float64Array([f.token, 0, 0, 0, 0]).buffer), { mode: 0o600 });
  const id = fakeId(f);
  const now = Date.now();
  const rec = {
    v: 1, id, pid: f.pid, start: f.start, boot: f.boot ?? bootId, host: f.host, mode: 'exclusive', state: 'held',
    token: f.token, expires: f.expires, ttl: f.ttl, since: 0, at: now,
  };
  const json = JSON.stringify(rec);
  expect(json.length).toBeLessThan(RECORD_BYTES);
  const o = join(nameDir, `o-${id}`);
  fs.writeFileSync(o, json.padEnd(RECORD_BYTES, ' '), { mode: 0o600 });
  fs.linkSync(o, join(nameDir, 'x'));
}

/** The same holder as a row of `<dir>/locks.db` (sqlite.ts's schema, made by the backend itself). */
function fakeSqliteHolder(dir: string, name: string, f: Fake): void {
  const file = join(dir, 'locks.db');
  new SqliteBackend(file).close();
  const db = new Database(file);
  try {
    db.prepare('INSERT INTO names (name, token, flags) VALUES (?, ?, 0)').run(name, f.token);
    db.prepare('INSERT INTO holders (name, owner, mode, state, token, expires, ttl, since, at, pid, start, boot, host) '
      + "VALUES (?, ?, 'exclusive', 'held', ?, ?, ?, 0, ?, ?, ?, ?, ?)")
      .run(name, fakeId(f), f.token, f.expires, f.ttl, Date.now(), f.pid, f.start, f.boot ?? bootId, f.host);
  } finally {
    db.close();
  }
}

const fakeHolder = { file: fakeFileHolder, sqlite: fakeSqliteHolder } as const;

describe.each(['file', 'sqlite'] as const)('host holder death, hand-made holders (%s backend)', (backend: Backend) => {
  test.each([
    ['this test process', () => process.pid],
    ['pid 1', () => 1],
  ])('a record of a live pid (%s) with another start time is a reused pid: granted at once', async (_what, pidOf) => {
    const dir = freshDir();
    const pid = pidOf();
    expect(startOf(pid)).not.toBe('1');
    // The lease would last a minute: only the pid check can let anyone in.
    fakeHolder[backend](dir, 'reused', { pid, start: '1', host: os.hostname(), token: 5, expires: Date.now() + 60_000, ttl: 60_000 });
    const c = await hostChild(backend, dir);
    const asked = hr();
    const g = await c.call('lock', { name: 'reused', opts: { timeout: 10_000 } }, 15_000);
    expect(g).toMatchObject({ granted: true, abandoned: true });
    expect(msBetween(asked, g.at)).toBeLessThan(1000);
    expect(Math.floor(g.token / 1000)).toBe(6); // seq said 5: the next backend token
  }, 20_000);

  test.each([
    ['on another host', { host: 'some-other-host.invalid', pid: 1, start: '1' }],
    ['of a live pid whose start time is unknown', { host: os.hostname(), pid: 1, start: '' }],
    // pid 1 with start time '1' is a reused pid here, but not in another container's PID namespace.
    ['of a process in another PID namespace', { host: os.hostname(), pid: 1, start: '1', space: 'feedbeef' }],
  ])('a record %s cannot be proved dead: not taken before its lease ends, taken after (abandoned)', async (_what, who) => {
    const dir = freshDir();
    const ttl = 1500;
    const c = await hostChild(backend, dir);
    const other = await hostChild(backend, dir);
    const expires = Date.now() + ttl;
    fakeHolder[backend](dir, 'foreign', { ...who, token: 41, expires, ttl });
    const w = await c.call('request', { key: 'w', name: 'foreign', opts: { timeout: 15_000 } });
    expect(w).toMatchObject({ queued: true });
    // Before the lease ends: busy for everyone.
    const probe = await other.call('lock', { name: 'foreign', opts: { ifAvailable: true } });
    if (Date.now() < expires - 50) expect(probe).toMatchObject({ granted: false });
    const g = await c.next((m) => m.ev === 'granted' && m.key === 'w', 10_000, 'the grant after the lease');
    expect(g.wall).toBeGreaterThanOrEqual(expires);
    expect(g.wall).toBeLessThan(expires + 3000);
    expect(g.abandoned).toBe(true);
    expect(Math.floor(g.token / 1000)).toBe(42);
  }, 20_000);
});
