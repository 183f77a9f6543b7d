/**
 * The cluster tier's PostgreSQL engine (engine.ts), driven by the cluster
 * agent (agent.ts; no other thread talks to the server): advisory locks,
 * one round trip per grant, waiters parked in the server's lock manager.
 * The SQL and the tables are in postgres-schema.ts; the measurements
 * behind each choice in issue 14's notes (NOTES.md of the port).
 *
 * Connections (node-postgres pipeline mode: statements written together
 * run in order, each its own transaction, with no round trip between):
 *   home     one per process, open while the engine is used. Tries
 *            (uncontended acquisitions, ifAvailable) and the grants they
 *            get, their releases, cancels of parked waits
 *            (pg_cancel_backend), query(), the exact waiter check; it
 *            LISTENs on the process's channel (knocks). Never parks.
 *   parking  up to maxConnections − 1, opened on demand (one ahead when
 *            home connects; a spare unused for 30 s is closed). Only a
 *            *free* one parks (holds nothing, waits for nothing), claimed
 *            synchronously by one acquisition: a session blocked in the
 *            lock manager cannot release what it holds. A grant won by
 *            parking stays on its connection until released (advisory
 *            locks cannot move between sessions).
 *   So a process holding any number of uncontended names uses home (and
 *   one spare); each *concurrent* contended wait takes a parking
 *   connection. At the bound (LATCHKEY_PG_CONNECTIONS, default 8 in all)
 *   a further wait polls: a try on home (knocking) every 2 ms doubling to
 *   50 ms, and it parks as soon as a parking connection is free. Polling
 *   is not FIFO against the parked waiters: it wins only when the lock is
 *   free and nobody is parked for it.
 *
 * Acquire (wait allowed):
 *   1. Name not hot: TRY_SQL on home (try, token, or a knock to the holders
 *      if taken). Granted: one round trip. Refused: the name is hot; 2.
 *   2. Hot name: CALL latchkey_acquire(wait) on a free parking connection:
 *      try, knock, COMMIT, park in pg_advisory_lock under lock_timeout =
 *      the time left, token. One round trip however long the wait. A grant
 *      that did not have to wait cools the name.
 *   3. At the bound: as above (polling).
 *   A timeout is the server's lock_timeout (55P03: kind 'timeout'); an
 *   abort is pg_cancel_backend of the parked session from home (57014),
 *   then an unlock of the key in case the grant came just before; a
 *   connection that does not answer its cancel within a second is closed.
 *
 * Release (exclusive): one statement, a release receipt then the unlock
 * (postgres-schema.ts "Release receipts"); the rows still naming released
 * grants are cleared, and the receipts dropped, in a lazy pass per session
 * (PASS_DELAY_MS after a release, or at PASS_MAX_RECEIPTS).
 *
 * Who learns what:
 *   - A knock (pg_notify from a waiter to the holder's channel) marks the
 *     grant wanted and fires events.wanted(key). A release sends nothing:
 *     it wakes at most the next waiter(s), inside the lock manager.
 *   - othersWaiting(key): knocked, or the grant came after a wait, or this
 *     process saw the name contended in the last second.
 *   - A connection that ends or errs loses every grant it held, at once:
 *     events.lost(). The server released them as the session ended.
 *   - A heartbeat (SELECT 1 every 2 s on home and on every connection
 *     holding grants) unanswered for 6 s closes that connection (home:
 *     every connection): a silent server is found in seconds. The
 *     server-side keepalive (~19 s) drops a vanished client's session only
 *     after that, so a holder cut off is told before the server can grant
 *     its lock to anybody else.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import {
  type AcquireOptions, type ClusterEngine, type ClusterEntry, type EngineErrorKind, type EngineEvents, type EngineGrant, EngineError,
  type LockMode,
} from './engine.js';
import {
  CALL_ACQUIRE_SQL, CLEAR_SHARED_SQL, CLEAR_SQL, DROP_RECEIPTS_SQL, GRANT_SLOW_SQL, MIN_SERVER_VERSION, PROC_SQL, QUERY_SQL, RELEASE_DEAD_SQL,
  RELEASE_REPLACING_SQL, RELEASE_SHARED_SQL, RELEASE_SQL, RELEASE_UNLOCK_SQL, SCHEMA_CHECK_SQL, SCHEMA_LOCK, SCHEMA_VERSION_SQL, SCHEMA_SQL, SCHEMA_VERSION, TRY_SQL,
  UNLOCK_SHARED_SQL, UNLOCK_SQL, keyOf, receiptOf,
} from './postgres-schema.js';
import { me } from '../identity.js';
import { loadDriver } from '../drivers.js';
import { debug } from '../../observe.js';

export { keyOf };

export interface PostgresEngineOptions {
  /**
   * Connections of this process, home included (≥ 2): home, and one per
   * wait in the server at once. At the bound a further wait polls (see the
   * top of this file). The agent takes it from LATCHKEY_PG_CONNECTIONS.
   * @default 8
   */
  readonly maxConnections?: number;
  /** A round trip on home and on each connection holding grants this often. @default 2000 */
  readonly heartbeatMs?: number;
  /** …which must answer within this, else the connection counts as lost (home: every connection). @default 6000 */
  readonly heartbeatTimeoutMs?: number;
  /** A free parking connection unused this long is closed (one stays open). @default 30000 */
  readonly idleCloseMs?: number;
}

export const kDefaultPostgresEngine = Object.freeze({
  maxConnections: 8,
  heartbeatMs: 2000,
  heartbeatTimeoutMs: 6000,
  idleCloseMs: 30_000,
});

/** Resend a cancel to a parked session this often while its wait has not ended (a cancel that lands between statements is dropped). */
const CANCEL_AGAIN_MS = 100;
/** How long a cancelled parked wait may take to end before its connection is closed. */
const CANCEL_GRACE_MS = 1000;
/** A parked wait whose server-side lock_timeout does not answer this long after the deadline: its connection is closed. */
const DEADLINE_GRACE_MS = 2000;
/** Polling at the connection bound: from this … */
const POLL_MIN_MS = 2;
/** … doubling to this. */
const POLL_MAX_MS = 50;
/** A grant made within this long of seeing another process want the name is taken as wanted (othersWaiting). */
const RECENT_CONTENTION_MS = 1000;
/** A session's receipts are dropped (after clearing the rows that still name its grants) this long after a release. */
const PASS_DELAY_MS = 10;
/** …or at once when a session holds this many (each is an entry in the server's shared lock table). */
const PASS_MAX_RECEIPTS = 64;
/** Names remembered as hot or recently contended, at most (names come and go). */
const NAMES_KEPT = 4096;
/** lock_timeout is an integer of ms; a longer wait is left to the requester's cancel. */
const LOCK_TIMEOUT_MAX_MS = 2_000_000_000;

/**
 * Session settings, sent in the startup packet (no round trip): no timeouts
 * of the role's that would end a wait or a session by surprise, READ
 * COMMITTED whatever the role's default, a parked backend that checks every
 * second that its client is still there (a waiter that died leaves the
 * queue; PostgreSQL ≥ 14), and server-side TCP keepalive that drops a
 * vanished client's session (and its locks) after ~19 s: later than the
 * client's own heartbeat gives up (6 s), so a holder cut off learns it lost
 * the lock before the server can grant it to anybody else.
 */
const SESSION_OPTIONS = [
  '-c lock_timeout=0', '-c statement_timeout=0', '-c idle_in_transaction_session_timeout=0',
  '-c default_transaction_isolation=read\\ committed', '-c client_connection_check_interval=1000',
  '-c tcp_keepalives_idle=10', '-c tcp_keepalives_interval=3', '-c tcp_keepalives_count=3',
].join(' ');

/** pg, loaded in the agent thread on first use: the package is an optional peer. */
const driver = () => loadDriver<typeof pg>('pg', 'postgres');

/** What kind of failure a pg (or socket) error is. */
export function kindOf(err: unknown): EngineErrorKind {
  if (err instanceof EngineError) return err.kind;
  const e = err as { code?: string; syscall?: string; message?: string } | undefined;
  if (typeof e?.code === 'string') {
    if (e.code === '55P03') return 'timeout'; // lock_timeout
    if (/^E[A-Z]+$/.test(e.code) || e.syscall !== undefined) return 'unreachable'; // ECONNREFUSED, ENOTFOUND …
    if (e.code.startsWith('28')) return 'refused'; // invalid authorization
    if (e.code === '3D000') return 'config'; // the database does not exist
    if (e.code === '42704' && /client_connection_check_interval/.test(e.message ?? '')) return 'version'; // PostgreSQL < 14
    if (e.code === '42501' || e.code === '3F000') return 'rights';
    if (e.code.startsWith('08') || e.code === '57P01' || e.code === '57P02' || e.code === '57P03') return 'unreachable';
  }
  if (/terminat|Connection|ECONN|timeout|not queryable/i.test(e?.message ?? '')) return 'unreachable';
  return 'query';
}

function engineError(err: unknown, what: string): EngineError {
  if (err instanceof EngineError) return err;
  return new EngineError(kindOf(err), `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

interface Grant {
  readonly conn: Conn;
  readonly mode: LockMode;
  readonly token: number;
  /** Came after a wait in the server: others likely queue behind. */
  readonly waited: boolean;
  /** Another process knocked since. */
  knocked: boolean;
}

interface AcquireRow { granted: boolean; token: string | null; abandoned: boolean | null; waited: boolean }

/** One session. */
class Conn {
  readonly client: pg.Client;
  readonly role: 'home' | 'park';
  readonly ready: Promise<void>;
  /** Keys whose grant this session holds (a release sent removes it at once). */
  readonly held = new Set<string>();
  /** The key this session waits for in the server, or is claimed for. */
  parked: string | null = null;
  dead = false;
  beating = false;
  lastUsed = performance.now();
  /** A random id of this session, written in the rows of its grants (0 means: cleared). */
  readonly life = randomBytes(4).readInt32BE(0) || 1;
  /** Receipts this session holds, one per key at most: the grants it released cleanly, their rows not yet cleared. */
  readonly receipts = new Map<string, { token: number; receipt: number }>();
  /** Its receipts' pass is due, but it was busy: run it when it is free. */
  passDue = false;
  /** A cancel sent to this session and not yet known to be over: its next statement may be the one cancelled. */
  cancelled: Promise<unknown> | undefined;

  constructor(url: string, channel: string, role: 'home' | 'park', onLost: (c: Conn, err: Error) => void) {
    this.role = role;
    this.client = new (driver().Client)({
      connectionString: url, application_name: `latchkey ${channel}`, options: SESSION_OPTIONS,
      connectionTimeoutMillis: 3000, keepAlive: true, keepAliveInitialDelayMillis: 5000, pipeline: true,
    });
    this.client.on('error', (err) => onLost(this, err));
    this.client.on('end', () => onLost(this, new Error('Connection lost: the connection to the server ended')));
    this.ready = this.client.connect().then(() => {});
    this.ready.catch(() => {});
  }

  /** The server process of this session (from BackendKeyData: no round trip). */
  get pid(): number {
    return (this.client as unknown as { processID: number }).processID;
  }

  get free(): boolean {
    return !this.dead && this.role === 'park' && this.parked === null && this.held.size === 0;
  }

  query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    this.lastUsed = performance.now();
    return this.client.query<R>(text, values);
  }

  /** A named prepared statement: parsed and planned once per session (an unnamed one is, every time: +0.9× of the floor). */
  run<R extends pg.QueryResultRow>(name: string, text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    this.lastUsed = performance.now();
    return this.client.query<R>({ name, text, values });
  }

  /** Drop the socket now (a silent server, an abandoned wait): the server ends the session when it sees it. */
  destroy(): void {
    (this.client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  }
}

/**
 * The PostgreSQL engine: `url` is LATCHKEY_PG_URL (checked by the
 * requesting thread already: cluster.ts clusterUrl()).
 */
export class PostgresEngine implements ClusterEngine {
  readonly kind = 'postgres';
  readonly abandonedGraceMs = 100; // engine.ts: the server wakes the next waiter before the ended session's socket closes
  /** This process's knock channel: identifier-safe, unique across processes and machines. */
  readonly channel = `lk_${randomBytes(8).toString('hex')}`;
  readonly #url: string;
  readonly #events: EngineEvents;
  readonly #max: number;
  readonly #owner = me();
  readonly #heartbeatTimeoutMs: number;
  readonly #idleCloseMs: number;
  /** Shared grants released: their rows deleted lazily, in one statement on home. */
  #sharedClears: Array<{ key: string; token: number }> = [];
  #passTimer: NodeJS.Timeout | undefined;
  #home: Promise<Conn> | undefined;
  #homeConn: Conn | undefined;
  readonly #parking: Conn[] = [];
  readonly #grants = new Map<string, Grant>();
  /** Keys whose last acquisition in this process found them taken: park at once next time. */
  readonly #hot = new Set<string>();
  /** When this process last saw another one want each key (refused, waited, knocked): performance.now() ms. */
  readonly #contendedAt = new Map<string, number>();
  /** Acquisitions in flight, and whether a knock came for the key meanwhile. */
  readonly #acquiring = new Map<string, { knocked: boolean }>();
  /** Pollers (at the connection bound) waiting for a free parking connection. */
  readonly #connWaiters = new Set<() => void>();
  readonly #timer: NodeJS.Timeout;
  #closed = false;
  /** What each path cost (tests and the bench read them through the agent's debug). */
  readonly stats = { tries: 0, parks: 0, slow: 0, polls: 0, knocksIn: 0, lost: 0, cancels: 0, connects: 0, passes: 0 };

  constructor(url: string, events: EngineEvents, options: PostgresEngineOptions = {}) {
    const max = options.maxConnections ?? kDefaultPostgresEngine.maxConnections;
    if (!Number.isInteger(max) || max < 2) throw new EngineError('config', `Cannot use maxConnections: it must be an integer ≥ 2, not ${max}`);
    this.#url = url;
    this.#events = events;
    this.#max = max;
    this.#heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? kDefaultPostgresEngine.heartbeatTimeoutMs;
    this.#idleCloseMs = options.idleCloseMs ?? kDefaultPostgresEngine.idleCloseMs;
    this.#timer = setInterval(() => this.#tick(), options.heartbeatMs ?? kDefaultPostgresEngine.heartbeatMs);
    this.#timer.unref(); // the agent keeps the process's locks, not the process alive
  }

  kindOf(err: unknown): EngineErrorKind {
    return kindOf(err);
  }

  /** Connections open now (home included). */
  get connections(): number {
    return this.#conns().length;
  }

  // --- connections -----------------------------------------------------------

  #lost = (c: Conn, err: Error): void => {
    if (c.dead) return;
    c.dead = true;
    this.stats.lost++;
    debug('cluster connection %d (%s) lost: %s', c.pid, c.role, err.message);
    if (c.role === 'home') {
      this.#home = undefined;
      this.#homeConn = undefined;
    } else {
      const i = this.#parking.indexOf(c);
      if (i >= 0) this.#parking.splice(i, 1);
    }
    for (const key of c.held) {
      const g = this.#grants.get(key);
      if (g === undefined || g.conn !== c) continue;
      this.#grants.delete(key);
      this.#events.lost(key, g.token, 'owner-changed', `the PostgreSQL session that held it ended: ${err.message}`);
    }
    c.held.clear();
    c.receipts.clear();
    c.client.end().catch(() => {});
    this.#wakeConnWaiters();
  };

  #ensureHome(): Promise<Conn> {
    if (this.#closed) return Promise.reject(new EngineError('unreachable', 'Cannot use the PostgreSQL engine: the process is exiting'));
    if (this.#home !== undefined) return this.#home;
    const c = new Conn(this.#url, this.channel, 'home', this.#lost);
    this.stats.connects++;
    c.client.on('notification', (n) => this.#knocked(n.channel, n.payload ?? ''));
    const home: Promise<Conn> = (async () => {
      try {
        await c.ready;
        await this.#ensureSchema(c);
        // Pipelined: listen, and say who this channel is (forgetting processes that are gone).
        const listen = c.query(`LISTEN ${c.client.escapeIdentifier(this.channel)}`);
        listen.catch(() => {});
        await c.run('lk_proc', PROC_SQL, [this.channel, this.#owner.id, this.#owner.pid, this.#owner.host]);
        await listen;
        this.#homeConn = c;
        // One parking connection ahead, so that the first wait does not pay a connect.
        if (this.#parking.length === 0) this.#openParking(null).catch(() => {});
        return c;
      } catch (err) {
        if (this.#homeConn === undefined) this.#home = undefined;
        c.dead = true;
        c.client.end().catch(() => {});
        throw engineError(err, `Cannot connect to PostgreSQL at ${this.#where()}`);
      }
    })();
    this.#home = home;
    return home;
  }

  #where(): string {
    try {
      const u = new URL(this.#url);
      return `${u.hostname}:${u.port || 5432}`;
    } catch {
      return 'the server';
    }
  }

  async #ensureSchema(c: Conn): Promise<void> {
    const r = await c.query<{ present: boolean; server: number }>(SCHEMA_CHECK_SQL);
    const { present, server } = r.rows[0]!;
    if (server < MIN_SERVER_VERSION) {
      throw new EngineError('version', `Cannot use PostgreSQL at ${this.#where()}: latchkey needs version 14 or later, the server is ${Math.floor(server / 10000)}`);
    }
    // Present and current: nothing to create (a role without CREATE rights can use a schema an admin made).
    if (present && (await c.query<{ v: number }>(SCHEMA_VERSION_SQL)).rows[0]!.v === SCHEMA_VERSION) return;
    // Simple protocol (several statements), in one transaction under an advisory transaction lock:
    // processes that start together do not race.
    await c.query(`BEGIN; SELECT pg_advisory_xact_lock(${SCHEMA_LOCK}); ${SCHEMA_SQL}; COMMIT;`).catch(async (err: unknown) => {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    });
  }

  /** Open a parking connection if the bound allows; claimed for `claim` (parked = claim) before any await. */
  async #openParking(claim: string | null): Promise<Conn | null> {
    if (this.#closed || this.#parking.length + 1 >= this.#max) return null;
    const c = new Conn(this.#url, this.channel, 'park', this.#lost);
    c.parked = claim;
    this.stats.connects++;
    this.#parking.push(c);
    try {
      await c.ready;
      return c.dead ? null : c;
    } catch (err) {
      this.#lost(c, err as Error);
      throw engineError(err, `Cannot connect to PostgreSQL at ${this.#where()}`);
    } finally {
      if (claim === null) this.#wakeConnWaiters();
    }
  }

  /**
   * A free parking connection, claimed for `key` at once (parked = key, so
   * that no other acquisition picks it across an await: a bug the bound's
   * test found), one opened if the bound allows, or null at the bound.
   */
  async #claimParking(key: string): Promise<Conn | null> {
    const c = this.#parking.find((p) => p.free);
    if (c === undefined) return this.#openParking(key);
    c.parked = key;
    try {
      await c.ready;
    } catch {
      return null;
    }
    return c.dead ? null : c;
  }

  #wakeConnWaiters(): void {
    for (const w of this.#connWaiters) w();
  }

  #knocked(channel: string, key: string): void {
    if (channel !== this.channel) return;
    this.stats.knocksIn++;
    this.#contended(key);
    const g = this.#grants.get(key);
    if (g !== undefined) {
      if (g.knocked) return;
      g.knocked = true;
      this.#events.wanted(key);
      return;
    }
    // The grant's answer may still be on its way on another connection: keep the knock for it.
    const a = this.#acquiring.get(key);
    if (a !== undefined) a.knocked = true;
  }

  #contended(key: string): void {
    if (this.#contendedAt.size >= NAMES_KEPT) this.#contendedAt.clear();
    this.#contendedAt.set(key, performance.now());
  }

  // --- acquire / release -------------------------------------------------------

  async acquire(key: string, opts: AcquireOptions): Promise<EngineGrant | null> {
    if (opts.steal) throw new EngineError('unsupported', `Cannot steal ${JSON.stringify(key)}: PostgreSQL cannot take another session's advisory lock`);
    if (this.#acquiring.has(key) || this.#grants.has(key)) {
      throw new EngineError('query', `Cannot acquire ${JSON.stringify(key)}: the engine already holds or acquires it (the agent asks once per name)`);
    }
    opts.signal.throwIfAborted();
    const entry = { knocked: false };
    this.#acquiring.set(key, entry);
    try {
      const got = await this.#acquire(key, opts);
      if (got === null) return null;
      const { grant: g } = got;
      if (entry.knocked && !g.knocked) {
        // Knocked while the answer was on its way: wanted from the start (othersWaiting says so).
        g.knocked = true;
      }
      return { token: g.token, abandoned: got.abandoned };
    } finally {
      this.#acquiring.delete(key);
    }
  }

  async #acquire(key: string, opts: AcquireOptions): Promise<{ grant: Grant; abandoned: boolean } | null> {
    const lockKey = keyOf(key), shared = opts.mode === 'shared';
    const home = await this.#ensureHome();
    if (opts.once || !this.#hot.has(key)) {
      // A try on home: one round trip, granted or not. A refusal that will wait knocks the holders.
      const r = await this.#call(home, key, lockKey, shared, false, !opts.once, 0);
      if (r.granted) {
        this.#hot.delete(key);
        return this.#record(key, home, opts.mode, r);
      }
      if (opts.once) return null;
      if (this.#hot.size >= NAMES_KEPT) this.#hot.clear();
      this.#hot.add(key);
      this.#contended(key);
    }
    let backoff = POLL_MIN_MS;
    for (;;) {
      this.#check(key, opts);
      const c = await this.#claimParking(key).catch(() => null);
      if (c !== null) return this.#park(c, key, lockKey, opts);
      // At the bound: a try on home (knocking), then wait for a free connection or the next try.
      this.stats.polls++;
      const h = await this.#ensureHome();
      const r = await this.#call(h, key, lockKey, shared, false, true, 0);
      if (r.granted) return this.#record(key, h, opts.mode, r);
      await this.#waitForConnection(Math.min(backoff, Math.max(0, opts.deadline - performance.now())), opts.signal);
      backoff = Math.min(POLL_MAX_MS, backoff * 2);
    }
  }

  /** Throws if the request timed out or was aborted. */
  #check(key: string, opts: AcquireOptions): void {
    opts.signal.throwIfAborted();
    if (performance.now() >= opts.deadline) throw new EngineError('timeout', `Cannot acquire ${JSON.stringify(key)}: timed out`);
  }

  #waitForConnection(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.#connWaiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.#connWaiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * One attempt on `c`: a try, or (wait) a park. Exclusive tries are one
   * plain statement (TRY_SQL); parks and shared requests are the
   * procedure. A grant with no token yet (the name's first grant, after a
   * crash, reservation used up) takes a second round trip,
   * latchkey_grant_slow().
   */
  async #call(c: Conn, key: string, lockKey: string, shared: boolean, wait: boolean, knock: boolean, timeoutMs: number): Promise<AcquireRow> {
    if (wait) this.stats.parks++;
    else this.stats.tries++;
    try {
      const row = shared || wait
        ? (await c.run<AcquireRow>('lk_acquire', CALL_ACQUIRE_SQL, [key, lockKey, shared, wait, knock, timeoutMs, this.channel, c.life])).rows[0]!
        : (await c.run<AcquireRow>('lk_try', TRY_SQL, [key, lockKey, this.channel, c.life, knock])).rows[0]!;
      if (row.granted && row.token === null) {
        this.stats.slow++;
        const r = await c.run<{ token: string; abandoned: boolean }>('lk_slow', GRANT_SLOW_SQL, [key, lockKey, false, this.channel, c.life, row.waited]);
        row.token = r.rows[0]!.token;
        row.abandoned = r.rows[0]!.abandoned;
      }
      return row;
    } catch (err) {
      // A statement that failed after it took the lock (a deadlock abort of the row update, say) leaves the
      // session holding it: session advisory locks outlive the rollback. Let go of the key (a WARNING if it was
      // not held). Not after a timeout (nothing was granted), a cancel (#park does it, once every cancel sent
      // is over), or a connection gone (it holds nothing any more).
      const code = (err as { code?: string }).code, kind = kindOf(err);
      if (!c.dead && code !== '57014' && kind !== 'timeout' && kind !== 'unreachable') {
        c.run('lk_unlock', shared ? UNLOCK_SHARED_SQL : UNLOCK_SQL, [lockKey]).catch(() => c.destroy());
      }
      throw err;
    }
  }

  #record(key: string, c: Conn, mode: LockMode, r: AcquireRow): { grant: Grant; abandoned: boolean } {
    if (c.dead) {
      // The session ended as the answer came: the grant went with it.
      throw new EngineError('unreachable', `Cannot acquire ${JSON.stringify(key)}: the PostgreSQL session ended as it granted the lock`);
    }
    const g: Grant = { conn: c, mode, token: Number(r.token), waited: r.waited, knocked: false };
    c.held.add(key);
    this.#grants.set(key, g);
    if (r.waited) this.#contended(key);
    return { grant: g, abandoned: r.abandoned === true };
  }

  /** Park on `c` (claimed) until granted, the deadline (lock_timeout in the server) or an abort (pg_cancel_backend). */
  async #park(c: Conn, key: string, lockKey: string, opts: AcquireOptions): Promise<{ grant: Grant; abandoned: boolean }> {
    const shared = opts.mode === 'shared', signal = opts.signal;
    if (c.cancelled !== undefined) {
      // A cancel sent for this session's last wait may still be on its way: it must not land on this one.
      await c.cancelled;
      c.cancelled = undefined;
    }
    const left = opts.deadline - performance.now();
    const bounded = left < LOCK_TIMEOUT_MAX_MS;
    const timeoutMs = bounded ? Math.max(1, Math.ceil(left)) : 0;
    c.parked = key;
    let cancelTimer: NodeJS.Timeout | undefined, againTimer: NodeJS.Timeout | undefined;
    let waiting = true;
    const cancel = () => {
      const home = this.#homeConn;
      if (!waiting || home === undefined || home.dead) return;
      c.cancelled = home.query('SELECT pg_cancel_backend($1)', [c.pid]).catch(() => {});
      againTimer = setTimeout(cancel, CANCEL_AGAIN_MS);
    };
    const onAbort = () => {
      this.stats.cancels++;
      // The wait ends in the server (57014); a cancel that lands between statements is dropped: send it
      // again until the wait is over, and if nobody answers, the session goes.
      cancel();
      cancelTimer = setTimeout(() => c.destroy(), CANCEL_GRACE_MS);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    // lock_timeout ends the wait in the server; a server that does not answer at all loses the connection.
    const guard = bounded ? setTimeout(() => c.destroy(), left + DEADLINE_GRACE_MS) : undefined;
    try {
      let r: AcquireRow;
      try {
        r = await this.#call(c, key, lockKey, shared, true, true, timeoutMs);
      } catch (err) {
        waiting = false;
        const kind = kindOf(err);
        if (kind === 'timeout') throw new EngineError('timeout', `Cannot acquire ${JSON.stringify(key)}: timed out`);
        if ((err as { code?: string }).code === '57014') {
          // Cancelled: in the wait (nothing held) or just after the grant (held, its transaction rolled
          // back). Let go of the key if held (a WARNING if not; never unlock_all: it drops receipts), once
          // every cancel sent is over (a second one could land on the unlock instead).
          await c.cancelled;
          c.cancelled = undefined;
          await c.run('lk_unlock', shared ? UNLOCK_SHARED_SQL : UNLOCK_SQL, [lockKey]).catch(() => c.destroy());
          throw signal.aborted ? signal.reason : engineError(err, `Cannot acquire ${JSON.stringify(key)}`);
        }
        throw engineError(err, `Cannot acquire ${JSON.stringify(key)}`);
      }
      waiting = false;
      c.parked = null;
      const got = this.#record(key, c, opts.mode, r);
      if (!r.waited) this.#hot.delete(key);
      if (signal.aborted) {
        // Granted as the abort came: give it back (after the cancel, which could hit the release instead).
        await this.release(key, got.grant.token, false);
        throw signal.reason;
      }
      return got;
    } finally {
      waiting = false;
      c.parked = null;
      clearTimeout(guard);
      clearTimeout(cancelTimer);
      clearTimeout(againTimer);
      signal.removeEventListener('abort', onAbort);
      if (c.free) {
        if (c.passDue) this.#schedulePass();
        this.#wakeConnWaiters();
      }
    }
  }

  release(key: string, token: number, abandoned: boolean): Promise<void> {
    const g = this.#grants.get(key);
    if (g === undefined || g.token !== token) return Promise.resolve(); // lost already (its session ended), or not ours
    this.#grants.delete(key);
    g.conn.held.delete(key);
    // Sent now, before this returns: the next statement for the key (on any connection) comes after it.
    return this.#sendRelease(g, key, abandoned);
  }

  async #sendRelease(g: Grant, key: string, abandoned: boolean): Promise<void> {
    const c = g.conn, lockKey = keyOf(key);
    if (c.cancelled !== undefined) {
      // A cancel was sent to this session: it must be over before anything else runs there.
      await c.cancelled;
      c.cancelled = undefined;
    }
    const send = (): Promise<boolean | undefined> => {
      if (g.mode === 'shared') {
        // No receipt: a shared holder's death is not reported. Its row goes lazily.
        this.#sharedClears.push({ key, token: g.token });
        this.#schedulePass();
        return c.run<{ ok: boolean }>('lk_unlock_shared', RELEASE_SHARED_SQL, [lockKey]).then((r) => r.rows[0]?.ok);
      }
      if (abandoned) {
        // The row first (committed: the next holder reads it after the unlock), then the unlock: written together.
        const dead = c.run('lk_release_dead', RELEASE_DEAD_SQL, [key, g.token]);
        dead.catch(() => {});
        return c.run<{ ok: boolean }>('lk_unlock', RELEASE_UNLOCK_SQL, [lockKey]).then(async (r) => {
          await dead;
          return r.rows[0]?.ok;
        });
      }
      // The hand-over is the unlock; the receipt taken in the same statement (before it) says it was clean.
      // This session's previous receipt of the key (if any) is obsolete now (the row names this grant): dropped here.
      const receipt = receiptOf(lockKey, g.token), old = c.receipts.get(key);
      c.receipts.set(key, { token: g.token, receipt });
      this.#schedulePass();
      return (old === undefined
        ? c.run<{ ok: boolean }>('lk_release', RELEASE_SQL, [lockKey, receipt])
        : c.run<{ ok: boolean }>('lk_release2', RELEASE_REPLACING_SQL, [lockKey, receipt, old.receipt])).then((r) => r.rows[0]?.ok);
    };
    try {
      let ok: boolean | undefined;
      try {
        ok = await send();
      } catch (err) {
        // A late cancel hit the release instead of the wait: once more (the session is idle now).
        if ((err as { code?: string }).code !== '57014') throw err;
        ok = await send();
      }
      if (ok !== true) debug('cluster release of %s: the session did not hold it', key);
    } catch (err) {
      // The session is gone or going (the server lets go of its locks with it), or it could not let go: end it.
      debug('cluster release of %s failed: %s', key, (err as Error).message);
      if (!c.dead) c.destroy();
    }
    if (c.free) {
      if (c.passDue) this.#schedulePass();
      this.#wakeConnWaiters();
    }
  }

  #schedulePass(): void {
    this.#passTimer ??= setTimeout(() => void this.#passAll(), PASS_DELAY_MS);
    for (const c of this.#conns()) if (c.receipts.size >= PASS_MAX_RECEIPTS && (c.role === 'home' || c.free)) void this.#pass(c);
  }

  async #passAll(): Promise<void> {
    clearTimeout(this.#passTimer);
    this.#passTimer = undefined;
    const passes: Promise<void>[] = [];
    for (const c of this.#conns()) {
      if (c.receipts.size === 0) continue;
      // On home, or a parking connection that is free. Not one that is parked (its statements would wait
      // behind the wait) nor one that holds a grant (they would sit in front of its release, on the
      // hand-over's path): later, when it is free. Under steady contention that is never, and it keeps
      // one receipt per key (each release drops the one before).
      if (c.role === 'home' || c.free) passes.push(this.#pass(c));
      else c.passDue = true;
    }
    const shared = this.#sharedClears;
    this.#sharedClears = [];
    const home = this.#homeConn;
    if (shared.length > 0 && home !== undefined && !home.dead) {
      passes.push(home.run('lk_clear_shared', CLEAR_SHARED_SQL, [shared.map((x) => x.key), shared.map((x) => x.token)]).then(() => {}, () => {}));
    }
    await Promise.all(passes);
  }

  /**
   * The lazy part of `c`'s releases: the rows that still name its released
   * grants are cleared (a next grant that reads them finds no holder), and
   * only then, the next statement, their receipts dropped. A row a next
   * grant has rewritten meanwhile is left alone (its token moved on): that
   * grant read the receipt already.
   */
  async #pass(c: Conn): Promise<void> {
    if (c.dead || c.receipts.size === 0) return;
    c.passDue = false;
    this.stats.passes++;
    const batch = [...c.receipts];
    c.receipts.clear();
    const pc = c.run('lk_clear', CLEAR_SQL, [batch.map(([k]) => k), batch.map(([, r]) => r.token)]);
    const pd = c.run('lk_drop_receipts', DROP_RECEIPTS_SQL, [batch.map(([, r]) => r.receipt)]);
    await Promise.all([pc, pd]).catch((err: Error) => debug('cluster: a receipts pass failed: %s', err.message));
  }

  #conns(): Conn[] {
    return [...(this.#homeConn !== undefined ? [this.#homeConn] : []), ...this.#parking];
  }

  othersWaiting(key: string): boolean {
    const g = this.#grants.get(key);
    if (g === undefined) return false;
    if (g.knocked || g.waited) return true;
    // Others wanted it a moment ago: take them to want it still (a knock may be on its way). Without this rule
    // a process that got the name in a lull kept passing it among its threads before the knock landed (the
    // prototype's smallest share fell to 5–9 %; with it, 22–29 %).
    const at = this.#contendedAt.get(key);
    return at !== undefined && performance.now() - at < RECENT_CONTENTION_MS;
  }

  async othersWaitingExact(key: string): Promise<boolean> {
    const home = await this.#ensureHome();
    const r = await home.run<{ w: boolean }>('lk_waiting', 'SELECT latchkey_waiting($1) AS w', [keyOf(key)]).catch((err: unknown) => {
      throw engineError(err, 'Cannot ask who waits');
    });
    return r.rows[0]!.w;
  }

  async query(): Promise<ClusterEntry[]> {
    const home = await this.#ensureHome();
    const r = await home.query<{ name: string; mode: LockMode; state: 'held' | 'pending'; owner: string; pid: number; host: string; token: string; since: string }>(QUERY_SQL)
      .catch((err: unknown) => {
        throw engineError(err, 'Cannot query the cluster locks');
      });
    return r.rows.map((x) => ({ ...x, token: Number(x.token), since: Number(x.since) }));
  }

  // --- heartbeat and idle connections --------------------------------------------

  #tick(): void {
    const now = performance.now();
    for (const [key, at] of this.#contendedAt) if (now - at > RECENT_CONTENTION_MS) this.#contendedAt.delete(key);
    for (const c of this.#conns()) {
      if (c.dead || c.parked !== null || c.beating) continue;
      if (c.role === 'park' && c.held.size === 0) {
        // Idle: close the spares (one stays open for the next wait).
        if (now - c.lastUsed > this.#idleCloseMs && this.#parking.filter((p) => p.free).length > 1 && c.receipts.size === 0) {
          const i = this.#parking.indexOf(c);
          if (i >= 0) this.#parking.splice(i, 1);
          c.dead = true;
          c.client.end().catch(() => {});
        }
        continue;
      }
      // Home, or a session holding grants: must answer within heartbeatTimeoutMs.
      c.beating = true;
      const t = setTimeout(() => {
        debug('cluster connection %d: no answer to the heartbeat in %d ms', c.pid, this.#heartbeatTimeoutMs);
        const err = new Error(`Connection lost: the server did not answer for ${this.#heartbeatTimeoutMs} ms`);
        // Home silent: the server is, for this process. Every session goes, parked ones too (their waits
        // end with 'unreachable' instead of hanging on a server that does not answer).
        for (const x of c.role === 'home' ? this.#conns() : [c]) {
          this.#lost(x, err);
          x.destroy();
        }
      }, this.#heartbeatTimeoutMs);
      c.client.query('SELECT 1').catch(() => {}).finally(() => {
        clearTimeout(t);
        c.beating = false;
      });
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#passTimer);
    const conns = this.#conns();
    // Rows still naming released grants are cleared before the sessions end (from home: a parked session
    // cannot run it): else the next holder would read a holder that died. Grants still held are not.
    const clears = conns.flatMap((c) => [...c.receipts]);
    const home = this.#homeConn;
    if (home !== undefined && !home.dead) {
      await Promise.all([
        clears.length === 0 ? undefined : home.run('lk_clear', CLEAR_SQL, [clears.map(([k]) => k), clears.map(([, r]) => r.token)]),
        this.#sharedClears.length === 0 ? undefined
          : home.run('lk_clear_shared', CLEAR_SHARED_SQL, [this.#sharedClears.map((x) => x.key), this.#sharedClears.map((x) => x.token)]),
      ]).catch((err: Error) => debug('cluster: the last receipts pass failed: %s', err.message));
    }
    for (const c of conns) c.dead = true;
    await Promise.all(conns.map((c) => c.client.end().catch(() => {})));
  }
}
