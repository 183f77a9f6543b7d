/**
 * The SQLite backend: host locks as rows of one database file (WAL mode,
 * synchronous=NORMAL), with the file backend's semantics and its wake
 * design: waiters queue FIFO (rows in state 'waiting', ordered by when
 * their wait began), a release hands the lock to the oldest live waiter in
 * the same transaction (it is never free in between), and one message on
 * that waiter's FIFO wakes exactly that process (fifo.ts, FIFOs in the
 * database's directory). No bells, no inotify. Schema (PRAGMA
 * user_version = 2; a version-1 database is upgraded in place):
 *
 *   names    name PK, token (the last token issued: an integer, checked on
 *            every read), flags (ABANDONED), grants (host grants so far)
 *   holders  (name, owner) PK: one row per name and process (Owner.id): its
 *            pid, start, boot and host (for provablyDead), the mode, state
 *            'held' | 'waiting', token, expires (epoch ms: lease end), ttl,
 *            since (monotonic ms the wait began: its place in line), at
 *            (epoch ms: the grant; a waiter's latest look), fifo (the FIFO
 *            that wakes it), abandoned (a held row handed over after a death)
 *
 * Rules, applied in each transaction:
 * - Another process's row is dropped when its owner is provablyDead, a held
 *   row when its lease ran out, a waiting row not looked at for SKIP_MS
 *   (frozen: it queues again when it runs), a waiting row whose FIFO has no
 *   reader (its process is gone). Dropping an exclusive held row sets
 *   ABANDONED; so does release(abandoned) of an exclusive grant; the next
 *   exclusive grant is told and clears it (shared grants keep it).
 * - The lock goes to the oldest waiter (readers at the head come in
 *   together); a new request is granted at once only when nobody waits.
 * - Every grant takes names.token + 1: tokens strictly increase per name.
 *
 * SQLite's own busy wait is short (BUSY_MS): a busy database (a backup, a
 * writer of another program) never blocks the event loop nor outlasts a
 * timeout (issue 17 item 4); an escalation that finds it busy looks again a
 * few ms later, within its deadline.
 */
import { closeSync, constants, lstatSync, openSync, watch } from 'node:fs';
import { BroadcastChannel } from 'node:worker_threads';
import { dirname, join, resolve } from 'node:path';
import type Database from 'better-sqlite3';
import { loadDriver } from '../drivers.js';
import type { LockMode } from '../../atomics/queue/queue.js';
import type { Attempt, AcquireRequest, Backend, Grant, HostLockEntry, PruneReport, Renewal, Waiter } from './backend.js';
import { asBackend, lockDirOf, openLockDir, readFloor, writeFloor } from './file-dir.js';
import { type Fifo, Fifos, M_GRANT, M_GRANT_ABANDONED, M_LOST, M_READ, type Message } from './fifo.js';
import { MAX_TOKEN } from './records.js';
import { POLL_MS, SKIP_MS } from './file.js';
import { me, monotonicMs, provablyDead, wallClock } from '../identity.js';
import { ERR_LOCK_BACKEND } from '../../errors.js';

const SCHEMA = 2;
const ABANDONED = 1;
/** SQLite's own wait for the write lock, ms: one short sleep, so that a busy database never blocks the caller's thread for long. */
const BUSY_MS = 1;
/** Sleep before looking again when the database is busy, ms (the event loop runs meanwhile). */
const BUSY_RETRY_MS = 4;

const DDL = `
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, token INTEGER NOT NULL, flags INTEGER NOT NULL, grants INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS holders (
  name TEXT NOT NULL, owner TEXT NOT NULL, mode TEXT NOT NULL CHECK (mode IN ('exclusive', 'shared')),
  state TEXT NOT NULL CHECK (state IN ('held', 'waiting')), token INTEGER NOT NULL, expires REAL NOT NULL,
  ttl REAL NOT NULL, since REAL NOT NULL, at REAL NOT NULL, pid INTEGER NOT NULL, start TEXT NOT NULL,
  boot TEXT NOT NULL, host TEXT NOT NULL, fifo TEXT NOT NULL DEFAULT '', abandoned INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (name, owner));`;
/** Version 1 → 2: the columns the FIFO queue needs. */
const UPGRADE_1 = `
ALTER TABLE names ADD COLUMN grants INTEGER NOT NULL DEFAULT 0;
ALTER TABLE holders ADD COLUMN fifo TEXT NOT NULL DEFAULT '';
ALTER TABLE holders ADD COLUMN abandoned INTEGER NOT NULL DEFAULT 0;`;
/** Column name:type:pk of each table, as PRAGMA table_info shows them. */
const SHAPE: Record<string, string> = {
  names: 'name:TEXT:1 token:INTEGER:0 flags:INTEGER:0 grants:INTEGER:0',
  holders: 'name:TEXT:1 owner:TEXT:2 mode:TEXT:0 state:TEXT:0 token:INTEGER:0 expires:REAL:0 ttl:REAL:0 since:REAL:0 '
    + 'at:REAL:0 pid:INTEGER:0 start:TEXT:0 boot:TEXT:0 host:TEXT:0 fifo:TEXT:0 abandoned:INTEGER:0',
};

interface Row {
  name: string; owner: string; mode: LockMode; state: 'held' | 'waiting'; token: number; expires: number;
  ttl: number; since: number; at: number; pid: number; start: string; boot: string; host: string; fifo: string; abandoned: number;
}

/** A message to send once the transaction that decided it has committed. */
interface Note { owner: string; k: string; kind: number; token: number }

const fail = (detail: string, cause?: unknown) => new ERR_LOCK_BACKEND('sqlite', detail, cause === undefined ? undefined : { cause });
/** better-sqlite3, loaded on first use (drivers.ts). */
const sqlite = () => loadDriver<typeof Database>('better-sqlite3', 'sqlite');
/** Whether the process of a row is provably dead (identity.ts); its `owner` is the process's id. */
const rowDead = (r: Row) => provablyDead({ id: r.owner, pid: r.pid, start: r.start, boot: r.boot, host: r.host });

/** The database is busy (another writer): ask again in a few ms. */
export class StoreBusy extends Error {
  constructor() {
    super('the SQLite database is busy');
  }
}

const isBusy = (err: unknown) => {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
};

/** Refuse a file that is a symlink, not a regular file, not ours, or open to others. */
function checkFile(path: string): void {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (st.isSymbolicLink()) throw fail(`${path} is a symbolic link`);
  if (!st.isFile()) throw fail(`${path} is not a regular file`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw fail(`${path} is owned by uid ${st.uid}, not by this user (${uid})`);
  if ((st.mode & 0o077) !== 0) throw fail(`${path} is open to other users (mode ${(st.mode & 0o777).toString(8)}; it must be 600)`);
}

function createFile(path: string): void {
  try {
    closeSync(openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_NOFOLLOW, 0o600));
  } catch (err) {
    throw fail(`cannot create ${path}: ${(err as Error).message}`, err);
  }
}

function prepare(db: Database.Database) {
  return {
    rows: db.prepare<[string], Row>('SELECT * FROM holders WHERE name = ? ORDER BY since, owner'),
    all: db.prepare<[], Row>('SELECT * FROM holders'),
    mine: db.prepare<[string, string], Row>('SELECT * FROM holders WHERE name = ? AND owner = ?'),
    otherHeld: db.prepare<[string, string], Row>("SELECT * FROM holders WHERE name = ? AND owner <> ? AND state = 'held' LIMIT 1"),
    anyWaiting: db.prepare<[string, string], { n: number }>("SELECT 1 AS n FROM holders WHERE name = ? AND owner <> ? AND state = 'waiting' LIMIT 1"),
    drop: db.prepare<[string, string]>('DELETE FROM holders WHERE name = ? AND owner = ?'),
    put: db.prepare<[string, string, LockMode, string, number, number, number, number, number, number, string, string, string, string, number]>(
      'INSERT OR REPLACE INTO holders (name, owner, mode, state, token, expires, ttl, since, at, pid, start, boot, host, fifo, abandoned) '
      + 'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    grant: db.prepare<[number, number, number, number, string, string]>(
      "UPDATE holders SET state = 'held', token = ?, expires = ?, at = ?, abandoned = ? WHERE name = ? AND owner = ?"),
    beat: db.prepare<[number, string, string]>("UPDATE holders SET at = ? WHERE name = ? AND owner = ? AND state = 'waiting'"),
    renew: db.prepare<[number, string, string, number]>("UPDATE holders SET expires = ? WHERE name = ? AND owner = ? AND state = 'held' AND token = ?"),
    release: db.prepare<[string, string, number | null, number | null], { mode: LockMode; state: string }>(
      "DELETE FROM holders WHERE name = ? AND owner = ? AND state = 'held' AND (? IS NULL OR token = ?) RETURNING mode, state"),
    seq: db.prepare<[string], { token: unknown; kind: string; flags: number; grants: number }>(
      'SELECT token, typeof(token) AS kind, flags, grants FROM names WHERE name = ?'),
    setSeq: db.prepare<[string, number, number, number]>(
      'INSERT INTO names (name, token, flags, grants) VALUES (?, ?, ?, ?) '
      + 'ON CONFLICT (name) DO UPDATE SET token = excluded.token, flags = excluded.flags, grants = excluded.grants'),
    abandon: db.prepare<[string]>(`INSERT INTO names (name, token, flags, grants) VALUES (?, 0, ${ABANDONED}, 0) `
      + `ON CONFLICT (name) DO UPDATE SET flags = flags | ${ABANDONED}`),
  };
}

/** Threads of this process tell each other that a database's files were replaced (their connections must close). */
let replaced: BroadcastChannel | undefined;
const backends = new Set<SqliteBackend>();
function replacedChannel(): BroadcastChannel {
  if (replaced !== undefined) return replaced;
  replaced = new BroadcastChannel('latchkey:sqlite-replaced');
  replaced.unref(); // never keeps a thread alive
  replaced.onmessage = (event) => {
    for (const b of backends) b.replacedElsewhere((event as { data: string }).data);
  };
  return replaced;
}

export class SqliteBackend implements Backend {
  readonly kind = 'sqlite';
  readonly location: string;
  readonly #me = me();
  readonly #dir: string;
  /** undefined while the store was replaced and the connection could not be opened again (#ensure()). */
  #db: Database.Database | undefined;
  #q: ReturnType<typeof prepare>;
  #retryAt = 0;
  /** When SQLITE_IOERR_SHORT_READ began (a store being replaced): retried for 3 s, then reported. */
  #shortReadsSince = 0;
  /** Tokens read from a connection to files that were replaced: the next transaction raises the store's to them. */
  readonly #repair = new Map<string, number>();
  /** Runs its argument in a transaction (created once, like the statements). */
  #txn: Database.Transaction<(fn: () => unknown) => unknown>;
  /** The inodes of the database and its WAL when opened (#inodes()). */
  #files = '';
  /** The lock directory's floor: a name's first token (file-dir.ts). */
  #floor = 0;
  /** Epoch ms until which a store made a moment ago grants nothing (file-dir.ts STORE_GRACE_MS). */
  #graceUntil = 0;
  #fifos: Fifos | undefined;
  #closed = false;

  constructor(path?: string) {
    // The driver first: when it is missing, nothing is created.
    sqlite();
    // Its directory is made (0700) and checked as the file backend's is: LATCHKEY_DIR means the same for both.
    const asOurs = <T>(fn: () => T): T => {
      try {
        return fn();
      } catch (err) {
        if (err instanceof ERR_LOCK_BACKEND) throw fail(err.detail, err.cause);
        throw err;
      }
    };
    const file = path === undefined ? join(asOurs(() => openLockDir(undefined, 'sqlite')), 'locks.db') : resolve(path);
    this.location = file;
    this.#dir = dirname(file);
    const o = this.#open(asOurs);
    this.#db = o.db;
    this.#q = o.q;
    this.#txn = o.txn;
    backends.add(this);
    replacedChannel();
  }

  /** @internal Another thread of this process found `location`'s files replaced: drop this connection if it is a stale one. */
  replacedElsewhere(location: string): void {
    if (location === this.location && this.#db !== undefined && this.#inodes() !== this.#files) this.#drop();
  }

  /**
   * Open (or make) the database: its directory checked, its files checked,
   * WAL, the schema; and what a later look compares with: the inodes of
   * the database and its WAL (issue 17 item 1), the directory's floor and
   * grace (file-dir.ts).
   */
  #open(asOurs: <T>(fn: () => T) => T) {
    const file = this.location;
    const d = asOurs(() => lockDirOf(this.#dir, 'sqlite'));
    this.#graceUntil = d.graceUntil;
    this.#floor = asOurs(() => readFloor(this.#dir, 'sqlite'));
    if (lstatSync(file, { throwIfNoEntry: false }) === undefined) createFile(file);
    for (const f of [file, `${file}-wal`, `${file}-shm`]) checkFile(f);
    const Sqlite = sqlite();
    let db: Database.Database | undefined;
    try {
      const c = (db = new Sqlite(file, { fileMustExist: true, timeout: BUSY_MS }));
      const mode = this.#retryOpen(() => c.pragma('journal_mode = WAL', { simple: true }));
      if (mode !== 'wal') throw fail(`${file} cannot be put in WAL mode (journal_mode is ${String(mode)})`);
      c.pragma('synchronous = NORMAL');
      const txn = c.transaction((fn: () => unknown) => fn());
      this.#retryOpen(() => txn.immediate(() => this.#setUp(c)));
      this.#files = this.#inodes();
      return { db: c, q: prepare(c), txn };
    } catch (err) {
      db?.close();
      if (err instanceof ERR_LOCK_BACKEND) throw err;
      const code = (err as { code?: unknown }).code;
      if (code === 'SQLITE_NOTADB') throw fail(`${file} is not a SQLite database`, err);
      throw fail(`cannot open ${file}: ${(err as Error).message}`, err);
    }
  }

  /** The inodes of the database and its WAL, as they are now ('' for a missing file). */
  #inodes(): string {
    const id = (f: string) => {
      const st = lstatSync(f, { throwIfNoEntry: false });
      return st === undefined ? '-' : `${st.dev}:${st.ino}`;
    };
    return `${id(this.location)} ${id(`${this.location}-wal`)}`;
  }

  /**
   * The files this connection uses were removed or replaced (rm -rf, a tmp
   * cleaner deleting the WAL): a sentence saying so, else null. Then this
   * process repairs the new store upwards (every token it can still read
   * through the old connection) and opens it.
   */
  #replaced(): string | null {
    if (this.#db !== undefined && this.#inodes() === this.#files) return null;
    const what = lstatSync(this.location, { throwIfNoEntry: false }) === undefined
      ? `the database ${this.location} was removed` : `the database ${this.location} or its WAL was removed or replaced`;
    if (this.#db !== undefined) {
      this.#drop();
      // The other threads of this process drop theirs too: SQLite reopens only once no connection keeps the old files.
      replacedChannel().postMessage(this.location);
    }
    try {
      this.#ensure(true);
    } catch {
      // Told all the same; the next use tries again (ERR_LOCK_BACKEND meanwhile).
    }
    return `${what} while the lock was held (rm -rf, or a tmp cleaner?): the lock is lost`;
  }

  /**
   * Close the connection (it reopens at the next use), keeping every token
   * it can still read: the next transaction on the new store raises its
   * tokens to them (repaired upwards, issue 17 item 1).
   */
  #drop(): void {
    if (this.#db === undefined) return;
    try {
      for (const t of this.#db.prepare<[], { name: string; token: number }>("SELECT name, token FROM names WHERE typeof(token) = 'integer'").all()) {
        this.#repair.set(t.name, Math.max(t.token, this.#repair.get(t.name) ?? 0));
      }
    } catch {
      // the old connection cannot be read any more: the floor is all there is
    }
    try {
      this.#db.close();
    } catch {
      // closed already
    }
    this.#db = undefined;
  }

  #reopen(): void {
    const o = this.#open((fn) => fn());
    this.#db = o.db;
    this.#q = o.q;
    this.#txn = o.txn;
  }

  get #f(): Fifos {
    return (this.#fifos ??= new Fifos(this.#dir, 'sqlite'));
  }

  /** The connection, opened again when it was dropped (the store was replaced). */
  #ensure(now = false): void {
    if (this.#db !== undefined) return;
    if (!now && performance.now() < this.#retryAt) throw fail(`${this.location} was removed or replaced and cannot be opened again yet`);
    this.#retryAt = performance.now() + 20;
    this.#reopen();
  }

  // --- Backend ----------------------------------------------------------------------

  acquire(req: AcquireRequest): Attempt {
    // Never grant from files that are not the store any more: the store was removed or replaced.
    if (this.#db === undefined || this.#inodes() !== this.#files) {
      this.#replaced();
      // SQLite opens it again only once no connection anywhere keeps the old files: a moment later.
      if (this.#db === undefined) return { later: 20 };
    }
    const grace = this.#graceUntil - wallClock();
    if (grace > 0 && !req.once) return { later: grace };
    let f: Fifo | null = null;
    try {
      // First without a FIFO (an uncontended request never makes one); queued, once more with one.
      let { result, notes } = this.#tx(() => this.#acquire(req, null));
      if (result === 'queued') {
        f = this.#f.claim();
        const fifo = f;
        ({ result, notes } = this.#tx(() => this.#acquire(req, fifo)));
      }
      this.#send(notes);
      if (result === 'queued') return { queued: new SqliteWaiter(this, req, f!) };
      if (f !== null) this.#f.release(f);
      return result;
    } catch (err) {
      if (f !== null) this.#f.release(f);
      if (err instanceof StoreBusy) {
        if (req.once) return { unavailable: true };
        // Busy: queue without a row yet; the waiter's first look makes it (within the deadline).
        const g = this.#f.claim();
        return { queued: new SqliteWaiter(this, req, g, true) };
      }
      throw err;
    }
  }

  release(name: string, token: number | null, abandoned: boolean): void {
    // A few short tries: a release never blocks a thread for long; if all fail the lease runs out by itself.
    for (let i = 0; ; i++) {
      try {
        const notes = this.#tx(() => {
          const gone = this.#q.release.all(name, this.#me.id, token, token);
          if (token === null) this.#q.drop.run(name, this.#me.id); // a wait of ours too (recovery, exit)
          if (abandoned && gone.some((r) => r.mode === 'exclusive')) this.#q.abandon.run(name);
          // Nobody waits (one indexed look): nothing to hand over.
          if ((gone.length === 0 && token !== null) || this.#q.anyWaiting.get(name, this.#me.id) === undefined) return [];
          return this.#serve(name);
        });
        this.#send(notes);
        return;
      } catch (err) {
        if (!(err instanceof StoreBusy) || i >= 20) throw err instanceof StoreBusy ? fail(`${this.location} stayed busy: the release is left to the lease`) : err;
      }
    }
  }

  waiting(name: string): boolean {
    return this.#read(() => this.#q.anyWaiting.get(name, this.#me.id) !== undefined);
  }

  renew(name: string, token: number, ttl: number): Renewal {
    const removed = this.#replaced();
    if (removed !== null) return { lost: 'marker-missing', detail: removed, removed: true };
    return this.#tx(() => {
      const q = this.#q, id = this.#me.id, expires = wallClock() + ttl;
      if (q.renew.run(expires, name, id, token).changes > 0) return { expires };
      const other = q.otherHeld.get(name, id);
      if (other !== undefined) return { lost: 'owner-changed', detail: `process ${other.pid} (${other.host}) holds it now, token ${other.token} (${this.location})` };
      const mine = q.mine.get(name, id);
      if (mine?.state === 'held') return { lost: 'owner-changed', detail: `this process holds it under token ${mine.token} now, not ${token}` };
      // Gone, and nobody holds it: within our lease only another process's steal takes a row (a
      // takeover waits for the lease, and prune keeps held names), and it has let go since. Said as
      // a steal (host.ts says 'expired' once the lease has run out), as when the stealer still holds it.
      return { lost: 'owner-changed', detail: `another process took it from ${this.location} and has let it go since` };
    });
  }

  query(): HostLockEntry[] {
    const rows = this.#read(() => this.#q.all.all()), now = wallClock(), mono = monotonicMs();
    const out: HostLockEntry[] = [];
    for (const r of rows) {
      const held = r.state === 'held';
      if (rowDead(r) || (held && r.expires < now) || (!held && now - r.at > SKIP_MS + POLL_MS)) continue;
      out.push({
        name: r.name, mode: r.mode, state: held ? 'held' : 'pending', owner: r.owner, pid: r.pid, host: r.host,
        // Held: when granted. Pending: when the wait began (since is monotonic, comparable on this host).
        token: held ? r.token : 0, expires: held ? r.expires : 0, since: held ? r.at : now - (mono - r.since),
      });
    }
    return out;
  }

  prune(only?: ReadonlySet<string>): PruneReport {
    const report = this.#tx(() => {
      const q = this.#q, now = wallClock(), kept: PruneReport['kept'] = [], removed: string[] = [];
      const live = new Map<string, 'held' | 'waiting'>();
      for (const r of q.all.all()) {
        if (this.#stale(r, now) !== null) continue; // a dead or expired process's row: dropped
        if (live.get(r.name) !== 'held') live.set(r.name, r.state);
      }
      const rows = this.#db!.prepare<[], { name: string; token: unknown; kind: string }>('SELECT name, token, typeof(token) AS kind FROM names').all();
      let floor = 0;
      for (const row of rows) {
        if (only !== undefined && !only.has(row.name)) continue;
        const state = live.get(row.name);
        if (state !== undefined) kept.push({ name: row.name, why: state });
        else if (row.kind !== 'integer' || typeof row.token !== 'number' || !Number.isSafeInteger(row.token)) kept.push({ name: row.name, why: 'corrupt' });
        else {
          floor = Math.max(floor, row.token);
          removed.push(row.name);
        }
      }
      // The floor first (inside the transaction: nobody issues a token meanwhile), then the rows.
      if (removed.length > 0) writeFloor(this.#dir, floor, 'sqlite');
      const del = this.#db!.prepare<[string]>('DELETE FROM names WHERE name = ?');
      for (const name of removed) del.run(name);
      return { removed, kept };
    });
    if (lstatSync(join(this.#dir, '.fifo'), { throwIfNoEntry: false }) !== undefined) this.#f.collectDead();
    return report;
  }

  checkStore(): void {
    if (this.#db !== undefined && this.#inodes() !== this.#files) this.#replaced();
  }

  notices(onMessage: (m: Message) => void): void {
    try {
      this.#f.openNotice(onMessage);
    } catch (err) {
      throw asBackend(err, 'sqlite', `cannot open the notice FIFO in ${this.#dir}`);
    }
  }

  watch(_name: string, onChange: () => void): () => void {
    // The database's files removed (a tmp cleaner, rm -rf) while we hold: checked at once.
    try {
      const base = this.location.slice(this.#dir.length + 1);
      const w = watch(this.#dir, { persistent: false }, (event, file) => {
        // Removals and replacements only: every transaction writes the WAL ('change').
        if (file === null || (event === 'rename' && file.startsWith(base))) onChange();
      });
      w.on('error', () => {}); // renewals still check
      return () => w.close();
    } catch {
      return () => {};
    }
  }

  /** Remove every row of this process for these names (it is exiting), and close the database. */
  close(names: Iterable<string> = []): void {
    if (this.#closed) return;
    const list = [...names];
    try {
      const notes = this.#tx(() => list.flatMap((name) => (this.#q.drop.run(name, this.#me.id).changes > 0 ? this.#serve(name) : [])));
      this.#send(notes);
    } catch {
      // the rows of a dead process go at the next look
    } finally {
      this.#closed = true;
      this.#drop();
      this.#fifos?.returnAll();
    }
  }

  // --- transactions ------------------------------------------------------------------

  /** The name's seq, refused when it cannot be trusted (issue 17 item 5). */
  #seq(name: string): { token: number; flags: number; grants: number } {
    const s = this.#q.seq.get(name);
    // A name never seen (or pruned): from the floor, read afresh (latchkey prune raises it).
    if (s === undefined) return { token: Math.max(this.#floor, readFloor(this.#dir, 'sqlite')), flags: 0, grants: 0 };
    const token = s.token;
    if (s.kind !== 'integer' || typeof token !== 'number' || !Number.isSafeInteger(token) || token < 0 || token > MAX_TOKEN
      || !Number.isSafeInteger(s.grants) || s.grants < 0) {
      throw fail(`${this.location}: the token of ${JSON.stringify(name)} is ${String(token)} (${s.kind}): tokens could go backwards (it is refused, not reset)`);
    }
    return { token, flags: s.flags, grants: s.grants };
  }

  #next(name: string, token: number): number {
    if (token + 1 > MAX_TOKEN) throw fail(`the tokens of ${JSON.stringify(name)} are spent (the last was ${token}; at most ${MAX_TOKEN})`);
    return token + 1;
  }

  /** Drop another process's row that can be passed over; whether it was an exclusive holder (then the next is told). */
  #stale(r: Row, now: number): boolean | null {
    if (r.owner === this.#me.id) return null;
    const gone = rowDead(r) || (r.state === 'held' ? r.expires < now : now - r.at > SKIP_MS || (r.fifo !== '' && !this.#f.alive(r.owner, r.fifo)));
    if (!gone) return null;
    this.#q.drop.run(r.name, r.owner);
    if (r.state === 'held' && r.mode === 'exclusive') {
      this.#q.abandon.run(r.name);
      if (!rowDead(r)) return true; // frozen, not dead: told on its notice FIFO
    }
    return false;
  }

  #acquire(req: AcquireRequest, f: Fifo | null): { result: Attempt | 'queued'; notes: Note[] } {
    const q = this.#q, me = this.#me, now = wallClock(), name = req.name, notes: Note[] = [];
    const held: Row[] = [], waiting: Row[] = [];
    for (const r of q.rows.all(name)) {
      if (r.owner === me.id) continue; // a leftover of ours (a dead thread's): replaced below
      const frozen = this.#stale(r, now);
      if (frozen === true) notes.push({ owner: r.owner, k: 'n', kind: M_LOST, token: 0 });
      if (frozen !== null) continue;
      (r.state === 'held' ? held : waiting).push(r);
    }
    const blockers = held.filter((r) => req.mode === 'exclusive' || r.mode === 'exclusive');
    if (req.steal) {
      for (const r of held) {
        q.drop.run(name, r.owner);
        notes.push({ owner: r.owner, k: 'n', kind: M_LOST, token: 0 });
      }
    }
    // Granted now: nothing in the way, and nobody waiting ahead (FIFO) unless this is a steal.
    if (req.steal || (blockers.length === 0 && waiting.length === 0)) {
      const seq = this.#seq(name), token = this.#next(name, seq.token), expires = now + req.ttl;
      const stolen = req.steal && held.length > 0;
      const previousDied = stolen || (seq.flags & ABANDONED) !== 0;
      // Readers keep ABANDONED for the next writer: they are told, and so is it.
      q.setSeq.run(name, token, req.mode === 'exclusive' ? 0 : seq.flags, seq.grants + 1);
      q.put.run(name, me.id, req.mode, 'held', token, expires, req.ttl, req.since, now, me.pid, me.start, me.boot, me.host, '', 0);
      return { result: { granted: { token, expires, previousDied } }, notes };
    }
    if (req.once) {
      q.drop.run(name, me.id);
      return { result: { unavailable: true }, notes };
    }
    if (f === null) return { result: 'queued', notes }; // it must queue: the caller claims a FIFO and asks again
    q.put.run(name, me.id, req.mode, 'waiting', 0, 0, req.ttl, req.since, now, me.pid, me.start, me.boot, me.host, f!.k, 0);
    // Free, but others waited: the oldest go first (never us: we are the newest), and we queue.
    if (blockers.length === 0) notes.push(...this.#serve(name));
    return { result: 'queued', notes };
  }

  /**
   * Hand the lock to the oldest live waiter(s) if nothing held is in their
   * way: rows turned into held rows with their tokens, in this transaction.
   * Returns the messages to send once it commits.
   */
  #serve(name: string): Note[] {
    const q = this.#q, now = wallClock(), notes: Note[] = [];
    const held: Row[] = [], waiting: Row[] = [];
    for (const r of q.rows.all(name)) {
      const frozen = this.#stale(r, now);
      if (frozen === true) notes.push({ owner: r.owner, k: 'n', kind: M_LOST, token: 0 });
      if (frozen !== null) continue;
      (r.state === 'held' ? held : waiting).push(r);
    }
    if (held.some((r) => r.mode === 'exclusive')) return notes;
    let seq: { token: number; flags: number; grants: number } | undefined;
    for (const w of waiting) {
      if (w.mode === 'exclusive' && held.length > 0) break;
      seq ??= this.#seq(name);
      const token = this.#next(name, seq.token), abandoned = (seq.flags & ABANDONED) !== 0;
      q.grant.run(token, now + w.ttl, now, abandoned ? 1 : 0, name, w.owner);
      seq = { token, flags: w.mode === 'exclusive' ? 0 : seq.flags, grants: seq.grants + 1 };
      q.setSeq.run(name, seq.token, seq.flags, seq.grants);
      notes.push({ owner: w.owner, k: w.fifo, kind: abandoned ? M_GRANT_ABANDONED : w.mode === 'shared' ? M_READ : M_GRANT, token });
      held.push(w);
      if (w.mode === 'exclusive') break;
    }
    return notes;
  }

  /** @internal A waiter's look: granted (its row held), or queued (heartbeat; a stale holder passed over). */
  look(req: AcquireRequest, f: Fifo, fresh: boolean): Grant | 'waiting' | 'requeue' {
    // The store removed or replaced under the wait: queue again in the new one.
    if (this.#db === undefined || this.#inodes() !== this.#files) {
      this.#replaced();
      if (this.#db === undefined) throw new StoreBusy();
      fresh = true;
    }
    const { result, notes } = this.#tx(() => {
      const q = this.#q, me = this.#me, now = wallClock();
      const mine = q.mine.get(req.name, me.id);
      if (mine?.state === 'held') return { result: { token: mine.token, expires: mine.expires, previousDied: mine.abandoned === 1 } as Grant, notes: [] };
      if (mine === undefined || fresh) {
        // Passed over (we were frozen, or slow), or never queued (the store was busy): queue in our place.
        const r = this.#acquire({ ...req, once: false, steal: false }, f);
        return { result: r.result === 'queued' ? 'waiting' as const : 'granted' in r.result ? r.result.granted : 'requeue' as const, notes: r.notes };
      }
      q.beat.run(now, req.name, me.id);
      // A holder that died or lost its lease: passed over here.
      return { result: 'waiting' as const, notes: this.#serve(req.name) };
    });
    this.#send(notes);
    if (typeof result === 'object') return result;
    // Our own serve may have granted us.
    if (result === 'waiting' && notes.some((n) => n.owner === this.#me.id && n.k === f.k)) {
      const row = this.#read(() => this.#q.mine.get(req.name, this.#me.id));
      if (row?.state === 'held') return { token: row.token, expires: row.expires, previousDied: row.abandoned === 1 };
    }
    return result;
  }

  /** @internal Our row, held with `token` (a grant message checked), or null. */
  heldRow(name: string, token: number): Grant | null {
    const row = this.#read(() => this.#q.mine.get(name, this.#me.id));
    return row?.state === 'held' && row.token === token ? { token: row.token, expires: row.expires, previousDied: row.abandoned === 1 } : null;
  }

  /** @internal Stop waiting: our waiting row goes; a grant that came meanwhile goes on. */
  leave(name: string): void {
    for (let i = 0; ; i++) {
      try {
        const notes = this.#tx(() => {
          const q = this.#q, mine = q.mine.get(name, this.#me.id);
          if (mine === undefined) return [];
          q.drop.run(name, this.#me.id);
          // Handed to us as we left: pass it on (we never went in: the flags go on too).
          if (mine.state === 'held' && mine.abandoned === 1) q.abandon.run(name);
          return this.#serve(name);
        });
        this.#send(notes);
        return;
      } catch (err) {
        if (!(err instanceof StoreBusy) || i >= 20) throw err instanceof StoreBusy ? fail(`${this.location} stayed busy`) : err;
      }
    }
  }

  get fifos(): Fifos {
    return this.#f;
  }

  #send(notes: Note[]): void {
    for (const n of notes) this.#f.send(n.owner, n.k, n.kind, n.token);
  }

  #setUp(db: Database.Database): void {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version !== 0 && version !== 1 && version !== SCHEMA) {
      throw fail(`${this.location} has schema version ${version}; this latchkey knows version ${SCHEMA} (or the file belongs to something else)`);
    }
    if (version === 1) db.exec(UPGRADE_1);
    db.exec(DDL);
    for (const [table, expected] of Object.entries(SHAPE)) {
      const cols = db.prepare<[string], { name: string; type: string; pk: number }>('SELECT name, type, pk FROM pragma_table_info(?)').all(table);
      const shape = cols.map((c) => `${c.name}:${c.type.toUpperCase()}:${c.pk}`).join(' ');
      if (shape !== expected) throw fail(`${this.location}: table ${table} has the wrong shape (${shape || 'no columns'}; expected ${expected})`);
    }
    if (version !== SCHEMA) db.pragma(`user_version = ${SCHEMA}`);
  }

  /** One IMMEDIATE transaction; StoreBusy when another writer keeps the database past BUSY_MS. */
  #tx<T>(fn: () => T): T {
    if (this.#closed) throw fail(`${this.location} is closed`);
    try {
      this.#ensure();
      if (this.#repair.size === 0) return this.#txn.immediate(fn) as T;
      const r = this.#txn.immediate(() => {
        const raise = this.#db!.prepare<[string, number]>(
          'INSERT INTO names (name, token, flags, grants) VALUES (?, ?, 0, 0) ON CONFLICT (name) DO UPDATE SET token = max(token, excluded.token)');
        for (const [name, token] of this.#repair) raise.run(name, token);
        return fn();
      }) as T;
      this.#repair.clear();
      return r;
    } catch (err) {
      throw this.#wrap(err);
    }
  }

  /** A read (one statement: no transaction needed). */
  #read<T>(fn: () => T): T {
    if (this.#closed) throw fail(`${this.location} is closed`);
    try {
      this.#ensure();
      return fn();
    } catch (err) {
      throw this.#wrap(err);
    }
  }

  #wrap(err: unknown): Error {
    if (err instanceof ERR_LOCK_BACKEND || err instanceof StoreBusy) return err;
    if (isBusy(err)) return new StoreBusy();
    // The files were replaced under a connection of another process (its WAL deleted): this
    // connection goes, and the caller asks again a moment later, once every stale one is gone.
    if ((err as { code?: unknown })?.code === 'SQLITE_IOERR_SHORT_READ') {
      const now = performance.now();
      if (this.#shortReadsSince === 0 || now - this.#shortReadsSince > 10_000) this.#shortReadsSince = now;
      if (now - this.#shortReadsSince < 3000) {
        this.#drop();
        return new StoreBusy();
      }
    }
    if (err instanceof sqlite().SqliteError) return fail(`${this.location}: ${err.message} (${err.code})`, err);
    return asBackend(err, 'sqlite', `cannot use ${this.location}`);
  }

  /** Opening: a few tries of BUSY_MS each (a sleep of this thread; only when the database is first opened). */
  #retryOpen<T>(fn: () => T): T {
    for (let i = 0; ; i++) {
      try {
        return fn();
      } catch (err) {
        if (!isBusy(err) || i >= 200) throw err;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1 + Math.random() * 5);
      }
    }
  }
}

/** A request of this thread waiting in a name's queue (its row, state 'waiting'). */
class SqliteWaiter implements Waiter {
  readonly name: string;
  #done = false;
  #fresh: boolean;

  constructor(readonly b: SqliteBackend, readonly req: AcquireRequest, readonly f: Fifo, fresh = false) {
    this.name = req.name;
    this.#fresh = fresh;
  }

  get fifo(): string {
    return this.f.path;
  }

  step(): Grant | number | 'restart' {
    try {
      const r = this.b.look(this.req, this.f, this.#fresh);
      this.#fresh = false;
      if (typeof r === 'object') {
        this.#end();
        return r;
      }
      return r === 'requeue' ? 0 : POLL_MS * (0.75 + Math.random() / 2);
    } catch (err) {
      if (err instanceof StoreBusy) return BUSY_RETRY_MS;
      throw err;
    }
  }

  arm(onWake: (grant: Grant | null) => void): void {
    this.f.arm((m) => {
      if (!this.#done && (m.kind === M_GRANT || m.kind === M_GRANT_ABANDONED || m.kind === M_READ)) {
        try {
          const g = this.b.heldRow(this.name, m.value);
          if (g !== null) {
            this.#end();
            onWake(g);
            return;
          }
        } catch {
          // looked at again by the step
        }
      }
      onWake(null);
    });
  }

  disarm(): void {
    this.f.disarm();
  }

  readBlocking(): void {
    this.f.readBlocking();
  }

  poll(): boolean {
    return this.f.poll();
  }

  leave(): void {
    if (this.#done) return;
    try {
      this.b.leave(this.name);
    } finally {
      this.#end();
    }
  }

  #end(): void {
    if (this.#done) return;
    this.#done = true;
    this.b.fifos.release(this.f);
  }
}

