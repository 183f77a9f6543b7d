/**
 * The cluster tier's PostgreSQL engine (engine.ts): the schema, the session
 * that holds a process's cluster locks, and the engine the cluster agent
 * drives (agent.ts; no other thread talks to the server).
 *
 * Exclusion comes from PostgreSQL itself: a session-level advisory lock on
 * a 64-bit key derived from the name (SHA-256, first 8 bytes). The session
 * holds it until it releases it or ends: a process that dies, or whose
 * connection drops, loses its locks at once, and the server never reports
 * one held that is not. The full name is recorded beside the key in
 * latchkey_leases, so two names whose keys collide are told apart (they
 * exclude each other, never share: a collision costs contention, and is
 * reported).
 *
 * Tables (created on first use, under an advisory transaction lock so that
 * processes starting together do not race):
 *   latchkey_tokens   name → last fencing token (bigint), and ABANDONED: the
 *                     last exclusive holder gave it back dead. Updated in the
 *                     same transaction as the grant: strictly increasing
 *                     across holders, crashes and server restarts.
 *   latchkey_leases   one row per (name, holding process): mode, owner, pid,
 *                     host, the backend pid of its session, token, since. A
 *                     row whose session is gone is a holder that died.
 *   latchkey_waiters  one row per (name, waiting process), for query() and
 *                     for the cohort's "does anybody else wait" check.
 * Functions latchkey_try() and latchkey_release() make an attempt and a
 * release one round trip each.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { AcquireOptions, ClusterEngine, ClusterEntry, EngineEvents, EngineGrant, LockMode } from './engine.js';
import { me } from '../identity.js';
import { loadDriver } from '../drivers.js';
import { debug, hostEvent } from '../../observe.js';

/** The 64-bit advisory lock key of a name, as PostgreSQL's bigint text. */
export function keyOf(name: string): string {
  return createHash('sha256').update(name, 'utf8').digest().readBigInt64BE(0).toString();
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS latchkey_tokens (
  name text PRIMARY KEY, token bigint NOT NULL, abandoned boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS latchkey_leases (
  name text NOT NULL, key bigint NOT NULL, mode text NOT NULL, owner text NOT NULL, pid integer NOT NULL,
  host text NOT NULL, backend_pid integer NOT NULL, token bigint NOT NULL, since timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, owner));
CREATE TABLE IF NOT EXISTS latchkey_waiters (
  name text NOT NULL, owner text NOT NULL, mode text NOT NULL, pid integer NOT NULL, host text NOT NULL,
  backend_pid integer NOT NULL, since timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, owner));
CREATE OR REPLACE FUNCTION latchkey_try(p_name text, p_key bigint, p_shared boolean, p_owner text, p_pid integer,
    p_host text, p_wait boolean, OUT granted boolean, OUT token bigint, OUT died boolean, OUT holder text)
LANGUAGE plpgsql AS $$
DECLARE
  dead integer;
BEGIN
  died := false;
  IF p_shared THEN granted := pg_try_advisory_lock_shared(p_key); ELSE granted := pg_try_advisory_lock(p_key); END IF;
  IF NOT granted THEN
    -- Who is in the way: another name on the same key is a collision, and says so.
    SELECT l.name INTO holder FROM latchkey_leases l JOIN pg_stat_activity a ON a.pid = l.backend_pid
      WHERE l.key = p_key AND l.name <> p_name LIMIT 1;
    IF p_wait THEN
      INSERT INTO latchkey_waiters (name, owner, mode, pid, host, backend_pid)
        VALUES (p_name, p_owner, CASE WHEN p_shared THEN 'shared' ELSE 'exclusive' END, p_pid, p_host, pg_backend_pid())
        ON CONFLICT (name, owner) DO UPDATE SET backend_pid = excluded.backend_pid;
    END IF;
    RETURN;
  END IF;
  -- Holders whose session is gone died holding it (their server-side lock went with them).
  DELETE FROM latchkey_leases
    WHERE name = p_name AND mode = 'exclusive' AND backend_pid NOT IN (SELECT pid FROM pg_stat_activity);
  GET DIAGNOSTICS dead = ROW_COUNT;
  DELETE FROM latchkey_leases WHERE name = p_name AND backend_pid NOT IN (SELECT pid FROM pg_stat_activity);
  INSERT INTO latchkey_tokens AS t (name, token) VALUES (p_name, 1)
    ON CONFLICT (name) DO UPDATE SET token = t.token + 1 RETURNING t.token, t.abandoned INTO token, died;
  died := died OR dead > 0;
  IF NOT p_shared THEN UPDATE latchkey_tokens SET abandoned = false WHERE name = p_name; END IF;
  INSERT INTO latchkey_leases (name, key, mode, owner, pid, host, backend_pid, token)
    VALUES (p_name, p_key, CASE WHEN p_shared THEN 'shared' ELSE 'exclusive' END, p_owner, p_pid, p_host, pg_backend_pid(), token)
    ON CONFLICT (name, owner) DO UPDATE SET mode = excluded.mode, backend_pid = excluded.backend_pid,
      token = excluded.token, since = now();
  DELETE FROM latchkey_waiters WHERE name = p_name AND owner = p_owner;
  SELECT l.name INTO holder FROM latchkey_leases l WHERE l.key = p_key AND l.name <> p_name
    AND l.backend_pid IN (SELECT pid FROM pg_stat_activity) LIMIT 1;
END $$;
CREATE OR REPLACE FUNCTION latchkey_release(p_name text, p_key bigint, p_shared boolean, p_owner text, p_abandoned boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM latchkey_leases WHERE name = p_name AND owner = p_owner;
  IF p_abandoned AND NOT p_shared THEN UPDATE latchkey_tokens SET abandoned = true WHERE name = p_name; END IF;
  IF p_shared THEN PERFORM pg_advisory_unlock_shared(p_key); ELSE PERFORM pg_advisory_unlock(p_key); END IF;
  PERFORM pg_notify('latchkey', p_name);
END $$;
`;

/**
 * A server that takes the connection and never answers must not hold a
 * request up for ever: connecting gives up after 3 s, and dead peers are
 * found by TCP keepalive.
 */
/**
 * Every connection's: give up connecting after 3 s; TCP keepalive probes
 * from 5 s of silence (the OS default waits 2 hours), so a connection to a
 * server that vanished without a word is dropped in minutes. While locks
 * are held, Session.heartbeat() finds it in seconds.
 */
export const CLIENT_OPTIONS = { connectionTimeoutMillis: 3000, keepAlive: true, keepAliveInitialDelayMillis: 5000 } as const;

/** A fixed advisory key that serialises schema creation ('latchkey schema'). */
const SCHEMA_LOCK = '7591002331948106291';

export type ErrorKind = 'unreachable' | 'refused' | 'rights' | 'query';

/** What kind of failure a pg error is, for a message another thread can rebuild (cluster.ts). */
export function kindOf(err: unknown): ErrorKind {
  const e = err as { code?: string; errno?: number; syscall?: string };
  if (typeof e.code === 'string') {
    if (/^E[A-Z]+$/.test(e.code) || e.syscall !== undefined) return 'unreachable'; // ECONNREFUSED, ENOTFOUND …
    if (e.code.startsWith('28')) return 'refused'; // invalid authorization
    if (e.code === '42501' || e.code === '3D000' || e.code === '3F000' || e.code.startsWith('42')) return 'rights';
    if (e.code.startsWith('08') || e.code === '57P01' || e.code === '57P03') return 'unreachable';
  }
  if (/terminat|Connection|ECONN|timeout/i.test((err as Error)?.message ?? '')) return 'unreachable';
  return 'query';
}

export interface TryResult {
  granted: boolean;
  token: number;
  died: boolean;
  /** Another name on the same key (a collision), if any. */
  collision: string | null;
}

/** The connection that holds this process's cluster locks. */
export class Session {
  readonly client: pg.Client;
  readonly #owner = me();
  #ready: Promise<void>;
  lost = false;

  readonly #lose: (err: Error) => void;

  constructor(url: string, onLost: (err: Error) => void) {
    this.client = new (driver().Client)({ connectionString: url, application_name: 'latchkey', ...CLIENT_OPTIONS });
    const lose = (this.#lose = (err: Error) => {
      if (this.lost) return;
      this.lost = true;
      onLost(err);
    });
    this.client.on('error', lose);
    this.client.on('end', () => lose(new Error('the connection to the server ended')));
    this.#ready = this.client.connect().then(async () => {
      await this.client.query('BEGIN');
      await this.client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
      await this.client.query(SCHEMA);
      await this.client.query('COMMIT');
    });
    this.#ready.catch(() => {});
  }

  ready(): Promise<void> {
    return this.#ready;
  }

  /**
   * A round trip that must come back within `ms`. A server that vanished
   * without a word (a crash, a partition, a frozen backend) is seen here
   * in seconds, not when TCP gives up: the session counts as lost (its
   * holders are told) and the connection is closed, so the server lets go
   * of its locks as soon as it can.
   */
  async heartbeat(ms: number): Promise<void> {
    await this.#ready;
    let timer: NodeJS.Timeout | undefined;
    const silent = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Connection lost: the server did not answer for ${ms} ms`)), ms);
    });
    try {
      await Promise.race([this.client.query('SELECT 1'), silent]);
    } catch (err) {
      this.#lose(err as Error);
      this.client.end().catch(() => {});
    } finally {
      clearTimeout(timer);
    }
  }

  async attempt(name: string, mode: LockMode, wait: boolean): Promise<TryResult> {
    await this.#ready;
    const o = this.#owner;
    const r = await this.client.query<{ granted: boolean; token: string | null; died: boolean; holder: string | null }>(
      'SELECT * FROM latchkey_try($1, $2, $3, $4, $5, $6, $7)', [name, keyOf(name), mode === 'shared', o.id, o.pid, o.host, wait]);
    const row = r.rows[0]!;
    return { granted: row.granted, token: Number(row.token ?? 0), died: row.died, collision: row.holder };
  }

  async release(name: string, mode: LockMode, abandoned: boolean): Promise<void> {
    await this.#ready;
    await this.client.query('SELECT latchkey_release($1, $2, $3, $4, $5)', [name, keyOf(name), mode === 'shared', this.#owner.id, abandoned]);
  }

  async withdraw(name: string): Promise<void> {
    await this.#ready;
    await this.client.query('DELETE FROM latchkey_waiters WHERE name = $1 AND owner = $2', [name, this.#owner.id]);
  }

  async othersWaiting(name: string): Promise<boolean> {
    await this.#ready;
    const r = await this.client.query(
      `SELECT 1 FROM latchkey_waiters w JOIN pg_stat_activity a ON a.pid = w.backend_pid
        WHERE w.name = $1 AND w.owner <> $2 LIMIT 1`, [name, this.#owner.id]);
    return (r.rowCount ?? 0) > 0;
  }

  async query(): Promise<ClusterEntry[]> {
    await this.#ready;
    const r = await this.client.query<{ name: string; mode: LockMode; state: 'held' | 'pending'; owner: string; pid: number; host: string; token: string; since: number }>(
      `SELECT l.name, l.mode, 'held' AS state, l.owner, l.pid, l.host, l.token, extract(epoch FROM l.since) * 1000 AS since
         FROM latchkey_leases l JOIN pg_stat_activity a ON a.pid = l.backend_pid
       UNION ALL
       SELECT w.name, w.mode, 'pending', w.owner, w.pid, w.host, 0, extract(epoch FROM w.since) * 1000
         FROM latchkey_waiters w JOIN pg_stat_activity a ON a.pid = w.backend_pid
       ORDER BY since`);
    return r.rows.map((x) => ({ ...x, token: Number(x.token), since: Number(x.since) }));
  }

  close(): Promise<void> {
    this.lost = true;
    return this.client.end().catch(() => {});
  }
}

/** pg, loaded in the agent thread on first use: the package is an optional peer. */
const driver = () => loadDriver<typeof pg>('pg', 'postgres');

/** How often an acquisition nobody woke is tried again (a holder that died sends no NOTIFY). */
export const POLL_MS = 200;
/** While the session holds locks: a round trip every HEARTBEAT_MS, lost if silent for HEARTBEAT_TIMEOUT_MS (Session.heartbeat). */
const HEARTBEAT_MS = 2_000;
const HEARTBEAT_TIMEOUT_MS = 6_000;

/**
 * The PostgreSQL engine: every attempt and release on one session (its
 * advisory locks are the process's), and a second connection that LISTENs
 * for releases. An acquisition that cannot be granted now is tried again on
 * a NOTIFY from a release, and every POLL_MS (a holder that died ends its
 * session without a notify). If the session is lost (a server restart,
 * pg_terminate_backend, the network, or a heartbeat unanswered for 6 s while
 * it holds locks), every lock it held is lost with it.
 */
export class PostgresEngine implements ClusterEngine {
  readonly kind = 'postgres';
  readonly #url: string;
  readonly #events: EngineEvents;
  #session: Session | undefined;
  #listener: pg.Client | undefined;
  /** What the session holds: key → token. */
  readonly #held = new Map<string, number>();
  /** Acquisitions waiting for their next chance (a NOTIFY, the poll, their abort). */
  readonly #waiting = new Set<() => void>();
  #beating = false;

  constructor(url: string, events: EngineEvents) {
    this.#url = url;
    this.#events = events;
    setInterval(() => this.#heartbeat(), HEARTBEAT_MS).unref();
  }

  kindOf(err: unknown) {
    return kindOf(err);
  }

  async acquire(key: string, { mode, once, signal }: AcquireOptions): Promise<EngineGrant | null> {
    for (;;) {
      const s = this.#connect();
      const r = await s.attempt(key, mode, !once);
      if (r.collision !== null) hostEvent('collision', key, { with: r.collision, scope: 'cluster' });
      // The session ended while the answer came (both in one read): the grant went with it.
      if (r.granted && (s.lost || this.#session !== s)) throw new Error('Connection lost: the PostgreSQL session ended as it granted the lock');
      if (r.granted) {
        this.#held.set(key, r.token);
        return { token: r.token, abandoned: r.died };
      }
      if (once) return null;
      if (signal.aborted) {
        // Aborted while an attempt was on its way: that attempt left a waiter row.
        await s.withdraw(key).catch(() => {});
        throw signal.reason;
      }
      await this.#nextChance(signal);
    }
  }

  async release(key: string, mode: LockMode, abandoned: boolean): Promise<void> {
    this.#held.delete(key);
    await this.#session?.release(key, mode, abandoned);
  }

  othersWaiting(key: string): Promise<boolean> {
    return this.#connect().othersWaiting(key);
  }

  query(): Promise<ClusterEntry[]> {
    return this.#connect().query();
  }

  #connect(): Session {
    if (this.#session !== undefined && !this.#session.lost) return this.#session;
    const s = new Session(this.#url, (err) => this.#lost(s, err));
    this.#session = s;
    const l = new (driver().Client)({ connectionString: this.#url, application_name: 'latchkey listen', ...CLIENT_OPTIONS });
    this.#listener?.end().catch(() => {});
    this.#listener = l;
    l.on('error', () => {});
    l.on('notification', () => this.#wake());
    l.connect().then(() => l.query('LISTEN latchkey')).catch((err: Error) => debug('cluster LISTEN failed: %s', err.message));
    return s;
  }

  /** The holding session is gone, and every lock it held with it. */
  #lost(s: Session, err: Error): void {
    if (this.#session !== s) return;
    this.#session = undefined;
    debug('cluster session lost: %s', err.message);
    const held = [...this.#held];
    this.#held.clear();
    for (const [key, token] of held) this.#events.lost(key, token, 'owner-changed', `the PostgreSQL session that held it ended: ${err.message}`);
    this.#wake(); // waiters try again on a new session
  }

  /** Resolves on the next NOTIFY, after POLL_MS, or when `signal` aborts. */
  #nextChance(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, POLL_MS);
      signal.addEventListener('abort', done, { once: true });
      this.#waiting.add(done);
    });
  }

  #wake(): void {
    for (const done of [...this.#waiting]) done();
  }

  #heartbeat(): void {
    const s = this.#session;
    if (this.#beating || this.#held.size === 0 || s === undefined || s.lost) return;
    this.#beating = true;
    s.heartbeat(HEARTBEAT_TIMEOUT_MS).catch(() => {}).finally(() => (this.#beating = false)); // a session that never connected: lost already
  }
}
