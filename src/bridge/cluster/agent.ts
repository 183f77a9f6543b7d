/**
 * The cluster agent, worker side (helper-threads.ts starts it): the one
 * thread of the process that talks to the cluster's server, through its
 * engine (engine.ts; PostgreSQL: postgres.ts), however many locks the
 * process's threads take.
 *
 * It answers the requests the cluster table's mailboxes hold (cluster.ts)
 * whenever its doorbell rings: an acquisition (the engine waits as it
 * waits: in the server, in a queue, until the request's deadline), a
 * cancel (answered at once; the acquisition on its way is aborted, and a
 * grant that comes anyway is given back), a release (answered as soon as
 * it is sent: the server's answer is on nobody's path; or kept, with a
 * fresh budget, when the process's own threads still want it and no other
 * process waits, as the server confirms). One request per name at a time,
 * every name at once: a stuck name holds up no other. A grant nobody local
 * uses lingers (its engine's cohort policy: cluster.ts kEngines) and is given back here.
 *
 * A grant the engine says was lost (its session ended, its lease was taken)
 * is compromised at once: its holders are told (ERR_LOCK_COMPROMISED,
 * onCompromised, lock.signal), a grant answered but not yet taken up too.
 * A grant the engine says another process wants (events.wanted) is marked
 * so in its queue (OuterSeat.wanted()): no new local pass, and a lingering
 * grant goes back at once.
 *
 * query() from any thread comes on the BroadcastChannel QUERY_CHANNEL.
 */
import { BroadcastChannel } from 'node:worker_threads';
import { HELPER_SERVING } from '../../atomics/queue/table.js';
import type { RequestQueue } from '../../atomics/queue/queue.js';
import type { ClusterEngine, EngineLoss, LockMode } from './engine.js';
import {
  CONTROL_NAME, F_ABANDONED, F_KEEP, F_ONCE, F_SHARED, F_STEAL, OP_CANCEL, OP_CLOSE, OP_DEADLINE_NONE, OP_DEADLINE_SHIFT, OP_MASK,
  OP_RELEASE, QUERY_CHANNEL, RES_CANCELLED, RES_DIED, RES_GRANTED, RES_RELEASED, RES_UNAVAILABLE, RES_WANTED,
  clusterTable, clusterUrl, errorResult as resultOf, openEngine,
} from './cluster.js';
import { storeKey } from '../keys.js';
import { announceLoss } from '../../loss.js';
import { debug, hostEvent } from '../../observe.js';

/** How long a grant answered but not yet taken up by its requester is waited for, once it is lost. */
const LOST_GRANT_MS = 5_000;
/** How often grants nobody uses are looked for (a release lost to a thread's death). */
const SWEEP_MS = 1000;
const table = clusterTable();
const helper = table.helper;
const engine: ClusterEngine = await openEngine(clusterUrl(), { lost: onLost, wanted: onWanted });

/** What the engine holds for this process, by slot (`key`: the name as the server keeps it; `name`: as the queue does). */
const held = new Map<number, { name: string; key: string; mode: LockMode; token: number }>();
/** The last request number handled, by slot. */
const handled = new Map<number, number>();
/** Each slot's work in progress, and the abort of an acquisition among it. */
const inflight = new Map<number, { done: Promise<void>; abort?: AbortController }>();

/** The engine lost this process's grant of `key`. */
function onLost(key: string, token: number, reason: EngineLoss, detail: string): void {
  for (const [slot, grant] of held) {
    if (grant.key !== key || grant.token !== token) continue;
    held.delete(slot);
    // By name: a slot's cached handle may be of another name by now (given back, reused).
    compromise(table.queue(grant.name), token, reason, detail, performance.now() + LOST_GRANT_MS);
  }
}

/**
 * Mark the slot's grant of `token` compromised and tell its holders. A
 * grant the requester has not taken up yet (its answer in the mailbox,
 * unread, or read and about to be applied) is looked at again until it is:
 * its holder must be told too, not run on unaware.
 */
function compromise(q: RequestQueue, token: number, reason: EngineLoss, detail: string, until: number): void {
  const found = q.seat!.compromise(token);
  if (found === 'not-taken-up') {
    if (performance.now() < until) setTimeout(() => compromise(q, token, reason, detail, until), 1);
    return;
  }
  if (found === null || found.nodes.length === 0) return;
  hostEvent('lost', q.name, { scope: 'cluster', reason, detail });
  announceLoss(q.tableId, found.nodes, reason, detail, { slot: q.slot, gen: q.gen, tokens: found.tokens });
}

/** Another process waits for `key`, which this process holds: its queue is told (no new local pass, no linger). */
function onWanted(key: string): void {
  for (const grant of held.values()) {
    if (grant.key === key) markWanted(table.queue(grant.name), grant.token);
  }
}

/**
 * Mark the slot's grant of `token` wanted. A grant answered but not taken up
 * yet is marked too (OuterSeat.wanted() while acquiring: it starts wanted).
 */
function markWanted(q: RequestQueue, token: number): void {
  if (held.get(q.slot)?.token === token) q.seat!.wanted(); // else given back meanwhile
}

const reply = (q: RequestQueue, seq: number, result: number, token = 0) => q.seat!.mailbox.reply(seq, result, token);
const errorResult = (err: unknown) => resultOf(engine.kindOf(err));
/** Whether request `seq` of the slot is still the one to answer (no cancel or newer request came meanwhile). */
const current = (q: RequestQueue, seq: number) => q.seat!.mailbox.request().seq === seq;

async function acquire(q: RequestQueue, seq: number, op: number, abort: AbortController): Promise<void> {
  const key = storeKey(q.name), mode: LockMode = (op & F_SHARED) !== 0 ? 'shared' : 'exclusive';
  // The requester's deadline, as the time it had left when it posted (cluster.ts ClusterEscalation).
  const left = (op >>> OP_DEADLINE_SHIFT) & OP_DEADLINE_NONE;
  const deadline = left === OP_DEADLINE_NONE ? Infinity : performance.now() + left;
  try {
    const grant = await engine.acquire(key, {
      mode, once: (op & F_ONCE) !== 0, steal: (op & F_STEAL) !== 0, ttl: q.seat!.leaseAsked, deadline, signal: abort.signal,
    });
    if (grant === null) {
      if (current(q, seq)) reply(q, seq, RES_UNAVAILABLE);
      return;
    }
    const mine = { name: q.name, key, mode, token: grant.token };
    held.set(q.slot, mine);
    if (grant.abandoned && engine.abandonedGraceMs > 0) {
      // The dead holder's process, if it still runs, is told first (ClusterEngine.abandonedGraceMs).
      await new Promise((r) => setTimeout(r, engine.abandonedGraceMs));
      if (held.get(q.slot) !== mine) {
        // Lost meanwhile (its session ended too): as if the session had ended as it granted the lock.
        if (current(q, seq)) reply(q, seq, resultOf('unreachable'));
        return;
      }
    }
    // Cancelled while the acquisition was on its way: the requester gave up, give it back.
    if (!current(q, seq)) giveBack(q.slot);
    else reply(q, seq, RES_GRANTED | (grant.abandoned ? RES_DIED : 0) | (engine.othersWaiting(key) ? RES_WANTED : 0), grant.token);
  } catch (err) {
    if (abort.signal.aborted) return; // the cancel was answered already
    debug('cluster acquisition of %s failed: %s', key, (err as Error).message);
    if (current(q, seq)) reply(q, seq, errorResult(err));
  }
}

/**
 * Give back what this process holds of the slot (idempotent). The engine
 * has forgotten the grant when this returns and its release is on its way
 * to the server; nothing waits for the server's answer.
 */
function giveBack(slot: number, abandoned = false): void {
  const grant = held.get(slot);
  if (grant === undefined) return;
  held.delete(slot);
  engine.release(grant.key, grant.token, abandoned).catch((err: Error) => {
    // The connection is gone or going: the server lets go of its locks with it.
    debug('cluster release of %s failed: %s', grant.key, err.message);
  });
}

async function release(q: RequestQueue, seq: number, op: number): Promise<void> {
  const grant = held.get(q.slot);
  // Kept, with a fresh budget, if the process's threads still want it and no other process waits: as far as
  // the engine knows (no I/O), then as the server says (one round trip per budget: a waiter the engine could
  // not hear of waits at most one budget).
  if (grant !== undefined && (op & F_KEEP) !== 0 && !engine.othersWaiting(grant.key)) {
    let others = true;
    try {
      others = await engine.othersWaitingExact(grant.key);
    } catch (err) {
      debug('cluster check of waiters on %s failed: %s', q.name, (err as Error).message);
    }
    if (!others && held.get(q.slot) === grant) {
      q.seat!.releasedIfReleasing(true);
      reply(q, seq, RES_RELEASED);
      return;
    }
  }
  giveBack(q.slot, (op & F_ABANDONED) !== 0);
  q.seat!.releasedIfReleasing(false);
  reply(q, seq, RES_RELEASED);
}

/** A grant this process holds that no queue uses any more (a release lost to a thread's death): give it back. */
async function sweep(q: RequestQueue): Promise<void> {
  if (held.has(q.slot) && q.seat!.state === 'none') giveBack(q.slot);
}

/** The process exits (cluster.ts clusterExit): the engine settles its releases and closes; then the answer. */
async function close(q: RequestQueue, seq: number): Promise<void> {
  await engine.close().catch((err: Error) => debug('cluster engine close failed: %s', err.message));
  reply(q, seq, RES_RELEASED);
}

function run(q: RequestQueue, work: (abort: AbortController) => Promise<void>, abortable = false): void {
  const abort = abortable ? new AbortController() : undefined;
  inflight.set(q.slot, {
    abort,
    done: work(abort!).finally(() => {
      inflight.delete(q.slot);
      // A request that came meanwhile (serve() passed it by: its ring is spent) is read now.
      const { seq } = q.seat!.mailbox.request();
      if (seq !== 0 && handled.get(q.slot) !== seq) {
        owed--; // this ring is its own event
        helper.ring();
      }
    }),
  });
}

/**
 * The queues this thread knows of, from its last pass over every slot. Such
 * a pass costs 30–60 µs here (1024 slots), and would sit on every hand-over's
 * path: it is made only when the doorbell rang more often than the known
 * queues account for (a queue this thread does not know posted), and every
 * SWEEP_MS. Every ring has its event: a request posted (cluster.ts post()),
 * or a grant starting to linger (word.ts settle()).
 */
let known: RequestQueue[] = [];
/** The last request and linger counted against a ring, by slot (each is counted once). */
const countedRequest = new Map<number, number>();
const countedLinger = new Map<number, number>();
/** Rings not matched by an event yet (below 0: events seen before their ring was read). */
let owed = 0;

/** Serve what `rings` rings of the doorbell brought; returns ms until a lingering grant is due to go back. */
function serve(rings: number, sweeping: boolean): number {
  owed += rings;
  let { events, due } = visit(known, sweeping, false);
  owed -= events;
  if (owed > 0 || sweeping) {
    // A queue this thread did not know posted: every slot, and what each is now (a slot may have been given
    // back and taken by another name: its handle is new).
    known = [...table.queues()];
    due = Math.min(due, visit(known, sweeping, true).due);
    owed = 0;
  }
  return due;
}

/** Whether the table still resolves `q`'s name to `q` (its slot was not given back and taken by another name). */
function stillTheSame(q: RequestQueue): boolean {
  try {
    return table.queue(q.name) === q;
  } catch {
    return false; // the table is full: the next full pass sorts it out
  }
}

/** One look at each of `queues`: answers their requests, gives back what lingered long enough. */
function visit(queues: RequestQueue[], sweeping: boolean, fresh: boolean): { events: number; due: number } {
  let events = 0, due = Infinity;
  for (const q of queues) {
    const seat = q.seat!, until = seat.lingersUntil;
    if (until !== 0) {
      if (countedLinger.get(q.slot) !== until) {
        countedLinger.set(q.slot, until);
        events++;
      }
      // A grant nobody local uses (the cohort's linger): back to the server once it has lingered long enough.
      // Another process waits: back at once (a grant lingers within the turn only until the helper looks, word.ts).
      const now = performance.timeOrigin + performance.now();
      if (now >= until || seat.wantedElsewhere) seat.releaseIfIdle(Infinity);
      else due = Math.min(due, until - now);
    }
    const { seq, op } = seat.mailbox.request();
    if (seq === 0 || handled.get(q.slot) === seq) {
      if (sweeping && fresh && held.has(q.slot) && !inflight.has(q.slot)) run(q, () => sweep(q));
      continue;
    }
    if (countedRequest.get(q.slot) !== seq) {
      countedRequest.set(q.slot, seq);
      events++;
    }
    // A handle known from an earlier pass may name a slot given back and taken by another name since: it
    // is looked up again (the same handle while the slot still holds its name; else the next full pass).
    if (!fresh && !stillTheSame(q)) {
      owed++;
      continue;
    }
    if ((op & OP_MASK) === OP_CANCEL) {
      // At once, whatever is on its way for the name: the requester waits for nothing else.
      handled.set(q.slot, seq);
      inflight.get(q.slot)?.abort?.abort(new Error('cancelled'));
      reply(q, seq, RES_CANCELLED);
      // A grant answered just before the cancel came: nobody will take it up, give it back now.
      if (held.has(q.slot) && !inflight.has(q.slot)) giveBack(q.slot);
      continue;
    }
    if (inflight.has(q.slot)) continue; // read when the work in progress ends (run())
    handled.set(q.slot, seq);
    if ((op & OP_MASK) === OP_RELEASE) run(q, () => release(q, seq, op));
    else if ((op & OP_MASK) === OP_CLOSE && q.name === CONTROL_NAME) run(q, () => close(q, seq));
    // Already ours (a thread of ours died between getting it and telling the queue): give it back first.
    else run(q, async (abort) => {
      giveBack(q.slot);
      await acquire(q, seq, op, abort);
    }, true);
  }
  return { events, due };
}

const queries = new BroadcastChannel(QUERY_CHANNEL);
queries.onmessage = (event) => {
  const { id } = (event as { data: { id: string } }).data;
  engine.query().then((entries) => queries.postMessage({ id, entries }), (err: Error) => queries.postMessage({ id, error: engine.kindOf(err) }));
};

// This thread exists to wait: keep it alive while the process lives (the
// main thread unref'd it, so it never keeps the process alive).
setInterval(() => {}, 0x7fffffff);
// Serving: grants may linger (as the tier's CohortPolicy says); this thread gives them back.
helper.set(HELPER_SERVING);
// The sweep's clock: a ring of its own, so that a wait needs no timeout (each timed wait leaves a timer
// behind in V8 until it would have expired) unless a grant lingers.
let sweepDue = false;
setInterval(() => {
  sweepDue = true;
  owed--; // this ring is its own event
  helper.ring();
}, SWEEP_MS).unref();
let lastBell = helper.bell;
owed = 1; // the first pass looks at every slot
for (;;) {
  const bell = helper.bell, sweeping = sweepDue;
  sweepDue = false;
  const due = serve((bell - lastBell) | 0, sweeping);
  lastBell = bell;
  await helper.sleep(bell, due);
}
