/**
 * The SQLite backend: host locks as rows of one database file (WAL mode,
 * synchronous=NORMAL), with the file backend's semantics (file.ts); only
 * the storage differs. Every state change is one short BEGIN IMMEDIATE
 * transaction, so SQLite's write lock does what the gate and the breaker
 * do there. Schema (PRAGMA user_version = 1):
 *
 *   names    name PK, token (the last token granted), flags (ABANDONED)
 *   holders  (name, owner) PK: one row per name and process (Owner.id), with
 *            its pid, start, boot and host (for provablyDead), the mode,
 *            state 'held' | 'waiting', token, expires (epoch ms, lease end),
 *            ttl, since (monotonic ms the wait began: arrival order) and at
 *            (epoch ms: the grant, or a waiter's latest attempt)
 *
 * Rules, applied in attempt()'s transaction:
 * - Another process's row is dropped when its owner is provablyDead, a held
 *   row when its lease has run out. Dropping (or stealing) an exclusive
 *   held row sets ABANDONED; so does release(abandoned) of an exclusive
 *   grant. A grant reports previousDied while ABANDONED is set; an
 *   exclusive grant clears it, a shared one keeps it for the next writer.
 * - A held row of this process is a leftover of a thread of ours that died
 *   (grants are the process's, and it asks for one only when it holds none):
 *   it never blocks us and is replaced.
 * - Exclusive is grantable when no other process holds the name, shared
 *   when none holds it exclusive. A steal removes the holders in its way.
 * - Fairness (the file backend's heir): a conflicting request of another
 *   live process that has waited HOST_FAIR_MS, longer than we have, and
 *   whose row is fresh (rewritten within HEIR_STALE_MS) goes first.
 * - Every grant takes names.token + 1: tokens strictly increase per name.
 *
 * Wake-ups: release, withdraw, close, a steal and a shared grant others
 * wait behind touch `<db>.bells/<encodeName(name)>`; watch() is an fs.watch
 * of that directory. Waiters still poll (retryAt), so a lost bell costs
 * only time.
 */
import { closeSync, constants, lstatSync, mkdirSync, openSync, utimesSync, watch, type FSWatcher } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type Database from 'better-sqlite3';
import { loadDriver } from '../drivers.js';
import type { LockMode } from '../../atomics/queue/queue.js';
import type { Attempt, AttemptRequest, Backend, HostLockEntry, Renewal } from './backend.js';
import { HEIR_STALE_MS, HOST_FAIR_MS, POLL_MS } from './file.js';
import { checkDir, encodeName, openLockDir } from './file-dir.js';
import { me, monotonicMs, provablyDead, wallClock } from '../identity.js';
import { ERR_LOCK_BACKEND } from '../../errors.js';

const SCHEMA = 1;
const ABANDONED = 1;
/** SQLite's own wait for the write lock, ms. */
const BUSY_TIMEOUT_MS = 5_000;
/** Further tries of a transaction when SQLITE_BUSY escapes anyway. */
const BUSY_RETRIES = 4;

const DDL = `
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, token INTEGER NOT NULL, flags INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS holders (
  name TEXT NOT NULL, owner TEXT NOT NULL, mode TEXT NOT NULL CHECK (mode IN ('exclusive', 'shared')),
  state TEXT NOT NULL CHECK (state IN ('held', 'waiting')), token INTEGER NOT NULL, expires REAL NOT NULL,
  ttl REAL NOT NULL, since REAL NOT NULL, at REAL NOT NULL, pid INTEGER NOT NULL, start TEXT NOT NULL,
  boot TEXT NOT NULL, host TEXT NOT NULL, PRIMARY KEY (name, owner));`;
/** Column name:type:pk of each table, as PRAGMA table_info shows them. */
const SHAPE: Record<string, string> = {
  names: 'name:TEXT:1 token:INTEGER:0 flags:INTEGER:0',
  holders: 'name:TEXT:1 owner:TEXT:2 mode:TEXT:0 state:TEXT:0 token:INTEGER:0 expires:REAL:0 ttl:REAL:0 since:REAL:0 '
    + 'at:REAL:0 pid:INTEGER:0 start:TEXT:0 boot:TEXT:0 host:TEXT:0',
};

interface Row {
  name: string; owner: string; mode: LockMode; state: 'held' | 'waiting'; token: number; expires: number;
  ttl: number; since: number; at: number; pid: number; start: string; boot: string; host: string;
}

const fail = (detail: string) => new ERR_LOCK_BACKEND('sqlite', detail);
/** better-sqlite3, loaded on first use (drivers.ts). */
const sqlite = () => loadDriver<typeof Database>('better-sqlite3', 'sqlite');
/** Whether the process of a row is provably dead (identity.ts); its `owner` is the process's id. */
const rowDead = (r: Row) => provablyDead({ id: r.owner, pid: r.pid, start: r.start, boot: r.boot, host: r.host });
const sleepMs = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Run a file-dir.ts check, its refusal told as this backend's. */
function asOurs<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const message = (err as Error).message.replace(/^Cannot use the file lock backend: /, '');
    throw fail(message);
  }
}

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
    throw fail(`cannot create ${path}: ${(err as Error).message}`);
  }
}

function prepare(db: Database.Database) {
  return {
    rows: db.prepare<[string], Row>('SELECT * FROM holders WHERE name = ?'),
    all: db.prepare<[], Row>('SELECT * FROM holders'),
    mine: db.prepare<[string, string], Row>('SELECT * FROM holders WHERE name = ? AND owner = ?'),
    otherHeld: db.prepare<[string, string], Row>("SELECT * FROM holders WHERE name = ? AND owner <> ? AND state = 'held' LIMIT 1"),
    waiters: db.prepare<[string, string], Row>("SELECT * FROM holders WHERE name = ? AND owner <> ? AND state = 'waiting'"),
    drop: db.prepare<[string, string]>('DELETE FROM holders WHERE name = ? AND owner = ?'),
    put: db.prepare<[string, string, LockMode, string, number, number, number, number, number, number, string, string, string]>(
      'INSERT OR REPLACE INTO holders (name, owner, mode, state, token, expires, ttl, since, at, pid, start, boot, host) '
      + 'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    renew: db.prepare<[number, string, string]>('UPDATE holders SET expires = ? WHERE name = ? AND owner = ?'),
    release: db.prepare<[string, string, number | null, number | null], { mode: LockMode; state: string }>(
      "DELETE FROM holders WHERE name = ? AND owner = ? AND (state = 'waiting' OR ? IS NULL OR token = ?) RETURNING mode, state"),
    withdraw: db.prepare<[string, string]>("DELETE FROM holders WHERE name = ? AND owner = ? AND state = 'waiting'"),
    seq: db.prepare<[string], { token: number; flags: number }>('SELECT token, flags FROM names WHERE name = ?'),
    setSeq: db.prepare<[string, number, number]>(
      'INSERT INTO names (name, token, flags) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET token = excluded.token, flags = excluded.flags'),
    abandon: db.prepare<[string]>(`INSERT INTO names (name, token, flags) VALUES (?, 0, ${ABANDONED}) `
      + `ON CONFLICT (name) DO UPDATE SET flags = flags | ${ABANDONED}`),
  };
}

export class SqliteBackend implements Backend {
  readonly kind = 'sqlite';
  readonly location: string;
  readonly #me = me();
  readonly #bells: string;
  readonly #db: Database.Database;
  readonly #q: ReturnType<typeof prepare>;
  /** Runs its argument in a transaction (created once, like the statements). */
  readonly #txn: Database.Transaction<(fn: () => unknown) => unknown>;
  readonly #watchers = new Set<FSWatcher>();
  #closed = false;

  constructor(path?: string) {
    // The driver first: when it is missing, nothing is created.
    const Sqlite = sqlite();
    // Its directory is made (0700) and checked as the file backend's is: LATCHKEY_DIR means the same for both.
    const file = path === undefined ? join(asOurs(() => openLockDir(undefined)), 'locks.db') : resolve(path);
    this.location = file;
    asOurs(() => openLockDir(dirname(file)));
    if (lstatSync(file, { throwIfNoEntry: false }) === undefined) createFile(file);
    for (const f of [file, `${file}-wal`, `${file}-shm`]) checkFile(f);
    this.#bells = `${file}.bells`;
    try {
      mkdirSync(this.#bells, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fail(`cannot create ${this.#bells}: ${(err as Error).message}`);
    }
    asOurs(() => checkDir(this.#bells));
    let db: Database.Database | undefined;
    try {
      const d = (db = new Sqlite(file, { fileMustExist: true, timeout: BUSY_TIMEOUT_MS }));
      const mode = this.#retry(() => d.pragma('journal_mode = WAL', { simple: true }));
      if (mode !== 'wal') throw fail(`${file} cannot be put in WAL mode (journal_mode is ${String(mode)})`);
      d.pragma('synchronous = NORMAL');
      this.#txn = d.transaction((fn: () => unknown) => fn());
      this.#retry(() => this.#txn.immediate(() => this.#setUp(d)));
      this.#q = prepare(d);
      this.#db = d;
    } catch (err) {
      db?.close();
      if (err instanceof ERR_LOCK_BACKEND) throw err;
      const code = (err as { code?: unknown }).code;
      if (code === 'SQLITE_NOTADB') throw fail(`${file} is not a SQLite database`);
      throw fail(`cannot open ${file}: ${(err as Error).message}`);
    }
  }

  attempt(req: AttemptRequest): Attempt {
    const { result, ring } = this.#tx(() => this.#attempt(req));
    if (ring) this.#ring(req.name);
    return result;
  }

  renew(name: string, token: number, ttl: number): Renewal {
    return this.#tx(() => {
      const q = this.#q, id = this.#me.id, mine = q.mine.get(name, id);
      if (mine?.state === 'held' && mine.token === token) {
        const expires = wallClock() + ttl;
        q.renew.run(expires, name, id);
        return { expires };
      }
      const other = q.otherHeld.get(name, id);
      if (other !== undefined) return { lost: 'owner-changed', detail: `process ${other.pid} (${other.host}) holds it now, token ${other.token} (${this.location})` };
      if (mine?.state === 'held') return { lost: 'owner-changed', detail: `this process holds it under token ${mine.token} now, not ${token}` };
      // Gone, and nobody holds it: within our lease only another process's steal takes a row (a
      // takeover waits for the lease), and it has let go since. Said as a steal (host.ts says
      // 'expired' once the lease has run out), as when the stealer still holds it.
      return { lost: 'owner-changed', detail: `another process took it from ${this.location} and has let it go since` };
    });
  }

  /** `token` null: whatever grant this process holds of `name`. */
  release(name: string, token: number | null, abandoned: boolean): void {
    const ring = this.#tx(() => {
      const gone = this.#q.release.all(name, this.#me.id, token, token);
      if (abandoned && gone.some((r) => r.state === 'held' && r.mode === 'exclusive')) this.#q.abandon.run(name);
      return gone.length > 0;
    });
    if (ring) this.#ring(name);
  }

  withdraw(name: string): void {
    if (this.#tx(() => this.#q.withdraw.run(name, this.#me.id).changes > 0)) this.#ring(name);
  }

  othersWaiting(name: string): boolean {
    return this.#tx(() => this.#q.waiters.all(name, this.#me.id).some((r) => !rowDead(r)), false);
  }

  query(): HostLockEntry[] {
    const rows = this.#tx(() => this.#q.all.all(), false), now = wallClock(), mono = monotonicMs();
    const out: HostLockEntry[] = [];
    for (const r of rows) {
      const held = r.state === 'held';
      if (rowDead(r) || (held && r.expires < now)) continue;
      out.push({
        name: r.name, mode: r.mode, state: held ? 'held' : 'pending', owner: r.owner, pid: r.pid, host: r.host,
        // Held: when granted. Pending: when the wait began (since is monotonic, comparable on this host).
        token: held ? r.token : 0, expires: held ? r.expires : 0, since: held ? r.at : now - (mono - r.since),
      });
    }
    return out;
  }

  watch(name: string, onChange: () => void): () => void {
    const encoded = encodeName(name);
    try {
      const w = watch(this.#bells, { persistent: false }, (_event, filename) => {
        if (filename === encoded || filename == null) onChange();
      });
      w.on('error', () => {}); // the waiters' polling goes on
      this.#watchers.add(w);
      return () => {
        this.#watchers.delete(w);
        w.close();
      };
    } catch {
      return () => {}; // no inotify (or out of watches): the waiters poll
    }
  }

  /** Remove every row of this process for these names (it is exiting), and close the database. */
  close(names: Iterable<string> = []): void {
    if (this.#closed) return;
    const list = [...names];
    let rung: string[] = [];
    try {
      rung = this.#tx(() => list.filter((name) => this.#q.drop.run(name, this.#me.id).changes > 0));
    } finally {
      for (const name of rung) this.#ring(name);
      for (const w of this.#watchers) w.close();
      this.#watchers.clear();
      this.#closed = true;
      this.#db.close();
    }
  }

  #attempt(req: AttemptRequest): { result: Attempt; ring: boolean } {
    const q = this.#q, me = this.#me, now = wallClock(), mono = monotonicMs();
    let died = false, ring = false, mine: Row | undefined, retryAt = now + POLL_MS;
    const held: Row[] = [], waiting: Row[] = [];
    for (const r of q.rows.all(req.name)) {
      if (r.owner === me.id) mine = r;
      else if (rowDead(r) || (r.state === 'held' && r.expires < now)) {
        q.drop.run(req.name, r.owner);
        if (r.state === 'held' && r.mode === 'exclusive') died = true;
      } else (r.state === 'held' ? held : waiting).push(r);
    }
    const blockers = held.filter((r) => req.mode === 'exclusive' || r.mode === 'exclusive');
    let grant = blockers.length === 0 || req.steal;
    if (req.steal) {
      for (const r of blockers) {
        q.drop.run(req.name, r.owner);
        if (r.mode === 'exclusive') died = true;
        ring = true; // the robbed may be watching
      }
    } else if (grant) {
      // An older, fresh, conflicting wait of another process goes first.
      for (const w of waiting) {
        if (mono - w.since >= HOST_FAIR_MS && w.since < req.since && now - w.at < HEIR_STALE_MS
          && (req.mode === 'exclusive' || w.mode === 'exclusive')) {
          grant = false;
          retryAt = Math.min(retryAt, w.at + HEIR_STALE_MS + 1);
        }
      }
    } else {
      for (const r of blockers) retryAt = Math.min(retryAt, r.expires + 1);
    }
    if (!grant) {
      if (died) q.abandon.run(req.name); // told to whoever is granted next
      if (mine?.state === 'held') ring = true; // a dead thread's leftover goes (below): others may come in
      if (req.wait) {
        q.put.run(req.name, me.id, req.mode, 'waiting', 0, 0, req.ttl, req.since, now, me.pid, me.start, me.boot, me.host);
      } else if (mine?.state === 'held') {
        q.drop.run(req.name, me.id);
      }
      return { result: { granted: false, retryAt }, ring };
    }
    const seq = q.seq.get(req.name) ?? { token: 0, flags: 0 };
    const previousDied = died || (seq.flags & ABANDONED) !== 0, token = seq.token + 1, expires = now + req.ttl;
    // Readers keep ABANDONED for the next writer: they are told, and so is it.
    q.setSeq.run(req.name, token, req.mode === 'exclusive' ? 0 : seq.flags | (previousDied ? ABANDONED : 0));
    q.put.run(req.name, me.id, req.mode, 'held', token, expires, req.ttl, req.since, now, me.pid, me.start, me.boot, me.host);
    // Shared waiters behind an older request that just came in may come in too.
    if (req.mode === 'shared' && waiting.length > 0) ring = true;
    return { result: { granted: true, token, expires, previousDied }, ring };
  }

  #setUp(db: Database.Database): void {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version !== 0 && version !== SCHEMA) {
      throw fail(`${this.location} has schema version ${version}; this latchkey knows version ${SCHEMA} (or the file belongs to something else)`);
    }
    db.exec(DDL);
    for (const [table, expected] of Object.entries(SHAPE)) {
      const cols = db.prepare<[string], { name: string; type: string; pk: number }>('SELECT name, type, pk FROM pragma_table_info(?)').all(table);
      const shape = cols.map((c) => `${c.name}:${c.type.toUpperCase()}:${c.pk}`).join(' ');
      if (shape !== expected) throw fail(`${this.location}: table ${table} has the wrong shape (${shape || 'no columns'}; expected ${expected})`);
    }
    if (version === 0) db.pragma(`user_version = ${SCHEMA}`);
  }

  /** One IMMEDIATE transaction (a read: one statement, none needed), retried when SQLITE_BUSY escapes busy_timeout. */
  #tx<T>(fn: () => T, write = true): T {
    if (this.#closed) throw fail(`${this.location} is closed`);
    try {
      return this.#retry(() => (write ? this.#txn.immediate(fn) as T : fn()));
    } catch (err) {
      if (err instanceof ERR_LOCK_BACKEND || !(err instanceof sqlite().SqliteError)) throw err;
      throw fail(`${this.location}: ${err.message} (${err.code})`);
    }
  }

  #retry<T>(fn: () => T): T {
    for (let i = 0; ; i++) {
      try {
        return fn();
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        if (typeof code !== 'string' || !code.startsWith('SQLITE_BUSY')) throw err;
        if (i >= BUSY_RETRIES) throw fail(`${this.location} stayed busy (${code}) through ${BUSY_RETRIES + 1} tries of ${BUSY_TIMEOUT_MS} ms`);
        sleepMs(1 + Math.random() * 10);
      }
    }
  }

  /** Touch the name's bell: an fs.watch of the bells directory fires in every process. */
  #ring(name: string): void {
    const bell = join(this.#bells, encodeName(name)), t = new Date();
    try {
      utimesSync(bell, t, t);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return; // a lost bell costs a poll
      try {
        createFile(bell); // the creation is the first ring
      } catch {
        // as above
      }
    }
  }
}
