/**
 * The cluster agent, worker side (keeper.ts starts it): the one thread of
 * the process that talks to PostgreSQL, on two connections whatever the
 * number of locks its threads take: a session that holds the process's
 * advisory locks and makes every attempt and release (postgres.ts), and
 * one that LISTENs for releases.
 *
 * It answers the requests the cluster table's mailboxes hold (cluster.ts)
 * whenever its doorbell rings. An acquisition that cannot be granted now
 * is tried again on a NOTIFY from a release, and every POLL_MS (a holder
 * that died ends its session without a notify). If the holding session is
 * lost (the server restarted, pg_terminate_backend, the network) every
 * lock it held is lost with it: their holders are told at once
 * (ERR_LOCK_COMPROMISED, onCompromised, lock.signal).
 *
 * query() from any thread comes on the BroadcastChannel QUERY_CHANNEL.
 */
import { debuglog } from 'node:util';
import { BroadcastChannel } from 'node:worker_threads';
import pg from 'pg';
import { H_KEEPER, H_KEEPER_BELL, KEEPER_SERVING } from '../atomics/layout.js';
import { LockTable } from '../atomics/table.js';
import type { LockMode, RequestQueue } from '../atomics/queue.js';
import {
  A_HELD, A_OUTER, A_OUTER_FLAGS, A_OUTER_REP, A_OUTER_REP_RESULT, A_OUTER_REP_TOKEN, A_OUTER_REQ, A_OUTER_REQ_OP,
  N_NEXT, OUTER_ACQUIRING, OUTER_COMPROMISED, OUTER_HELD, OUTER_NONE, OUTER_RELEASING, nodeAt, ringOuterBell,
} from '../atomics/queue-word.js';
import {
  ERROR_KINDS, F_ABANDONED, F_KEEP, F_ONCE, F_SHARED, OP_ACQUIRE, OP_CANCEL, OP_MASK, OP_RELEASE, RES_CANCELLED,
  QUERY_CHANNEL, RES_DIED, RES_ERROR, RES_GRANTED, RES_RELEASED, RES_UNAVAILABLE, clusterTable, clusterUrl,
} from './cluster.js';
import { Session, kindOf } from './postgres.js';
import { broadcastLoss } from '../loss.js';
import { hostEvent } from '../observe.js';

const debug = debuglog('latchkey');

/** How often an acquisition nobody woke is tried again (a holder that died sends no NOTIFY). */
export const POLL_MS = 200;

const table = clusterTable();
const words = LockTable.unsafeExposeInternals(table).core.words;
const url = clusterUrl();
let session: Session | undefined;
let listener: pg.Client | undefined;
/** What this process's session holds, by slot. */
const held = new Map<number, { name: string; mode: LockMode }>();
/** Acquisitions to try again, by slot: the request number they answer. */
const pending = new Map<number, { seq: number; name: string; mode: LockMode }>();
/** The last request number handled, by slot. */
const handled = new Map<number, number>();
let woken = false;

function connect(): Session {
  if (session !== undefined && !session.lost) return session;
  const s = new Session(url, (err) => lost(s, err));
  session = s;
  const l = new pg.Client({ connectionString: url, application_name: 'latchkey listen' });
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
  for (const [slot, grant] of held) {
    const q = queueAt(slot);
    const nodes = q.withLatch(() => {
      const w = q.pool.words, a = q.anchor, out: number[] = [];
      if (w[a + A_OUTER] === OUTER_HELD || w[a + A_OUTER] === OUTER_RELEASING) {
        w[a + A_OUTER_FLAGS]! |= OUTER_COMPROMISED;
        for (let n = w[a + A_HELD]!; n !== 0; n = w[nodeAt(q.pool, n - 1) + N_NEXT]!) out.push(n - 1);
      }
      return { value: out, action: 0 };
    });
    hostEvent('lost', grant.name, { scope: 'cluster', detail: err.message });
    broadcastLoss({ table: q.tableId, nodes, reason: 'owner-changed', detail: `the PostgreSQL session that held it ended: ${err.message}` });
  }
  held.clear();
}

const queues = new Map<number, RequestQueue>();
function queueAt(slot: number): RequestQueue {
  let q = queues.get(slot);
  if (q === undefined) {
    for (const each of table.queues()) queues.set(each.slot, each);
    q = queues.get(slot)!;
  }
  return q;
}

function reply(q: RequestQueue, seq: number, result: number, token = 0): void {
  const w = q.pool.words, a = q.anchor;
  q.pool.f64[(a + A_OUTER_REP_TOKEN) >> 1] = token;
  Atomics.store(w, a + A_OUTER_REP_RESULT, result);
  Atomics.store(w, a + A_OUTER_REP, seq); // last: the requester reads the number, then the result
  ringOuterBell(q.pool, q.slot);
}

const errorResult = (err: unknown) => RES_ERROR + ERROR_KINDS.indexOf(kindOf(err));

async function attempt(q: RequestQueue, seq: number, name: string, mode: LockMode, once: boolean): Promise<void> {
  try {
    const s = connect();
    const r = await s.attempt(name, mode, !once);
    if (r.collision !== null) hostEvent('collision', name, { with: r.collision, scope: 'cluster' });
    if (r.granted) {
      pending.delete(q.slot);
      held.set(q.slot, { name, mode });
      reply(q, seq, RES_GRANTED | (r.died ? RES_DIED : 0), r.token);
    } else if (once) {
      reply(q, seq, RES_UNAVAILABLE);
    } else {
      pending.set(q.slot, { seq, name, mode });
    }
  } catch (err) {
    debug('cluster attempt on %s failed: %s', name, (err as Error).message);
    pending.delete(q.slot);
    reply(q, seq, errorResult(err));
  }
}

async function release(q: RequestQueue, seq: number, op: number): Promise<void> {
  const name = q.name as string, grant = held.get(q.slot), w = q.pool.words, a = q.anchor;
  try {
    if (grant !== undefined && (op & F_KEEP) !== 0 && !(await connect().othersWaiting(name))) {
      if (Atomics.load(w, a + A_OUTER) === OUTER_RELEASING) q.outerKept();
      reply(q, seq, RES_RELEASED);
      return;
    }
    if (grant !== undefined) {
      held.delete(q.slot);
      if (session !== undefined && !session.lost) await session.release(name, grant.mode, (op & F_ABANDONED) !== 0);
    }
  } catch (err) {
    // The session is gone or going: the server lets go of its locks with it.
    debug('cluster release of %s failed: %s', name, (err as Error).message);
  }
  if (Atomics.load(w, a + A_OUTER) === OUTER_RELEASING) q.outerReleased();
  reply(q, seq, RES_RELEASED);
}

async function handle(q: RequestQueue, seq: number, op: number): Promise<void> {
  const name = q.name as string, mode: LockMode = (op & F_SHARED) !== 0 ? 'shared' : 'exclusive';
  switch (op & OP_MASK) {
    case OP_ACQUIRE:
      // Already ours (a thread of ours died between getting it and telling the queue): ours again, a new token.
      if (held.has(q.slot)) {
        await release(q, seq, OP_RELEASE);
      }
      await attempt(q, seq, name, mode, (op & F_ONCE) !== 0);
      return;
    case OP_CANCEL: {
      const waiting = pending.get(q.slot);
      pending.delete(q.slot);
      // Granted just before the cancel came: the requester gave up on it, give it back.
      if (waiting === undefined && held.has(q.slot) && Atomics.load(q.pool.words, q.anchor + A_OUTER) === OUTER_ACQUIRING) {
        const grant = held.get(q.slot)!;
        held.delete(q.slot);
        await session?.release(name, grant.mode, false).catch(() => {});
      }
      await session?.withdraw(name).catch(() => {});
      reply(q, seq, RES_CANCELLED);
      return;
    }
    case OP_RELEASE:
      pending.delete(q.slot);
      await release(q, seq, op);
  }
}

/** A grant the session holds that no queue uses any more (a release lost to a thread's death): give it back. */
async function sweep(q: RequestQueue): Promise<void> {
  const outer = Atomics.load(q.pool.words, q.anchor + A_OUTER), grant = held.get(q.slot);
  if (grant === undefined || outer !== OUTER_NONE || pending.has(q.slot)) return;
  held.delete(q.slot);
  await session?.release(grant.name, grant.mode, false).catch(() => {});
}

function ring(): void {
  Atomics.add(words, H_KEEPER_BELL, 1);
  Atomics.notify(words, H_KEEPER_BELL);
}

async function serve(poll: boolean): Promise<void> {
  for (const q of table.queues()) {
    queues.set(q.slot, q);
    const w = q.pool.words, a = q.anchor, seq = Atomics.load(w, a + A_OUTER_REQ);
    if (seq !== 0 && handled.get(q.slot) !== seq) {
      handled.set(q.slot, seq);
      await handle(q, seq, Atomics.load(w, a + A_OUTER_REQ_OP));
    } else {
      await sweep(q);
    }
  }
  if (!poll && !woken) return;
  woken = false;
  for (const [slot, p] of [...pending]) {
    const q = queueAt(slot);
    if (handled.get(slot) === p.seq) await attempt(q, p.seq, p.name, p.mode, false);
  }
}

const queries = new BroadcastChannel(QUERY_CHANNEL);
queries.onmessage = (event) => {
  const { id } = (event as { data: { id: string } }).data;
  connect().query().then((entries) => queries.postMessage({ id, entries }), (err: Error) => queries.postMessage({ id, error: kindOf(err) }));
};

// This thread exists to wait: keep it alive while the process lives (the
// main thread unref'd it, so it never keeps the process alive).
setInterval(() => {}, 0x7fffffff);
// Serving, and a grant never lingers: at exit a lingering grant's session
// would end with its lease row left, and the next holder be told it died.
Atomics.store(words, H_KEEPER, KEEPER_SERVING);
let lastPoll = performance.now();
for (;;) {
  const bell = Atomics.load(words, H_KEEPER_BELL);
  const poll = pending.size > 0 && performance.now() - lastPoll >= POLL_MS;
  if (poll) lastPoll = performance.now();
  await serve(poll);
  const r = Atomics.waitAsync(words, H_KEEPER_BELL, bell, pending.size > 0 ? POLL_MS : 1000);
  if (r.async) await r.value;
}
