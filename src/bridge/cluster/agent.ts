/**
 * The cluster agent, worker side (helper-threads.ts starts it): the one
 * thread of the process that talks to the cluster's server, through its
 * engine (engine.ts; PostgreSQL: postgres.ts), however many locks the
 * process's threads take.
 *
 * It answers the requests the cluster table's mailboxes hold (cluster.ts)
 * whenever its doorbell rings: an acquisition (the engine waits as it
 * waits: in the server, in a queue), a cancel (answered at once; the
 * acquisition on its way is aborted, and a grant that comes anyway is
 * given back), a release (kept when the process's own threads still want
 * it and no other process waits). One request per name at a time, every
 * name at once: a stuck name holds up no other.
 *
 * A grant the engine says was lost (its session ended, its lease was taken)
 * is compromised at once: its holders are told (ERR_LOCK_COMPROMISED,
 * onCompromised, lock.signal), a grant answered but not yet taken up too.
 * A grant the engine says another process wants (events.wanted) is marked
 * so in its queue (OuterSeat.wanted()): a lingering grant goes back at once
 * and the releaser keeps nothing. At exit the engine is closed (OP_CLOSE).
 *
 * query() from any thread comes on the BroadcastChannel QUERY_CHANNEL.
 */
import { BroadcastChannel } from 'node:worker_threads';
import { HELPER_SERVING } from '../../atomics/queue/table.js';
import type { RequestQueue } from '../../atomics/queue/queue.js';
import type { ClusterEngine, EngineLoss, LockMode } from './engine.js';
import {
  CONTROL_NAME, F_ABANDONED, F_KEEP, F_ONCE, F_SHARED, F_STEAL, OP_CANCEL, OP_CLOSE, OP_MASK, OP_RELEASE, QUERY_CHANNEL, RES_CANCELLED,
  RES_DIED, RES_GRANTED, RES_RELEASED, RES_UNAVAILABLE, RES_WANTED, clusterTable, clusterUrl, decodeTtl, errorResult as resultOf, openEngine,
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

/** Another process waits for `key`, which this process holds: its queue is told (no linger, nothing kept). */
function onWanted(key: string): void {
  for (const grant of held.values()) {
    if (grant.key === key) markWanted(table.queue(grant.name), grant.token, performance.now() + LOST_GRANT_MS);
  }
}

/** As compromise(): a grant answered but not taken up yet is marked once it is (OuterSeat.wanted() needs it held). */
function markWanted(q: RequestQueue, token: number, until: number): void {
  if (held.get(q.slot)?.token !== token) return; // given back meanwhile
  if (q.seat!.state === 'acquiring') {
    if (performance.now() < until) setTimeout(() => markWanted(q, token, until), 1);
    return;
  }
  q.seat!.wanted();
}

const reply = (q: RequestQueue, seq: number, result: number, token = 0) => q.seat!.mailbox.reply(seq, result, token);
const errorResult = (err: unknown) => resultOf(engine.kindOf(err));
/** Whether request `seq` of the slot is still the one to answer (no cancel or newer request came meanwhile). */
const current = (q: RequestQueue, seq: number) => q.seat!.mailbox.request().seq === seq;

async function acquire(q: RequestQueue, seq: number, op: number, abort: AbortController): Promise<void> {
  const key = storeKey(q.name), mode: LockMode = (op & F_SHARED) !== 0 ? 'shared' : 'exclusive';
  try {
    const grant = await engine.acquire(key, { mode, once: (op & F_ONCE) !== 0, steal: (op & F_STEAL) !== 0, ttl: decodeTtl(op), signal: abort.signal });
    if (grant === null) {
      if (current(q, seq)) reply(q, seq, RES_UNAVAILABLE);
      return;
    }
    held.set(q.slot, { name: q.name, key, mode, token: grant.token });
    // Cancelled while the acquisition was on its way: the requester gave up, give it back.
    if (!current(q, seq)) await giveBack(q.slot);
    else {
      // Another process waits already (an engine that knows without I/O says so): the grant starts wanted.
      const wanted = engine.othersWaiting(key) === true;
      reply(q, seq, RES_GRANTED | (grant.abandoned ? RES_DIED : 0) | (wanted ? RES_WANTED : 0), grant.token);
    }
  } catch (err) {
    if (abort.signal.aborted) return; // the cancel was answered already
    debug('cluster acquisition of %s failed: %s', key, (err as Error).message);
    if (current(q, seq)) reply(q, seq, errorResult(err));
  }
}

/** Give back what this process holds of the slot (idempotent). */
async function giveBack(slot: number, abandoned = false): Promise<void> {
  const grant = held.get(slot);
  if (grant === undefined) return;
  held.delete(slot);
  await engine.release(grant.key, grant.mode, abandoned).catch((err: Error) => {
    // The connection is gone or going: the server lets go of its locks with it.
    debug('cluster release of %s failed: %s', grant.key, err.message);
  });
}

async function release(q: RequestQueue, seq: number, op: number): Promise<void> {
  const grant = held.get(q.slot);
  try {
    if (grant !== undefined && (op & F_KEEP) !== 0 && !(await engine.othersWaiting(grant.key))) {
      q.seat!.releasedIfReleasing(true);
      reply(q, seq, RES_RELEASED);
      return;
    }
  } catch (err) {
    debug('cluster check of waiters on %s failed: %s', q.name, (err as Error).message);
  }
  await giveBack(q.slot, (op & F_ABANDONED) !== 0);
  q.seat!.releasedIfReleasing(false);
  reply(q, seq, RES_RELEASED);
}

/** A grant this process holds that no queue uses any more (a release lost to a thread's death): give it back. */
async function sweep(q: RequestQueue): Promise<void> {
  if (held.has(q.slot) && q.seat!.state === 'none') await giveBack(q.slot);
}

/** The process exits (cluster.ts clusterExit): the engine finishes and closes; then the answer. */
async function close(q: RequestQueue, seq: number): Promise<void> {
  await engine.close?.().catch((err: Error) => debug('cluster engine close failed: %s', err.message));
  reply(q, seq, RES_RELEASED);
}

function run(q: RequestQueue, work: (abort: AbortController) => Promise<void>, abortable = false): void {
  const abort = abortable ? new AbortController() : undefined;
  inflight.set(q.slot, {
    abort,
    done: work(abort!).finally(() => {
      inflight.delete(q.slot);
      helper.ring(); // a request that came meanwhile is read now
    }),
  });
}

/** One pass over the mailboxes; returns ms until a lingering grant is due to go back. */
function serve(sweeping: boolean): number {
  let due = SWEEP_MS;
  for (const q of table.queues()) {
    const seat = q.seat!, until = seat.lingersUntil;
    if (until !== 0) {
      // A grant nobody local uses (the cohort's linger): back to the server once it has lingered long enough.
      const now = performance.timeOrigin + performance.now();
      if (now >= until) seat.releaseIfIdle(now);
      else due = Math.min(due, until - now);
    }
    const { seq, op } = seat.mailbox.request(), fresh = seq !== 0 && handled.get(q.slot) !== seq;
    if (fresh && (op & OP_MASK) === OP_CANCEL) {
      // At once, whatever is on its way for the name: the requester waits for nothing else.
      handled.set(q.slot, seq);
      inflight.get(q.slot)?.abort?.abort(new Error('cancelled'));
      reply(q, seq, RES_CANCELLED);
      // A grant answered just before the cancel came: nobody will take it up, give it back now.
      if (held.has(q.slot) && !inflight.has(q.slot)) run(q, () => giveBack(q.slot));
      continue;
    }
    if (inflight.has(q.slot)) continue;
    if (fresh) {
      handled.set(q.slot, seq);
      if ((op & OP_MASK) === OP_RELEASE) run(q, () => release(q, seq, op));
      else if ((op & OP_MASK) === OP_CLOSE && q.name === CONTROL_NAME) run(q, () => close(q, seq));
      // Already ours (a thread of ours died between getting it and telling the queue): give it back first.
      else run(q, async (abort) => {
        await giveBack(q.slot);
        await acquire(q, seq, op, abort);
      }, true);
    } else if (sweeping && held.has(q.slot)) {
      run(q, () => sweep(q));
    }
  }
  return due;
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
let lastSweep = performance.now();
for (;;) {
  const bell = helper.bell;
  const sweeping = performance.now() - lastSweep >= SWEEP_MS;
  if (sweeping) lastSweep = performance.now();
  const due = serve(sweeping);
  await helper.sleep(bell, due);
}
