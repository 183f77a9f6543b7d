// Host scope: what a hostile or broken environment gets. A lock directory
// that is a symlink, open to others or another user's is refused
// (ERR_LOCK_BACKEND, nothing created anywhere); every name maps to a
// directory inside the lock directory; a garbage marker fails closed; a
// garbage database is refused. And the Web Locks options across processes:
// ifAvailable, steal, shared, query().
import { afterEach, describe, expect, test } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { encodeName } from '../src/bridge/host/file-dir.js';
import { type Backend, Child, cleanup, freshDir, hostChild, hr, msBetween } from './fixtures/host-util.js';

afterEach(cleanup);

const backends = ['file', 'sqlite'] as const;

/** Everything under `dir`, as relative paths (lstat: symlinks are not followed). */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d)) {
      const p = join(d, e), r = rel === '' ? e : `${rel}/${e}`;
      out.push(r);
      if (fs.lstatSync(p).isDirectory()) walk(p, r);
    }
  };
  walk(dir, '');
  return out.sort();
}

/** A child whose TMPDIR is a fresh empty dir (the default lock dir would go there): returns both. */
async function isolatedChild(backend: Backend, lockDir: string): Promise<{ c: Child; tmp: string }> {
  const tmp = freshDir('lk-tmp-');
  const c = await hostChild(backend, lockDir, { TMPDIR: tmp });
  return { c, tmp };
}

async function expectRefused(c: Child, name = 'n'): Promise<void> {
  const q = await c.call('request', { key: 'r', name, opts: { timeout: 2000 } });
  expect(q).toMatchObject({ queued: true }); // request() rejects, never throws
  const settled = await c.next((m) => m.ev === 'settled' && m.key === 'r', 5000, 'the request to settle');
  expect(settled).toMatchObject({ ok: false, error: { code: 'ERR_LOCK_BACKEND' } });
  expect(c.seen((m) => m.ev === 'granted')).toBe(false);
  // lock() the same, and the next try too (nothing was half set up).
  expect(await c.call('lock', { name, opts: { timeout: 2000 } })).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
}

describe.each(backends)('host lock directory refused (%s backend)', (backend) => {
  test('a symlink to a good directory: refused, nothing created in its target', async () => {
    const root = freshDir(), target = join(root, 'target'), link = join(root, 'link');
    fs.mkdirSync(target, { mode: 0o700 });
    fs.symlinkSync(target, link);
    const { c, tmp } = await isolatedChild(backend, link);
    await expectRefused(c);
    expect(tree(root)).toEqual(['link', 'target']);
    expect(tree(tmp)).toEqual([]);
  }, 20_000);

  test('a dangling symlink: refused, its target not created', async () => {
    const root = freshDir(), link = join(root, 'link');
    fs.symlinkSync(join(root, 'nowhere'), link);
    const { c, tmp } = await isolatedChild(backend, link);
    await expectRefused(c);
    expect(tree(root)).toEqual(['link']);
    expect(tree(tmp)).toEqual([]);
  }, 20_000);

  test.each([['770', 0o770], ['707', 0o707], ['777', 0o777], ['720', 0o720]])('a directory writable by others (mode %s): refused, left empty', async (_label, mode) => {
    const root = freshDir(), dir = join(root, 'locks');
    fs.mkdirSync(dir);
    fs.chmodSync(dir, mode);
    const { c, tmp } = await isolatedChild(backend, dir);
    await expectRefused(c);
    expect(tree(root)).toEqual(['locks']);
    expect(fs.statSync(dir).mode & 0o777).toBe(mode);
    expect(tree(tmp)).toEqual([]);
  }, 20_000);

  test('a directory owned by another user (65534): refused, left empty', async () => {
    expect(process.getuid!()).toBe(0); // these tests run as root here
    const root = freshDir(), dir = join(root, 'locks');
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.chownSync(dir, 65534, 65534);
    const { c, tmp } = await isolatedChild(backend, dir);
    await expectRefused(c);
    expect(tree(root)).toEqual(['locks']);
    expect(tree(tmp)).toEqual([]);
  }, 20_000);
});

describe('host sqlite database refused', () => {
  test('a garbage database file: ERR_LOCK_BACKEND, the file untouched', async () => {
    const dir = freshDir(), db = join(dir, 'locks.db'), junk = randomBytes(8192);
    fs.writeFileSync(db, junk, { mode: 0o600 });
    const { c } = await isolatedChild('sqlite', dir);
    await expectRefused(c);
    expect(Buffer.compare(fs.readFileSync(db), junk)).toBe(0);
  }, 20_000);

  test('another program\'s SQLite database (other schema version): ERR_LOCK_BACKEND, its data untouched', async () => {
    const dir = freshDir(), path = join(dir, 'locks.db');
    const other = new Database(path);
    other.exec("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT); INSERT INTO accounts VALUES (1, 'alice');");
    other.pragma('user_version = 7');
    other.close();
    fs.chmodSync(path, 0o600);
    const { c } = await isolatedChild('sqlite', dir);
    await expectRefused(c);
    const again = new Database(path, { readonly: true });
    try {
      expect(again.prepare('SELECT name FROM sqlite_master ORDER BY name').all()).toEqual([{ name: 'accounts' }]);
      expect(again.pragma('user_version', { simple: true })).toBe(7);
    } finally {
      again.close();
    }
  }, 20_000);

  test('a database file open to others (0644) or a symlink: ERR_LOCK_BACKEND', async () => {
    const dir = freshDir(), path = join(dir, 'locks.db');
    fs.writeFileSync(path, '', { mode: 0o644 });
    fs.chmodSync(path, 0o644);
    const { c } = await isolatedChild('sqlite', dir);
    await expectRefused(c);
    const dir2 = freshDir(), elsewhere = join(freshDir(), 'real.db');
    fs.writeFileSync(elsewhere, '', { mode: 0o600 });
    fs.symlinkSync(elsewhere, join(dir2, 'locks.db'));
    const { c: c2 } = await isolatedChild('sqlite', dir2);
    await expectRefused(c2);
    expect(fs.statSync(elsewhere).size).toBe(0);
  }, 20_000);
});

const NAMES = [
  '../x', 'a/b', '/', 'a\u0000b', '..', '.', 'n'.repeat(128), 'é'.repeat(64), '', '~', ' ', '..\\..\\x',
  '../../../../../../../../tmp/escaped', '.hidden', 'x~0123456789abcdef', 'CON', 'name\n', '*?[]',
];

describe.each(backends)('host lock names (%s backend)', (backend) => {
  test('names with slashes, dots, NUL, 128 bytes … live inside the lock directory, and come back whole', async () => {
    const root = freshDir(), dir = join(root, 'locks');
    fs.mkdirSync(dir, { mode: 0o700 });
    const { c, tmp } = await isolatedChild(backend, dir);
    const other = await hostChild(backend, dir, { TMPDIR: tmp });
    for (const [i, name] of NAMES.entries()) {
      expect(Buffer.byteLength(name)).toBeLessThanOrEqual(128);
      expect(await c.call('lock', { key: `k${i}`, name, opts: { timeout: 5000 } }), JSON.stringify(name)).toMatchObject({ granted: true });
    }
    // Another process sees each of them held, under its own name.
    const q = await other.call('query');
    expect(q.ok).toBe(true);
    expect(q.q.held.map((e: { name: string }) => e.name).sort()).toEqual([...NAMES].sort());
    for (const e of q.q.held) expect(e.clientId).toBe(String(c.pid));
    // And each is taken by that process, as that name.
    for (const name of NAMES) {
      expect(await other.call('lock', { key: 'probe', name, opts: { ifAvailable: true } }), JSON.stringify(name)).toMatchObject({ granted: false });
    }
    for (const [i] of NAMES.entries()) expect(await c.call('unlock', { key: `k${i}` })).toMatchObject({ ok: true });
    // Nothing outside the lock directory; inside it, one plain directory per name.
    expect(tree(root).filter((p) => !p.startsWith('locks/'))).toEqual(['locks']);
    expect(tree(tmp)).toEqual([]);
    const pattern = /^[A-Za-z0-9._-]{0,40}~[0-9a-f]{16}$/;
    if (backend === 'file') {
      const entries = fs.readdirSync(dir);
      expect(entries.sort()).toEqual(NAMES.map(encodeName).sort());
      for (const e of entries) {
        expect(e).toMatch(pattern);
        expect(e.startsWith('.')).toBe(false);
        expect(fs.lstatSync(join(dir, e)).isDirectory()).toBe(true);
      }
      for (const name of NAMES) expect(fs.readFileSync(join(dir, encodeName(name), 'name'), 'utf8')).toBe(name);
    } else {
      for (const e of fs.readdirSync(dir)) expect(['locks.db', 'locks.db-wal', 'locks.db-shm', 'locks.db.bells']).toContain(e);
      for (const e of fs.readdirSync(join(dir, 'locks.db.bells'))) {
        expect(e).toMatch(pattern);
        expect(fs.lstatSync(join(dir, 'locks.db.bells', e)).isFile()).toBe(true);
      }
    }
  }, 30_000);

  test('a 129-byte name is refused before anything is created', async () => {
    const dir = freshDir();
    const { c } = await isolatedChild(backend, dir);
    const r = await c.call('lock', { name: 'n'.repeat(129) });
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_OUT_OF_RANGE' } });
    if (backend === 'file') expect(fs.readdirSync(dir)).toEqual([]);
  }, 20_000);
});

// --- broken files in a name directory (file backend) ---------------------------------

function nameDir(dir: string, name: string): string {
  const d = join(dir, encodeName(name));
  fs.mkdirSync(d, { mode: 0o700 });
  fs.writeFileSync(join(d, 'name'), name, { mode: 0o600 });
  return d;
}

describe('host garbage files (file backend)', () => {
  test('a garbage `x` marker (random bytes) fails closed: the request waits, then ERR_LOCK_TIMEOUT; ifAvailable gets null', async () => {
    const dir = freshDir(), d = nameDir(dir, 'garbled'), junk = randomBytes(512);
    fs.writeFileSync(join(d, 'x'), junk, { mode: 0o600 });
    const c = await hostChild('file', dir);
    const asked = hr();
    const r = await c.call('lock', { name: 'garbled', opts: { timeout: 600 } });
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    expect(msBetween(asked, r.at)).toBeGreaterThanOrEqual(550);
    expect(await c.call('lock', { name: 'garbled', opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(c.seen((m) => m.ev === 'granted')).toBe(false);
    // The marker is left as it was, and the process goes on.
    expect(Buffer.compare(fs.readFileSync(join(d, 'x')), junk)).toBe(0);
    expect(await c.call('ping')).toMatchObject({ ok: true });
    expect(await c.call('lock', { name: 'another', opts: { timeout: 2000 } })).toMatchObject({ granted: true });
  }, 20_000);

  test('a garbage `x` not written for a long time (GARBAGE_STALE_MS) is broken: granted', async () => {
    const dir = freshDir(), d = nameDir(dir, 'old-garbage');
    fs.writeFileSync(join(d, 'x'), randomBytes(512), { mode: 0o600 });
    const old = new Date(Date.now() - 120_000);
    fs.utimesSync(join(d, 'x'), old, old);
    const c = await hostChild('file', dir);
    expect(await c.call('lock', { name: 'old-garbage', opts: { timeout: 5000 } })).toMatchObject({ granted: true });
  }, 20_000);

  test.each([
    ['a FIFO', (path: string) => execFileSync('mkfifo', [path])],
    ['a directory', (path: string) => fs.mkdirSync(path)],
    ['a symlink', (path: string) => fs.symlinkSync('/etc/hostname', path)],
  ])('%s as `x` fails closed like garbage: the request waits, then ERR_LOCK_TIMEOUT; the process never hangs', async (_what, make) => {
    const dir = freshDir(), d = nameDir(dir, 'odd-x');
    make(join(d, 'x'));
    const c = await hostChild('file', dir);
    expect(await c.call('lock', { name: 'odd-x', opts: { timeout: 600 } }, 10_000)).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
    expect(await c.call('ping')).toMatchObject({ ok: true });
  }, 20_000);

  test('a directory as `heir` is taken away: granted, and the marker it left goes after the grant', async () => {
    const dir = freshDir(), d = nameDir(dir, 'odd-heir');
    fs.mkdirSync(join(d, 'heir'));
    const c = await hostChild('file', dir);
    expect(await c.call('lock', { name: 'odd-heir', opts: { timeout: 5000 } })).toMatchObject({ granted: true });
    expect(fs.existsSync(join(d, 'heir'))).toBe(false);
  }, 20_000);

  test('a corrupt `seq` (NaN token) is refused with ERR_LOCK_BACKEND, never a token going backwards', async () => {
    const dir = freshDir(), d = nameDir(dir, 'bad-seq');
    fs.writeFileSync(join(d, 'seq'), Buffer.from(new Float64Array([Number.NaN, 0, 0, 0, 0]).buffer), { mode: 0o600 });
    const c = await hostChild('file', dir);
    expect(await c.call('lock', { name: 'bad-seq', opts: { timeout: 2000 } })).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
  }, 20_000);
});

// --- Web Locks options across processes ---------------------------------------------

describe.each(backends)('host ifAvailable, steal, shared, query across processes (%s backend)', (backend) => {
  test('ifAvailable: null while another process holds it, granted once it let go', async () => {
    const dir = freshDir();
    const [a, b] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    expect(await a.call('lock', { name: 'ia' })).toMatchObject({ granted: true });
    expect(await b.call('request', { key: 'r', name: 'ia', opts: { ifAvailable: true } })).toMatchObject({ queued: true });
    expect(await b.next((m) => m.key === 'r' && (m.ev === 'unavailable' || m.ev === 'granted'))).toMatchObject({ ev: 'unavailable' });
    expect(await b.next((m) => m.ev === 'settled' && m.key === 'r')).toMatchObject({ ok: true, value: 'unavailable' });
    expect(await a.call('unlock', { key: 'ia' })).toMatchObject({ ok: true });
    const g = await b.call('lock', { name: 'ia', opts: { timeout: 5000 } });
    expect(g).toMatchObject({ granted: true, abandoned: false });
  }, 20_000);

  test('steal: granted at once over another process\'s holder, which learns it (AbortError / signal) within a few seconds', async () => {
    const dir = freshDir();
    const [a, b] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    expect(await a.call('request', { key: 'a', name: 'st' })).toMatchObject({ queued: true });
    const ag = await a.next((m) => m.ev === 'granted' && m.key === 'a');
    const asked = hr();
    const bg = await b.call('lock', { key: 'b', name: 'st', opts: { steal: true } });
    expect(bg).toMatchObject({ granted: true });
    expect(msBetween(asked, bg.at)).toBeLessThan(1000);
    expect(bg.token).toBeGreaterThan(ag.token);
    // The robbed holder: its request() promise rejects with an AbortError, its signal aborts.
    const settled = await a.next((m) => m.ev === 'settled' && m.key === 'a', 5000, 'the robbed request to settle').catch(() => null);
    const aborted = await a.next((m) => m.ev === 'aborted' && m.key === 'a', 1000, 'the robbed lock.signal').catch(() => null);
    expect.soft(settled, 'the robbed process\'s request() promise did not reject within 5 s').toMatchObject({ ok: false, error: { name: 'AbortError' } });
    expect.soft(aborted, 'the robbed process\'s lock.signal did not abort within 5 s').not.toBeNull();
    // The robbed callback ending releases nothing of the stealer's.
    await a.call('release', { key: 'a' });
    const probe = await hostChild(backend, dir);
    expect(await probe.call('lock', { name: 'st', opts: { ifAvailable: true } })).toMatchObject({ granted: false });
    expect(b.seen((m) => m.ev === 'aborted' || m.ev === 'compromised')).toBe(false);
    expect(await b.call('unlock', { key: 'b' })).toMatchObject({ ok: true });
  }, 20_000);

  test('steal over a waiting queue: the stealer goes first, the waiter after it', async () => {
    const dir = freshDir();
    const [a, b, c] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir), hostChild(backend, dir)]);
    expect(await a.call('lock', { key: 'a', name: 'sq' })).toMatchObject({ granted: true });
    expect(await c.call('request', { key: 'c', name: 'sq', opts: { timeout: 10_000 } })).toMatchObject({ queued: true });
    await c.call('ping');
    const bg = await b.call('lock', { key: 'b', name: 'sq', opts: { steal: true } });
    expect(bg).toMatchObject({ granted: true });
    expect(c.seen((m) => m.ev === 'granted')).toBe(false);
    const released = await b.call('unlock', { key: 'b' });
    expect(released).toMatchObject({ ok: true });
    const cg = await c.next((m) => m.ev === 'granted' && m.key === 'c', 5000, 'the waiter\'s grant');
    expect(cg.at).toBeGreaterThan(released.t0); // t0: just before unlock(), which may return after the grant
    expect(cg.token).toBeGreaterThan(bg.token);
  }, 20_000);

  test('query({scope:\'host\'}) from one process lists what others hold and wait for', async () => {
    const dir = freshDir();
    const [a, b, c, d] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir), hostChild(backend, dir), hostChild(backend, dir)]);
    expect(await a.call('lock', { name: 'qx' })).toMatchObject({ granted: true });
    expect(await b.call('lock', { name: 'qs', opts: { mode: 'shared' } })).toMatchObject({ granted: true });
    expect(await c.call('request', { key: 'w', name: 'qx', opts: { timeout: 10_000 } })).toMatchObject({ queued: true });
    await c.call('ping');
    const r = await d.call('query');
    expect(r.ok).toBe(true);
    const held = r.q.held as Array<{ name: string; mode: string; clientId: string }>;
    const pending = r.q.pending as Array<{ name: string; mode: string; clientId: string }>;
    expect(held).toEqual(expect.arrayContaining([
      { name: 'qx', mode: 'exclusive', clientId: String(a.pid) },
      { name: 'qs', mode: 'shared', clientId: String(b.pid) },
    ]));
    expect(held).toHaveLength(2);
    expect(pending).toEqual([{ name: 'qx', mode: 'exclusive', clientId: String(c.pid) }]);
    // The holder's own query shows its lock by thread, the others' by process.
    const own = await a.call('query');
    expect(own.q.held).toEqual(expect.arrayContaining([
      { name: 'qx', mode: 'exclusive', clientId: `${a.pid}:0` },
      { name: 'qs', mode: 'shared', clientId: String(b.pid) },
    ]));
    // Once let go, it is gone from the list.
    expect(await b.call('unlock', { key: 'qs' })).toMatchObject({ ok: true });
    const after = await d.call('query');
    expect(after.q.held.map((e: { name: string }) => e.name)).toEqual(['qx']);
  }, 20_000);
});
