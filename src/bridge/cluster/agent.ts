/**
 * The cluster agent, worker side (helper-threads.ts starts it): the one thread of
 * the process that talks to PostgreSQL, on two connections whatever the
 * number of locks its threads take: a session that holds the process's
 * advisory locks and makes every attempt and release (postgres.ts), and
 * one that LISTENs for releases.
 *
 * It answers the requests the cluster table's mailboxes hold (cluster.ts)
 * whenever its doorbell rings. An acquisition that cannot be granted now
 * is tried again on a NOTIFY from a release, and every POLL_MS (a holder
 * that died ends its session without a notify). If the holding session is
 * lost (the server restarted, pg_terminate_backend, the network, or a
 * heartbeat unanswered for 6 s while it holds locks), every lock it held
 * is lost with it: their holders are told at once (ERR_LOCK_COMPROMISED,
 * onCompromised, lock.signal).
 *
 * query() from any thread comes on the BroadcastChannel QUERY_CHANNEL.
 */
import { debuglog } from 'node:util';
import { BroadcastChannel } from 'node:worker_threads';
import type pg from 'pg';
import { loadDriver } from '../drivers.js';
import { H_KEEPER, H_KEEPER_BELL, KEEPER_SERVING } from '../../atomics/layout.js';
import { LockTable } from '../../atomics/table.js';
import type { LockMode, RequestQueue } from '../../atomics/queue/queue.js';
import {
  A_OUTER, A_OUTER_FLAGS, A_OUTER_REP, A_OUTER_REP_RESULT, A_OUTER_REP_TOKEN, A_OUTER_REQ, A_OUTER_REQ_OP, A_OUTER_TOKEN,
  OUTER_ACQUIRING, OUTER_COMPROMISED, OUTER_HELD, OUTER_NONE, OUTER_RELEASING, heldGrants, ringOuterBell,
} from '../../atomics/queue/word.js';
import {
  ERROR_KINDS, F_ABANDONED, F_KEEP, F_ONCE, F_SHARED, OP_CANCEL, OP_MASK, OP_RELEASE, RES_CANCELLED,
  QUERY_CHANNEL, RES_DIED, RES_ERROR, RES_GRANTED, RES_RELEASED, RES_UNAVAILABLE, clusterTable, clusterUrl,
} from './cluster.js';
import { CLIENT_OPTIONS, Session, kindOf } from './postgres.js';
import { broadcastLoss } from '../../loss.js';
import { hostEvent } from '../../observe.js';

const debug = debuglog('latchkey');

/** How often an acquisition nobody woke is tried again (a holder that died sends no NOTIFY). */
export const POLL_MS = 200;
/** While the session holds locks: a round trip every HEARTBEAT_MS, lost if silent for HEARTBEAT_TIMEOUT_MS (postgres.ts heartbeat()). */
const HEARTBEAT_MS = 2_000;
const HEARTBEAT_TIMEOUT_MS = 6_000;

const table = clusterTable();
const words = LockTable.unsafeExposeInternals(table).core.words;
const url = clusterUrl();
let session: Session | undefined;
let listener: pg.Client | undefined;
/** What this process's session holds, by slot. */
const held = new Map<number, { name: string; mode: LockMode; token: number }>();
/** Acquisitions to try again, by slot: the request number they answer. */
const pending = new Map<number, { seq: number; name: string; mode: LockMode }>();
/** The last request number handled, by slot. */
const handled = new Map<number, number>();
let woken = false;

function connect(): Session {
  if (session !== undefined && !session.lost) return session;
  const s = new Session(url, (err) => lost(s, err));
  session = s;
  const l = new (loadDriver<typeof pg>('pg', 'postgres').Client)({ connectionString: url, application_name: 'latchkey listen', ...CLIENT_OPTIONS });
  listener?.end().catch(() => {});
  listener = l;
  l.on('error', () => {});
  l.on('notification', () => {
    woken = true;
    ring();
  });
  l.connect().then(() => l.query('LISTEN latchkey')).catch((err: Error) => debug('cluster LISTEN failed: %s', err.message));
  return s;
}

/** The holding session is gone, and every lock it held with it. */
function lost(s: Session, err: Error): void {
  if (session !== s) return;
  session = undefined;
  debug('cluster session lost: %s', err.message);
  // By name: a slot's cached handle may be of another name by now (given back, reused).
  for (const grant of held.values()) compromise(table.queue(grant.name), grant.name, grant.token, err.message, performance.now() + LOST_GRANT_MS);
  held.clear();
}

/** How long a grant answered but not yet taken up by its requester is waited for, once its session is lost. */
const LOST_GRANT_MS = 5_000;

/**
 * Mark the slot's grant of `token` compromised and tell its holders. A
 * grant the requester has not taken up yet (the queue still ACQUIRING with
 * that answer in its mailbox, unread or read and about to be applied) is
 * looked at again until it is: its holder must be told too, not run on
 * unaware.
 */
function compromise(q: RequestQueue, name: string, token: number, detail: string, until: number): void {
  const found = q.withLatch(() => {
    const w = q.pool.words, f = q.pool.f64, a = q.anchor;
    const outer = w[a + A_OUTER];
    if (outer === OUTER_ACQUIRING && f[(a + A_OUTER_REP_TOKEN) >> 1] === token) return { value: null, action: 0 };
    if ((outer !== OUTER_HELD && outer !== OUTER_RELEASING) || f[(a + A_OUTER_TOKEN) >> 1] !== token) return { value: undefined, action: 0 };
    w[a + A_OUTER_FLAGS]! |= OUTER_COMPROMISED;
    return { value: heldGrants(q.pool, a), action: 0 };
  });
  if (found === null) {
    if (performance.now() < until) setTimeout(() => compromise(q, name, token, detail, until), 1);
    return;
  }
  if (found === undefined || found.nodes.length === 0) return;
  hostEvent('lost', name, { scope: 'cluster', detail });
  broadcastLoss({
    table: q.tableId, nodes: found.nodes, reason: 'owner-changed', detail: `the PostgreSQL session that held it ended: ${detail}`,
    grants: { slot: q.slot, gen: q.gen, tokens: found.tokens },
  });
}

function reply(q: RequestQueue, seq: number, result: number, token = 0): void {
  const w = q.pool.words, a = q.anchor;
  q.pool.f64[(a + A_OUTER_REP_TOKEN) >> 1] = token;
  Atomics.store(w, a + A_OUTER_REP_RESULT, result);
  Atomics.store(w, a + A_OUTER_REP, seq); // last: the requester reads the number, then the result
  ringOuterBell(q.pool, q.slot);
}

const errorResult = (err: unknown) => RES_ERROR + ERROR_KINDS.indexOf(kindOf(err));

/** Whether request `seq` of the slot is still the one to answer (no cancel or newer request came meanwhile). */
const current = (q: RequestQueue, seq: number) => Atomics.load(q.pool.words, q.anchor + A_OUTER_REQ) === seq;

async function attempt(q: RequestQueue, seq: number, name: string, mode: LockMode, once: boolean): Promise<void> {
  try {
    const s = connect();
    const r = await s.attempt(name, mode, !once);
    if (r.collision !== null) hostEvent('collision', name, { with: r.collision, scope: 'cluster' });
    // The session ended while the answer came (both in one read): the grant went with it.
    if (r.granted && (s.lost || session !== s)) throw new Error('Connection lost: the PostgreSQL session ended as it granted the lock');
    if (r.granted) {
      pending.delete(q.slot);
      held.set(q.slot, { name, mode, token: r.token });
      // Cancelled while the attempt was on its way: the requester gave up, give it back.
      if (!current(q, seq)) await giveBack(q.slot);
      else reply(q, seq, RES_GRANTED | (r.died ? RES_DIED : 0), r.token);
    } else if (!current(q, seq)) {
      // Cancelled while its first attempt was on its way: that attempt left a waiter row.
      pending.delete(q.slot);
      await s.withdraw(name).catch(() => {});
    } else if (once) {
      reply(q, seq, RES_UNAVAILABLE);
    } else {
      pending.set(q.slot, { seq, name, mode });
    }
  } catch (err) {
    debug('cluster attempt on %s failed: %s', name, (err as Error).message);
    pending.delete(q.slot);
    if (current(q, seq)) reply(q, seq, errorResult(err));
  }
}

/** Give back what the session holds of the slot (idempotent). */
async function giveBack(slot: number, abandoned = false): Promise<void> {
  const grant = held.get(slot);
  if (grant === undefined) return;
  held.delete(slot);
  await session?.release(grant.name, grant.mode, abandoned).catch((err: Error) => {
    // The session is gone or going: the server lets go of its locks with it.
    debug('cluster release of %s failed: %s', grant.name, err.message);
  });
}

async function release(q: RequestQueue, seq: number, op: number): Promise<void> {
  const name = q.name as string, w = q.pool.words, a = q.anchor;
  try {
    if (held.has(q.slot) && (op & F_KEEP) !== 0 && !(await connect().othersWaiting(name))) {
      if (Atomics.load(w, a + A_OUTER) === OUTER_RELEASING) q.outerKept();
      reply(q, seq, RES_RELEASED);
      return;
    }
  } catch (err) {
    debug('cluster check of waiters on %s failed: %s', name, (err as Error).message);
  }
  await giveBack(q.slot, (op & F_ABANDONED) !== 0);
  if (Atomics.load(w, a + A_OUTER) === OUTER_RELEASING) q.outerReleased();
  reply(q, seq, RES_RELEASED);
}

/** Request `seq` of the slot: an acquisition or a release (cancels are answered at once, in serve()). */
async function handle(q: RequestQueue, seq: number, op: number): Promise<void> {
  const mode: LockMode = (op & F_SHARED) !== 0 ? 'shared' : 'exclusive';
  if ((op & OP_MASK) === OP_RELEASE) {
    pending.delete(q.slot);
    await release(q, seq, op);
    return;
  }
  // Already ours (a thread of ours died between getting it and telling the queue): give it back first.
  await giveBack(q.slot);
  await attempt(q, seq, q.name as string, mode, (op & F_ONCE) !== 0);
}

/** A grant the session holds that no queue uses any more (a release lost to a thread's death): give it back. */
async function sweep(q: RequestQueue): Promise<void> {
  const outer = Atomics.load(q.pool.words, q.anchor + A_OUTER);
  if (held.has(q.slot) && outer === OUTER_NONE && !pending.has(q.slot)) await giveBack(q.slot);
}

function ring(): void {
  Atomics.add(words, H_KEEPER_BELL, 1);
  Atomics.notify(words, H_KEEPER_BELL);
}

/** Each slot's work in progress: one at a time per name, every name at once (a stuck one holds up no other). */
const inflight = new Map<number, Promise<void>>();
function run(q: RequestQueue, work: () => Promise<void>): void {
  inflight.set(q.slot, work().finally(() => {
    inflight.delete(q.slot);
    ring(); // a request that came meanwhile is read now
  }));
}

function serve(poll: boolean): void {
  for (const q of table.queues()) {
    const w = q.pool.words, a = q.anchor, seq = Atomics.load(w, a + A_OUTER_REQ), op = Atomics.load(w, a + A_OUTER_REQ_OP);
    if (seq !== 0 && handled.get(q.slot) !== seq && (op & OP_MASK) === OP_CANCEL) {
      // At once, whatever is on its way for the name: the requester waits for nothing else.
      handled.set(q.slot, seq);
      const waiting = pending.get(q.slot);
      pending.delete(q.slot);
      if (waiting !== undefined) void session?.withdraw(waiting.name).catch(() => {});
      reply(q, seq, RES_CANCELLED);
      // A grant answered just before the cancel came: nobody will take it up, give it back now.
      if (held.has(q.slot) && !inflight.has(q.slot)) run(q, () => giveBack(q.slot));
      continue;
    }
    if (inflight.has(q.slot)) continue;
    if (seq !== 0 && handled.get(q.slot) !== seq) {
      handled.set(q.slot, seq);
      run(q, () => handle(q, seq, op));
    } else if (poll || woken) {
      const p = pending.get(q.slot);
      if (p !== undefined && handled.get(q.slot) === p.seq) run(q, () => attempt(q, p.seq, p.name, p.mode, false));
      else if (held.has(q.slot)) run(q, () => sweep(q));
    }
  }
  woken = false;
}

const queries = new BroadcastChannel(QUERY_CHANNEL);
queries.onmessage = (event) => {
  const { id } = (event as { data: { id: string } }).data;
  connect().query().then((entries) => queries.postMessage({ id, entries }), (err: Error) => queries.postMessage({ id, error: kindOf(err) }));
};

// This thread exists to wait: keep it alive while the process lives (the
// main thread unref'd it, so it never keeps the process alive).
setInterval(() => {}, 0x7fffffff);
let beating = false;
setInterval(() => {
  const s = session;
  if (beating || held.size === 0 || s === undefined || s.lost) return;
  beating = true;
  s.heartbeat(HEARTBEAT_TIMEOUT_MS).catch(() => {}).finally(() => (beating = false)); // a session that never connected: lost already
}, HEARTBEAT_MS);
// Serving, and a grant never lingers: at exit a lingering grant's session
// would end with its lease row left, and the next holder be told it died.
Atomics.store(words, H_KEEPER, KEEPER_SERVING);
let lastPoll = performance.now();
for (;;) {
  const bell = Atomics.load(words, H_KEEPER_BELL);
  const poll = pending.size > 0 && performance.now() - lastPoll >= POLL_MS;
  if (poll) lastPoll = performance.now();
  serve(poll);
  const r = Atomics.waitAsync(words, H_KEEPER_BELL, bell, pending.size > 0 ? POLL_MS : 1000);
  if (r.async) await r.value;
}
