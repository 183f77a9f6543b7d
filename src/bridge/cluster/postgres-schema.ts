/**
 * The PostgreSQL engine's SQL (postgres.ts runs it): tables, functions, the
 * procedure that parks a waiter, and the hot statements. Schema version 2
 * (issue 14); version 1 (latchkey_tokens, latchkey_leases,
 * latchkey_waiters, latchkey_try(), latchkey_release()) is left in place:
 * the names do not clash, and version 1's tokens seed version 2's (below).
 *
 * Exclusion is PostgreSQL's own: a session-level advisory lock on the
 * name's 64-bit key (keyOf). A waiter parks *inside* the lock manager
 * (pg_advisory_lock): FIFO, woken by the release itself, or at once when
 * the holding session ends. Everything below only says who holds what
 * (fencing tokens, abandoned, knocks, query()).
 *
 * Tables:
 *   latchkey_reserved  (durable) name → reserved: every token ever handed
 *                      out for the name is ≤ reserved. Raised RESERVE_BLOCK
 *                      at a time, in a transaction that commits
 *                      synchronously (waits for the WAL flush) before its
 *                      token leaves the server: one grant in RESERVE_BLOCK
 *                      pays a WAL flush.
 *   latchkey_live      (UNLOGGED: no WAL, emptied by a crash) name → key,
 *                      the last token handed out, a copy of reserved, and
 *                      the last exclusive grant's holder: life (a random id
 *                      of its session; 0 once the row is cleared), backend
 *                      pid, its process's channel (knocks), waited (it came
 *                      after a wait: its holder takes others to be waiting
 *                      and needs no knock), dead (given back by a holder
 *                      that died in its process), told (what the last grant
 *                      was told). A grant bumps token here: no WAL, so its
 *                      commit never waits for a flush. After a crash the row
 *                      is gone and is rebuilt from latchkey_reserved: tokens
 *                      go on above every token handed out before the crash.
 *   latchkey_sharers   (UNLOGGED) one row per shared holder: knocks, query().
 *   latchkey_procs     (UNLOGGED) channel → owner, pid, host (query()); each
 *                      connection's application_name is 'latchkey <channel>'.
 *
 * Release receipts (how `abandoned` is decided). A release is the unlock
 * alone (the hand-over costs what PostgreSQL's own does), plus, in the same
 * statement and before the unlock, a *receipt*: a shared advisory lock
 * (RECEIPT_CLASS, h(key, token)) that the releasing session keeps for a
 * while. The row still names the holder. The next grant reads the row: a
 * holder named there (life ≠ 0) whose receipt is held released cleanly;
 * with none, its session ended holding the lock (abandoned). A receipt is
 * taken on the clean path and never on the death path, so the answer does
 * not depend on the order in which a dying session's locks are freed (a
 * check of the holder's session instead was wrong 1 run in 2). Later
 * (lazily, batched) the rows still naming released grants are cleared and
 * only then, the next statement, their receipts dropped.
 *
 * Procedure latchkey_acquire(): any mode, one round trip per grant however
 * long the wait: try; if taken and the caller will wait, knock (pg_notify
 * to each holding process that does not yet know others wait), COMMIT (the
 * knock is delivered now, not when the wait ends: NOTIFY is transactional),
 * park in pg_advisory_lock under a server-side lock_timeout = the time
 * left; then the grant. TRY_SQL is the uncontended exclusive path as one
 * plain statement.
 *
 * Needs PostgreSQL 14 or later (the sessions set client_connection_check_interval,
 * query() reads pg_locks.waitstart); checked when a connection starts.
 */
import { createHash } from 'node:crypto';

export const SCHEMA_VERSION = 2;
/** Tokens reserved durably at a time: one grant in this many waits for a WAL flush; a crash skips at most this many. */
export const RESERVE_BLOCK = 1000;
/** A fixed advisory key that serialises schema creation ('latchkey schema'), as version 1 did. */
export const SCHEMA_LOCK = '7591002331948106291';
/** The first half of a release receipt's key (RECEIPT_CLASS, h): objsubid 2, apart from the names' bigint keys (objsubid 1). */
export const RECEIPT_CLASS = 1818978418;

/** Names' keys, computed once (a SHA-256 per call was 3 % of the client's CPU in a lock/unlock loop). */
const keys = new Map<string, string>();

/** The 64-bit advisory lock key of a name (its store key), as PostgreSQL's bigint text: SHA-256, first 8 bytes. */
export function keyOf(name: string): string {
  let k = keys.get(name);
  if (k === undefined) {
    k = createHash('sha256').update(name, 'utf8').digest().readBigInt64BE(0).toString();
    if (keys.size >= 4096) keys.clear();
    keys.set(name, k);
  }
  return k;
}

/** The receipt's second half for a grant: 31 bits of key xor token (latchkey_receipt() computes the same). */
export function receiptOf(key: string, token: number): number {
  return Number((BigInt(key) ^ BigInt(token)) & 0x7fffffffn);
}

/**
 * The server's version, and whether the schema is there (then
 * SCHEMA_VERSION_SQL says which: nothing is created when it is current, so
 * a role without CREATE can use a schema an admin made).
 */
export const SCHEMA_CHECK_SQL = `SELECT to_regproc('latchkey_schema') IS NOT NULL AS present, current_setting('server_version_num')::integer AS server`;
export const SCHEMA_VERSION_SQL = 'SELECT latchkey_schema() AS v';

/** The oldest server the engine runs on (client_connection_check_interval, pg_locks.waitstart, OUT parameters of procedures). */
export const MIN_SERVER_VERSION = 140000;

export const SCHEMA_SQL = `
CREATE TABLE IF NOT EXISTS latchkey_reserved (name text PRIMARY KEY, reserved bigint NOT NULL);
CREATE UNLOGGED TABLE IF NOT EXISTS latchkey_live (
  name text PRIMARY KEY,
  key bigint NOT NULL,
  token bigint NOT NULL,
  reserved bigint NOT NULL,
  holder integer NOT NULL DEFAULT 0,
  life integer NOT NULL DEFAULT 0,
  channel text,
  since timestamptz,
  waited boolean NOT NULL DEFAULT false,
  dead boolean NOT NULL DEFAULT false,
  shared boolean NOT NULL DEFAULT false,
  told boolean NOT NULL DEFAULT false,
  was_shared boolean NOT NULL DEFAULT false);
CREATE INDEX IF NOT EXISTS latchkey_live_key ON latchkey_live (key);
CREATE UNLOGGED TABLE IF NOT EXISTS latchkey_sharers (
  name text NOT NULL, backend integer NOT NULL, channel text NOT NULL, token bigint NOT NULL, since timestamptz NOT NULL,
  PRIMARY KEY (name, backend));
CREATE UNLOGGED TABLE IF NOT EXISTS latchkey_procs (
  channel text PRIMARY KEY, owner text NOT NULL, pid integer NOT NULL, host text NOT NULL, since timestamptz NOT NULL DEFAULT now());

-- Whether the grant (key, token) was released cleanly: its session holds the receipt. The check takes the
-- receipt's key exclusively for the rest of this transaction (a receipt held in shared mode refuses it).
CREATE OR REPLACE FUNCTION latchkey_receipt(p_key bigint, p_token bigint) RETURNS boolean LANGUAGE sql AS $$
  SELECT NOT pg_try_advisory_xact_lock(${RECEIPT_CLASS}, ((p_key # p_token) & 2147483647)::integer)
$$;

-- Whether the grant about to be made is told that the last holder died: it gave it back dead, or the row
-- still names it (never cleared) and it holds no receipt (its session ended holding the lock). A session
-- re-taking a name its own row names is not asked (its own receipt would not refuse it).
CREATE OR REPLACE FUNCTION latchkey_told(p_dead boolean, p_life integer, p_key bigint, p_token bigint, p_my_life integer)
RETURNS boolean LANGUAGE sql AS $$
  SELECT p_dead OR (p_life <> 0 AND p_life <> p_my_life AND NOT latchkey_receipt(p_key, p_token))
$$;

-- The general part of a grant (the caller's session holds the lock already): shared grants, the name's
-- first grant, a crash emptied latchkey_live, or the reservation is used up. Raises the reservation durably
-- (synchronous commit) before the token leaves the server.
CREATE OR REPLACE FUNCTION latchkey_grant_slow(p_name text, p_key bigint, p_shared boolean, p_channel text, p_life integer,
    p_waited boolean, OUT token bigint, OUT abandoned boolean) LANGUAGE plpgsql AS $$
DECLARE
  v_reserved bigint;
  v_found boolean;
  v_was_shared boolean;
BEGIN
  LOOP
    UPDATE latchkey_live l SET token = l.token + 1,
        told = latchkey_told(l.dead, l.life, l.key, l.token, p_life),
        dead = false, was_shared = l.shared, shared = p_shared,
        holder = CASE WHEN p_shared THEN 0 ELSE pg_backend_pid() END,
        life = CASE WHEN p_shared THEN 0 ELSE p_life END,
        channel = CASE WHEN p_shared THEN NULL ELSE p_channel END,
        waited = p_waited, since = now()
      WHERE l.name = p_name
      RETURNING l.token, l.told, l.reserved, l.was_shared INTO token, abandoned, v_reserved, v_was_shared;
    EXIT WHEN FOUND;
    -- No live row: rebuild it from the durable reservation. Found there means a crash emptied latchkey_live:
    -- nobody can say who held it then, so the next holder is told (dead).
    SELECT r.reserved INTO v_reserved FROM latchkey_reserved r WHERE r.name = p_name;
    v_found := FOUND;
    INSERT INTO latchkey_live (name, key, token, reserved, dead)
      VALUES (p_name, p_key, coalesce(v_reserved, 0), coalesce(v_reserved, 0), v_found)
      ON CONFLICT (name) DO NOTHING;
  END LOOP;
  IF token > v_reserved THEN
    INSERT INTO latchkey_reserved AS r (name, reserved) VALUES (p_name, token + ${RESERVE_BLOCK - 1})
      ON CONFLICT (name) DO UPDATE SET reserved = greatest(r.reserved, excluded.reserved)
      RETURNING r.reserved INTO v_reserved;
    UPDATE latchkey_live SET reserved = v_reserved WHERE name = p_name;
    PERFORM set_config('synchronous_commit', 'on', true); -- durable before the token leaves
  END IF;
  -- Otherwise only unlogged rows changed: the commit writes no WAL that must be flushed.
  IF p_shared THEN
    INSERT INTO latchkey_sharers AS s (name, backend, channel, token, since) VALUES (p_name, pg_backend_pid(), p_channel, token, now())
      ON CONFLICT (name, backend) DO UPDATE SET channel = excluded.channel, token = excluded.token, since = excluded.since;
  ELSIF v_was_shared THEN
    DELETE FROM latchkey_sharers WHERE name = p_name; -- shared holders gone without a word (none holds now)
  END IF;
END $$;

CREATE OR REPLACE PROCEDURE latchkey_acquire(
    p_name text, p_key bigint, p_shared boolean, p_wait boolean, p_knock boolean, p_timeout_ms integer, p_channel text,
    p_life integer, INOUT granted boolean DEFAULT NULL, INOUT token bigint DEFAULT NULL, INOUT abandoned boolean DEFAULT NULL,
    INOUT waited boolean DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
  c text;
  knocked boolean := false;
BEGIN
  waited := false;
  abandoned := false;
  token := 0;
  IF p_shared THEN granted := pg_try_advisory_lock_shared(p_key); ELSE granted := pg_try_advisory_lock(p_key); END IF;
  IF NOT granted THEN
    IF p_knock THEN
      FOR c IN SELECT l.channel FROM latchkey_live l WHERE l.name = p_name AND l.life <> 0 AND NOT l.waited AND l.channel <> p_channel
               UNION SELECT s.channel FROM latchkey_sharers s WHERE s.name = p_name AND s.channel <> p_channel LOOP
        PERFORM pg_notify(c, p_name);
        knocked := true;
      END LOOP;
    END IF;
    IF NOT p_wait THEN RETURN; END IF;
    -- The knock is delivered at this commit, not when the wait ends.
    IF knocked THEN COMMIT; END IF;
    PERFORM set_config('lock_timeout', CASE WHEN p_timeout_ms > 0 THEN p_timeout_ms || 'ms' ELSE '0' END, true);
    IF p_shared THEN PERFORM pg_advisory_lock_shared(p_key); ELSE PERFORM pg_advisory_lock(p_key); END IF;
    -- Granted: nothing after this may time out.
    PERFORM set_config('lock_timeout', '0', true);
    granted := true;
    waited := true;
  END IF;
  IF NOT p_shared THEN
    -- The common case inline: the unlogged row, within the reservation, after an exclusive grant.
    UPDATE latchkey_live l SET token = l.token + 1,
        told = latchkey_told(l.dead, l.life, l.key, l.token, p_life),
        dead = false, was_shared = false, holder = pg_backend_pid(), life = p_life, channel = p_channel,
        waited = latchkey_acquire.waited, since = now()
      WHERE l.name = p_name AND l.token < l.reserved AND NOT l.shared
      RETURNING l.token, l.told INTO token, abandoned;
    IF FOUND THEN RETURN; END IF;
  END IF;
  SELECT s.token, s.abandoned INTO token, abandoned FROM latchkey_grant_slow(p_name, p_key, p_shared, p_channel, p_life, waited) s;
END $$;

-- Whether a session waits for the key in the server now (othersWaitingExact).
CREATE OR REPLACE FUNCTION latchkey_waiting(p_key bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
    AND classid = ((p_key >> 32) & 4294967295)::oid AND objid = (p_key & 4294967295)::oid
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
$$;

-- Version 1's tokens go on: its names' reservations start at their last token (and their live rows with it,
-- so that their next holder is told abandoned only if version 1 said so).
DO $$ BEGIN
  IF to_regclass('latchkey_tokens') IS NOT NULL THEN
    INSERT INTO latchkey_reserved AS r (name, reserved) SELECT t.name, t.token FROM latchkey_tokens t
      ON CONFLICT (name) DO UPDATE SET reserved = greatest(r.reserved, excluded.reserved);
    INSERT INTO latchkey_live (name, key, token, reserved, dead)
      SELECT t.name, ('x' || encode(substr(sha256(convert_to(t.name, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint, t.token, t.token, t.abandoned
        FROM latchkey_tokens t
      ON CONFLICT (name) DO NOTHING;
  END IF;
END $$;

CREATE OR REPLACE FUNCTION latchkey_schema() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT ${SCHEMA_VERSION} $$;
`;

/**
 * Try, exclusive, one plain statement (no PL/pgSQL): $1 name, $2 key, $3
 * channel, $4 life, $5 knock (if taken, tell its holders another process
 * waits). The row update is guarded by token < reserved: when it matches
 * nothing (first grant, after a crash, reservation used up, after shared
 * grants) the session holds the lock with no token yet, and the engine
 * calls latchkey_grant_slow() on it (a second round trip, once in
 * RESERVE_BLOCK grants).
 */
export const TRY_SQL = `
WITH g AS (SELECT pg_try_advisory_lock($2) AS got),
u AS (
  UPDATE latchkey_live l SET token = l.token + 1,
      told = latchkey_told(l.dead, l.life, l.key, l.token, $4),
      dead = false, was_shared = false, holder = pg_backend_pid(), life = $4, channel = $3, waited = false, since = now()
    FROM g WHERE g.got AND l.name = $1 AND l.token < l.reserved AND NOT l.shared
    RETURNING l.token, l.told),
k AS (SELECT count(pg_notify(c.channel, $1)) AS n FROM (
    SELECT l.channel FROM latchkey_live l, g WHERE $5 AND NOT g.got AND l.name = $1 AND l.life <> 0 AND NOT l.waited AND l.channel <> $3
    UNION SELECT s.channel FROM latchkey_sharers s, g WHERE $5 AND NOT g.got AND s.name = $1 AND s.channel <> $3) c)
SELECT g.got AS granted, u.token, u.told AS abandoned, false AS waited FROM g LEFT JOIN u ON true, k`;

/** Every other acquisition: the procedure (shared, or a park). */
export const CALL_ACQUIRE_SQL = 'CALL latchkey_acquire($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, NULL)';
/** The rest of a grant that got no token from the fast path. */
export const GRANT_SLOW_SQL = 'SELECT * FROM latchkey_grant_slow($1, $2, $3, $4, $5, $6)';

/** Release, exclusive: the receipt, then the unlock (left to right, one statement). $1 key, $2 receipt. */
export const RELEASE_SQL = `SELECT pg_advisory_lock_shared(${RECEIPT_CLASS}, $2::integer) IS NOT NULL AS r, pg_advisory_unlock($1) AS ok`;
/** The same, dropping this session's older receipt of the name in the same statement ($3): a session keeps one per name. */
export const RELEASE_REPLACING_SQL = `SELECT pg_advisory_unlock_shared(${RECEIPT_CLASS}, $3::integer) AS d,
  pg_advisory_lock_shared(${RECEIPT_CLASS}, $2::integer) IS NOT NULL AS r, pg_advisory_unlock($1) AS ok`;
/** Release, shared: no receipt (a shared holder's death is not reported), the row deleted lazily. */
export const RELEASE_SHARED_SQL = `SELECT pg_advisory_unlock_shared($1) AS ok`;
/** Release by a holder that died in the process: the row says so (committed) before the unlock (RELEASE_UNLOCK_SQL, written right behind it). */
export const RELEASE_DEAD_SQL = `UPDATE latchkey_live SET holder = 0, life = 0, channel = NULL, dead = true WHERE name = $1 AND token = $2`;
export const RELEASE_UNLOCK_SQL = `SELECT pg_advisory_unlock($1) AS ok`;

/**
 * The lazy part of releases: rows that still name released grants are
 * cleared (committed by this statement; from any session) ... ($1 names,
 * $2 tokens; a row a later grant rewrote is left alone: its token moved on)
 */
export const CLEAR_SQL = `
UPDATE latchkey_live l SET holder = 0, life = 0, channel = NULL
  FROM unnest($1::text[], $2::bigint[]) AS x(name, token) WHERE l.name = x.name AND l.token = x.token`;
/** ... and only then (the next statement, on the receipts' own session) their receipts dropped ($1 receipts). */
export const DROP_RECEIPTS_SQL = `SELECT count(pg_advisory_unlock_shared(${RECEIPT_CLASS}, r)) AS n FROM unnest($1::integer[]) AS r`;
export const CLEAR_SHARED_SQL = `
DELETE FROM latchkey_sharers s USING unnest($1::text[], $2::bigint[]) AS x(name, token)
  WHERE s.name = x.name AND s.token = x.token`;

/** Unlock after a cancelled park (the grant may have come just before the cancel); never pg_advisory_unlock_all(): receipts. */
export const UNLOCK_SQL = 'SELECT pg_advisory_unlock($1)';
export const UNLOCK_SHARED_SQL = 'SELECT pg_advisory_unlock_shared($1)';

/** Say who this process's channel is (query()), forgetting processes whose sessions are all gone. */
export const PROC_SQL = `
WITH gone AS (DELETE FROM latchkey_procs p WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = 'latchkey ' || p.channel))
INSERT INTO latchkey_procs (channel, owner, pid, host) VALUES ($1, $2, $3, $4)
  ON CONFLICT (channel) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, host = excluded.host`;

/**
 * Every lock held or waited for, on every machine (query()): holders from
 * the rows, confirmed by pg_locks (a row naming a released grant is not
 * held); waiters from pg_locks, named through the rows' keys, their
 * processes through application_name → latchkey_procs.
 */
export const QUERY_SQL = `
WITH procs AS (SELECT p.*, a.pid AS backend FROM latchkey_procs p JOIN pg_stat_activity a ON a.application_name = 'latchkey ' || p.channel)
SELECT l.name, 'exclusive' AS mode, 'held' AS state, p.owner, p.pid, p.host, l.token, extract(epoch FROM l.since) * 1000 AS since
  FROM latchkey_live l JOIN procs p ON p.backend = l.holder
  WHERE l.life <> 0 AND EXISTS (SELECT 1 FROM pg_locks k WHERE k.locktype = 'advisory' AND k.granted AND k.pid = l.holder AND k.objsubid = 1
    AND ((k.classid::bigint << 32) | k.objid::bigint) = l.key)
UNION ALL
SELECT s.name, 'shared', 'held', p.owner, p.pid, p.host, s.token, extract(epoch FROM s.since) * 1000
  FROM latchkey_sharers s JOIN procs p ON p.backend = s.backend
  WHERE EXISTS (SELECT 1 FROM latchkey_live l JOIN pg_locks k ON k.locktype = 'advisory' AND k.granted AND k.pid = s.backend AND k.objsubid = 1
    AND ((k.classid::bigint << 32) | k.objid::bigint) = l.key WHERE l.name = s.name)
UNION ALL
SELECT l.name, CASE WHEN k.mode = 'ShareLock' THEN 'shared' ELSE 'exclusive' END, 'pending', p.owner, p.pid, p.host, 0,
    extract(epoch FROM coalesce(k.waitstart, now())) * 1000
  FROM pg_locks k JOIN procs p ON p.backend = k.pid
  JOIN latchkey_live l ON l.key = ((k.classid::bigint << 32) | k.objid::bigint)
  WHERE k.locktype = 'advisory' AND NOT k.granted AND k.objsubid = 1
    AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY since`;
