// Host scope when the lock store is removed, corrupt or busy (issue 17 items
// 1, 4, 5, 6), with real processes and real files:
// - the lock directory removed (rm -rf) while a lock is held: the holder is
//   told ERR_LOCK_COMPROMISED no later than anyone else is granted, it
//   takes host locks again at its next request, and the tokens after the
//   event are above every token before it (file and SQLite); SQLite's WAL
//   and shared-memory files deleted while held: the holder is told, and the
//   next grant, once every process has let go of the deleted files (SQLite
//   cannot open the database again before that), carries a token above;
// - a token store that cannot be trusted is refused with ERR_LOCK_BACKEND,
//   never reset (random bytes, truncated, 1e60, fractions, negative, text);
//   a store at the end of the safe range refuses the next token;
// - SQLite's write lock held by another program: a request's timeout is
//   honoured and the event loop keeps running (async and lockSync);
// - more distinct names than the host table has slots, taken and given back
//   one at a time: never ERR_LOCK_TABLE_FULL.
import { afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { encodeName } from '../src/bridge/host/file-dir.js';
import { MAX_TOKEN, SEQ_BYTES, encodeSeq } from '../src/bridge/host/records.js';
import { type Backend, type Child, cleanup, freshDir, hostChild, msBetween } from './fixtures/host-util.js';

afterEach(cleanup);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A lock directory latchkey makes itself (as the default one is): not made by the test. */
const ownedDir = () => join(freshDir(), 'locks');

describe.each(['file', 'sqlite'] as const)('the lock directory removed while held (%s backend, issue 17 item 1)', (backend: Backend) => {
  test('the holder is told ERR_LOCK_COMPROMISED before anyone else is granted; it locks again at its next request; tokens stay above', async () => {
    const dir = ownedDir();
    const [H, B] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    expect(await H.call('request', { key: 'h', name: 'job' })).toMatchObject({ queued: true });
    const h = await H.next((m) => m.ev === 'granted' && m.key === 'h');
    // Its keeper watches the lock (it runs ~0.1 s after the first request).
    await sleep(400);
    fs.rmSync(dir, { recursive: true, force: true });
    const b = await B.call('lock', { key: 'b', name: 'job', opts: { timeout: 5000 } });
    expect(b, JSON.stringify(b.error)).toMatchObject({ granted: true });
    const lost = await H.next((m) => m.ev === 'aborted' && m.key === 'h', 5000, 'the holder to be told');
    expect(lost.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
    expect(lost.error.message).toMatch(/removed/);
    expect(lost.at <= b.at, `the holder was told ${msBetween(b.at, lost.at).toFixed(1)} ms after the other process was granted`).toBe(true);
    expect(b.token, 'a token after the removal is above the tokens before it').toBeGreaterThan(h.token);
    // The holder's callback ends; its next request works in the new store.
    await H.call('release', { key: 'h' });
    expect(await B.call('unlock', { key: 'b' })).toMatchObject({ ok: true });
    const again = await H.call('lock', { key: 'h2', name: 'job', opts: { timeout: 5000 } });
    expect(again).toMatchObject({ granted: true });
    expect(again.token).toBeGreaterThan(b.token);
    expect(await H.call('lock', { key: 'h3', name: 'other', opts: { timeout: 5000 } })).toMatchObject({ granted: true });
  }, 30_000);
});

describe('SQLite WAL and shared memory deleted while held (issue 17 item 1)', () => {
  test('the holder is told; the next grants carry tokens above every token before', async () => {
    const dir = freshDir();
    const [H, B] = await Promise.all([hostChild('sqlite', dir), hostChild('sqlite', dir)]);
    let last = 0;
    for (let i = 0; i < 20; i++) {
      const g = await B.call('lock', { key: `b${i}`, name: 'wal', opts: { timeout: 5000 } });
      last = g.token;
      await B.call('unlock', { key: `b${i}` });
    }
    expect(await H.call('request', { key: 'h', name: 'wal' })).toMatchObject({ queued: true });
    const h = await H.next((m) => m.ev === 'granted' && m.key === 'h');
    expect(h.token).toBeGreaterThan(last);
    await sleep(400);
    for (const f of ['locks.db-wal', 'locks.db-shm']) fs.rmSync(join(dir, f), { force: true });
    const lost = await H.next((m) => m.ev === 'aborted' && m.key === 'h', 5000, 'the holder to be told');
    expect(lost.error).toMatchObject({ code: 'ERR_LOCK_COMPROMISED' });
    const b = await B.call('lock', { key: 'after', name: 'wal', opts: { timeout: 15_000 } }, 20_000);
    expect(b, JSON.stringify(b.error)).toMatchObject({ granted: true });
    expect(b.token).toBeGreaterThan(h.token);
  }, 30_000);
});

// --- token stores that cannot be trusted (issue 17 item 5) --------------------------------

function seqBytes(token: number, grants = 1): Buffer {
  const b = Buffer.alloc(SEQ_BYTES);
  encodeSeq(b, { grants, flags: 0, token, readers: 0, holder: 0 });
  return b;
}

async function refused(c: Child, name: string): Promise<void> {
  const r = await c.call('lock', { key: `k-${Math.random()}`, name, opts: { timeout: 2000 } });
  expect(r, JSON.stringify(r.error)).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
}

describe('a token store that cannot be trusted (file backend, issue 17 item 5)', () => {
  test('random bytes, truncated, empty, 1e60, a fraction, a negative token: each refused with ERR_LOCK_BACKEND, never reset', async () => {
    const dir = freshDir();
    const c = await hostChild('file', dir);
    const first = await c.call('lock', { key: 'a', name: 'store', opts: { timeout: 2000 } });
    expect(first).toMatchObject({ granted: true });
    await c.call('unlock', { key: 'a' });
    const seq = join(dir, encodeName('store'), 'seq');
    const spoiled: Array<[string, Buffer]> = [
      ...Array.from({ length: 10 }, (_, i): [string, Buffer] => [`random ${i}`, randomBytes(i % 2 === 0 ? 64 : 40)]),
      ['truncated', seqBytes(first.token / 1000).subarray(0, 10)],
      ['empty', Buffer.alloc(0)],
      ['1e60', seqBytes(1e60)],
      ['1e-300', seqBytes(1e-300)],
      ['2.5', seqBytes(2.5)],
      ['-4', seqBytes(-4)],
      ['NaN', seqBytes(Number.NaN)],
    ];
    for (const [what, bytes] of spoiled) {
      fs.writeFileSync(seq, bytes);
      // A process that has the name's files open and one that opens them afresh.
      await refused(c, 'store');
      const fresh = await hostChild('file', dir);
      await refused(fresh, 'store');
      await fresh.destroy();
      expect(fs.readFileSync(seq).equals(bytes), `${what}: the store was rewritten`).toBe(true);
    }
  }, 60_000);

  test('a store at the end of the safe range refuses the next token (never a wrap)', async () => {
    const dir = freshDir();
    const c = await hostChild('file', dir);
    expect(await c.call('lock', { key: 'a', name: 'end', opts: { timeout: 2000 } })).toMatchObject({ granted: true });
    await c.call('unlock', { key: 'a' });
    fs.writeFileSync(join(dir, encodeName('end'), 'seq'), seqBytes(MAX_TOKEN));
    await refused(c, 'end');
    fs.writeFileSync(join(dir, encodeName('end'), 'seq'), seqBytes(MAX_TOKEN - 1));
    const g = await c.call('lock', { key: 'b', name: 'end', opts: { timeout: 2000 } });
    expect(g).toMatchObject({ granted: true, token: MAX_TOKEN * 1000 });
    expect(Number.isSafeInteger(g.token + 999)).toBe(true);
  }, 30_000);
});

describe('a token store that cannot be trusted (SQLite backend, issue 17 item 5)', () => {
  test.each([['text', "'abc'"], ['1e60', '1e60'], ['a fraction', '2.5'], ['negative', '-4'], ['NULL-like blob', "x'00'"]])(
    'a token that is %s: refused with ERR_LOCK_BACKEND, never reset', async (_what, value) => {
      const dir = freshDir();
      const c = await hostChild('sqlite', dir);
      expect(await c.call('lock', { key: 'a', name: 'store', opts: { timeout: 2000 } })).toMatchObject({ granted: true });
      await c.call('unlock', { key: 'a' });
      const db = new Database(join(dir, 'locks.db'));
      db.exec(`UPDATE names SET token = ${value} WHERE name = 'store'`);
      db.close();
      await refused(c, 'store');
      const check = new Database(join(dir, 'locks.db'), { readonly: true });
      const row = check.prepare("SELECT quote(token) AS q FROM names WHERE name = 'store'").get() as { q: string };
      check.close();
      expect(row.q).not.toBe('1');
    }, 30_000);
});

// --- SQLite busy (issue 17 item 4) ------------------------------------------------------------

describe('SQLite write lock held by another program (issue 17 item 4)', () => {
  test('request({ timeout: 200 }) rejects ERR_LOCK_TIMEOUT near its deadline, the event loop running; lockSync({ timeout: 200 }) too', async () => {
    const dir = freshDir();
    const c = await hostChild('sqlite', dir);
    expect(await c.call('lock', { key: 'warm', name: 'warm' })).toMatchObject({ granted: true }); // the database exists, the backend open
    await c.call('unlock', { key: 'warm' });
    const other = new Database(join(dir, 'locks.db'));
    other.pragma('journal_mode = WAL');
    other.exec('BEGIN IMMEDIATE');
    try {
      const before = await c.call('ping');
      const r = await c.call('lock', { key: 'x', name: 'busy', opts: { timeout: 200 } }, 10_000);
      const after = await c.call('ping');
      expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
      const waited = msBetween(r.t0, r.at);
      expect(waited).toBeGreaterThanOrEqual(190);
      expect(waited, 'the timeout was not honoured').toBeLessThan(800);
      // The 5 ms interval ticked all along: the event loop was not blocked.
      expect(after.ticks - before.ticks).toBeGreaterThanOrEqual(15);
      const s = await c.call('lockSync', { key: 'y', name: 'busy2', opts: { timeout: 200 } }, 10_000);
      expect(s).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_TIMEOUT' } });
      expect(msBetween(s.t0, s.at)).toBeLessThan(800);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    // The store free again: granted.
    expect(await c.call('lock', { key: 'z', name: 'busy', opts: { timeout: 2000 } })).toMatchObject({ granted: true });
  }, 30_000);
});

// --- many names (issue 17 item 6) -------------------------------------------------------------

describe('many distinct names, one at a time (issue 17 item 6)', () => {
  // More names than the host table has slots (1024). The file backend makes a directory per new
  // name (~5 ms each on this machine's overlay file system): fewer of them.
  test.each([['sqlite', 5000], ['file', 1100]] as const)('%s backend: %i names taken and given back one after another, never ERR_LOCK_TABLE_FULL', async (backend, count) => {
    const dir = freshDir();
    const c = await hostChild(backend, dir);
    const r = await c.call('sequence', { prefix: 'n', count }, 120_000);
    expect(r).toMatchObject({ ok: true, failed: 0 });
  }, 150_000);
});
