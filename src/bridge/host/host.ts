/**
 * The host tier: locks shared by every process of a machine, reached
 * through this process's host table (a gated QueueTable). A request first
 * queues among the threads of its process; only the head of a name's queue
 * talks to the backend (the escalator, below), and once the process holds
 * the host lock it passes among the process's requests without a round
 * trip, up to the cohort budget (lock cohorting: Dice, Marathe, Shavit,
 * "Lock Cohorting", 2012). The queue and this tier meet only through the
 * seat (atomics/queue/outer.ts).
 *
 * Configuration, read at first use in each thread (workers inherit it):
 *   LATCHKEY_BACKEND  'file' (default) or 'sqlite'
 *   LATCHKEY_DIR      the lock directory (default $TMPDIR/latchkey-<uid>);
 *                     the SQLite database is <dir>/locks.db
 *
 * Waiting for another process: the escalator makes an attempt, then sleeps
 * on the name's outer bell until the lease keeper (keeper-thread.ts), which
 * watches the backend, rings it on a change, or until the backend's
 * retryAt (a lease running out, a liveness poll), or its deadline.
 *
 * Nothing here runs at import: the table is born, the backend opened and
 * the keeper started by the first host request (src/process.ts).
 */
import { getEnvironmentData } from 'node:worker_threads';
import { join } from 'node:path';
import { HELPER_RUNNING, QueueTable } from '../../atomics/queue/table.js';
import { kCohort } from '../../atomics/queue/word.js';
import type { RequestQueue } from '../../atomics/queue/queue.js';
import type { OuterLock, OuterOutcome, OuterRequest, OuterSeat } from '../../atomics/queue/outer.js';
import type { Geometry } from '../../atomics/memory.js';
import type { Attempt, Backend, CompromiseReason, HostLockEntry } from './backend.js';
import { FileBackend } from './file.js';
import { SqliteBackend } from './sqlite.js';
import { me, monotonicMs, wallClock } from '../identity.js';
import { type HelperSpec, ensureHelper } from '../helper-threads.js';
import { storeKey, nameOfStoreKey } from '../keys.js';
import { ERR_LOCK_BACKEND, ERR_LOCK_TIMEOUT } from '../../errors.js';
import { debug, hostEvent, hostObserved } from '../../observe.js';
import { announceLoss, announceSteal } from '../../loss.js';
import { type Escalating, escalate, escalateSync } from '../escalation.js';

/** Host leases, ms, unless a request says otherwise (`ttl`). */
export const kDefaultTtl = 10_000;

/** Where every thread finds the process's host table (worker_threads environment data). */
export const HOST_TABLE_KEY = 'latchkey:host-table';
/** The host table's shape: 1024 names held or waited for at a time, 4096 requests. */
export const kHostGeometry: Geometry = { slots: 1024, threads: 256, requests: 4096, gated: true };

/** The lease keeper thread (helper-threads.ts). */
export const keeperSpec: HelperSpec = {
  key: HOST_TABLE_KEY,
  script: './host/keeper-thread.js',
  title: 'lease keeper',
  backend: 'host',
  onExit: () => releaseLingering(),
  onFailure: (message) => loseEverything('renew-failed', `the lease keeper thread failed, so nobody renews the lease: ${message}`),
};

let table: QueueTable | undefined;
let backend: Backend | undefined;

/** This thread's view of the process's host table (born by the first thread that asks). */
export function hostTable(): QueueTable {
  if (table !== undefined) return table;
  const buffer = getEnvironmentData(HOST_TABLE_KEY);
  if (!(buffer instanceof SharedArrayBuffer)) {
    throw new ERR_LOCK_BACKEND('host', 'this worker started before latchkey was imported in the main thread');
  }
  return (table = QueueTable.attach(buffer, { outer: hostOuter, onStolen: announceSteal }));
}

/** This thread's backend, as LATCHKEY_BACKEND and LATCHKEY_DIR say. */
export function hostBackend(): Backend {
  if (backend !== undefined) return backend;
  const kind = process.env.LATCHKEY_BACKEND || 'file', dir = process.env.LATCHKEY_DIR || undefined;
  if (kind === 'file') backend = new FileBackend(dir);
  else if (kind === 'sqlite') backend = new SqliteBackend(dir === undefined ? undefined : join(dir, 'locks.db'));
  else throw new ERR_LOCK_BACKEND(kind, "LATCHKEY_BACKEND must be 'file' or 'sqlite'");
  return backend!;
}

/** The host-scope queue of `name`. */
export function hostQueue(name: string): RequestQueue {
  const t = hostTable();
  hostBackend(); // a misconfiguration fails the request, not a later escalation
  return t.queue(name);
}

/**
 * One escalation: the attempts of the head of a name's queue to take the
 * host lock, written once for the blocking and the async driver. step()
 * returns an outcome, or the bell value and deadline to sleep on.
 */
class Escalation implements Escalating {
  readonly since = monotonicMs();
  readonly #key: string;
  #watching = false;

  constructor(readonly seat: OuterSeat, readonly req: OuterRequest) {
    this.#key = storeKey(seat.name);
  }

  step(): OuterOutcome | { bell: number; until: number } {
    const { seat, req } = this, key = this.#key;
    if (!req.steal && seat.stealerAhead) return this.end({ gaveUp: 'stood-down' });
    // Read the bell before the attempt: a release after the attempt rings a new value.
    const bell = seat.bell;
    let r: Attempt;
    try {
      ensureHelper(keeperSpec, hostTable().helper); // it renews the lease and watches: a grant nobody would renew is refused
      const result = hostBackend().attempt({ name: key, mode: req.mode, ttl: req.ttl, steal: req.steal, wait: !req.once, since: this.since });
      if (result instanceof Promise) throw new ERR_LOCK_BACKEND(hostBackend().kind, 'it answers asynchronously, and this thread waits synchronously');
      r = result;
    } catch (err) {
      return this.end({ failed: err });
    }
    if (r.granted) {
      this.#unwatch();
      renewUntilKeeperRuns(req.ttl);
      if (r.previousDied) hostEvent('takeover', seat.name, { token: r.token });
      else if (hostObserved()) hostEvent('grant', seat.name, { token: r.token, mode: req.mode });
      return { granted: { token: r.token, expires: r.expires, abandoned: r.previousDied } };
    }
    if (req.once) return this.end({ gaveUp: 'unavailable' });
    if (performance.now() >= req.wait.deadline) return this.end({ failed: new ERR_LOCK_TIMEOUT(JSON.stringify(seat.name), req.wait.timeout) });
    if (!this.#watching && hostObserved()) hostEvent('wait', seat.name, { retryInMs: r.retryAt - wallClock() });
    this.#watch();
    return { bell, until: Math.min(req.wait.deadline, performance.now() + Math.max(0, r.retryAt - wallClock())) };
  }

  abort(reason: unknown): OuterOutcome {
    return this.end({ failed: reason });
  }

  /** Leave without the lock: withdraw what the attempts published. */
  end(outcome: OuterOutcome): OuterOutcome {
    this.#unwatch();
    try {
      void hostBackend().withdraw(this.#key);
    } catch (err) {
      debug('could not withdraw the wait for %s: %s', this.seat.name, (err as Error).message);
    }
    return outcome;
  }

  /** Ask the lease keeper to watch the name and ring its bell. */
  #watch(): void {
    if (this.#watching) return;
    this.#watching = true;
    this.seat.watch();
    hostTable().helper.ring();
  }

  #unwatch(): void {
    if (!this.#watching) return;
    this.#watching = false;
    this.seat.unwatch();
  }
}

/** The host tier's side of the seam (atomics/queue/outer.ts). */
export const hostOuter: OuterLock = {
  cohort: kCohort,
  acquireSync: (seat, req) => escalateSync(seat, new Escalation(seat, req)),
  acquire: (seat, req) => escalate(seat, new Escalation(seat, req), req.wait.signal),
  release: releaseOuter,
  giveBack(name, abandoned) {
    const b = hostBackend(), key = storeKey(name);
    void b.withdraw(key);
    void b.release(key, null, abandoned);
  },
};

/**
 * As the name's releaser: keep the host lock with a fresh budget when local
 * requests wait for it and no other process does, else give it back.
 */
function releaseOuter(seat: OuterSeat): void {
  const key = storeKey(seat.name), b = hostBackend(), keep = seat.worthKeeping;
  try {
    if (keep && b.othersWaiting(key) === false) {
      seat.kept();
      return;
    }
    // A local holder died holding it and nobody local came next: the next process is told.
    void b.release(key, seat.lease.token, seat.abandonedNext);
    if (keep) hostEvent('handoff', seat.name, { token: seat.lease.token }); // local requests wait: others go first
  } catch (err) {
    // The lease runs out by itself; the others take it then.
    debug('could not give back host lock %s: %s', seat.name, (err as Error).message);
  }
  seat.released();
}

// --- the lease keeper's work (keeper-thread.ts runs it in its own thread) ---------------

/**
 * Renew the host grant of `seat` if `force` or its lease is a third gone;
 * tell its holders if the backend says it was lost. Under the queue's latch
 * (OuterSeat.renew): the grant cannot be given back (or replaced) meanwhile.
 */
export function renewOuter(seat: OuterSeat, force: boolean): void {
  let lost: { reason: CompromiseReason; detail: string } | undefined;
  const grants = seat.renew(({ token, ttl, expires }) => {
    const now = wallClock();
    if (!force && expires - now > (ttl * 2) / 3) return null;
    let r;
    try {
      const result = hostBackend().renew(storeKey(seat.name), token, ttl);
      if (result instanceof Promise) return null; // networked backends renew in their own way
      r = result;
    } catch (err) {
      if (expires > now) return null; // try again next round while the lease lasts
      r = { lost: 'renew-failed' as const, detail: (err as Error).message };
    }
    if ('expires' in r) {
      if (hostObserved()) hostEvent('renew', seat.name, { token, expires: r.expires });
      return { expires: r.expires };
    }
    // Taken before its lease ran out: a steal. After: the lease expired.
    lost = { reason: r.lost === 'renew-failed' ? r.lost : expires > now ? 'stolen' : 'expired', detail: r.detail };
    return { lost: true };
  });
  if (grants !== null && lost !== undefined) {
    hostEvent('lost', seat.name, { reason: lost.reason, detail: lost.detail });
    announceLoss(seat.tableId, grants.nodes, lost.reason, lost.detail, { slot: seat.slot, gen: seat.gen, tokens: grants.tokens });
  }
}

/**
 * Until the keeper thread runs (it takes tens of ms to start, more on a
 * loaded machine, and a lease may be as short as 250 ms), the thread that
 * got a grant renews the process's leases from its own event loop, as the
 * keeper would. A timer, unref'd: it never keeps the process alive, and a
 * thread blocked in its critical section simply leaves it to the keeper.
 */
let bridging: NodeJS.Timeout | undefined;
function renewUntilKeeperRuns(ttl: number): void {
  if (bridging !== undefined || hostTable().helper.state === HELPER_RUNNING) return;
  bridging = setTimeout(() => {
    bridging = undefined;
    if (hostTable().helper.state === HELPER_RUNNING) return;
    let held = false;
    for (const seat of hostSeats()) {
      if (seat.state !== 'held') continue;
      held = true;
      renewOuter(seat, false);
    }
    if (held) renewUntilKeeperRuns(ttl);
  }, Math.max(10, ttl / 6)).unref();
}

/** Every held grant is lost (the keeper failed): tell the holders, as a renewal that failed would. */
function loseEverything(reason: CompromiseReason, detail: string): void {
  if (table === undefined) return;
  for (const q of table.queues()) {
    const seat = q.seat!, grants = seat.renew(() => ({ lost: true }));
    if (grants === null) continue;
    hostEvent('lost', seat.name, { reason, detail });
    announceLoss(seat.tableId, grants.nodes, reason, detail, { slot: seat.slot, gen: seat.gen, tokens: grants.tokens });
  }
}

/** The seats of every host-scope queue of the process. */
export function* hostSeats(): Generator<OuterSeat> {
  for (const q of hostTable().queues()) yield q.seat!;
}

// --- query and exit ------------------------------------------------------------

export interface HostInfo {
  name: string;
  mode: 'exclusive' | 'shared';
  clientId: string;
  pid: number;
  token: number;
}

/** Held and pending host locks: this process's per thread, every other process's per process. */
export function hostQuery(): { held: HostInfo[]; pending: HostInfo[] } {
  const held: HostInfo[] = [], pending: HostInfo[] = [], self = me();
  const entries = hostBackend().query() as HostLockEntry[];
  for (const e of entries) {
    if (e.owner === self.id) continue;
    (e.state === 'held' ? held : pending).push({ name: nameOfStoreKey(e.name), mode: e.mode, clientId: `${e.pid}`, pid: e.pid, token: e.token });
  }
  for (const q of hostTable().queues()) {
    const snap = q.snapshot();
    for (const e of snap.held) held.push({ name: q.name, mode: e.mode, clientId: `${process.pid}:${e.client}`, pid: process.pid, token: e.token });
    for (const e of snap.pending) pending.push({ name: q.name, mode: e.mode, clientId: `${process.pid}:${e.client}`, pid: process.pid, token: 0 });
  }
  return { held, pending };
}

/** Give back every host lock that lingers (held, serving nobody): when the keeper, which otherwise does it, has stopped. */
export function releaseLingering(): void {
  if (table === undefined) return;
  for (const seat of hostSeats()) if (seat.state === 'held') seat.releaseIfIdle(Infinity);
}

/**
 * At exit the process gives back every host lock it holds and removes its
 * records: the others need not wait for the pid check to see it gone.
 * (src/process.ts installs it; a worker's own backend only closes its files.)
 */
export function hostExit(main: boolean): void {
  if (!main) {
    backend?.close();
    return;
  }
  // No host table born, or no name in it: no thread of this process used a host lock.
  const buffer = getEnvironmentData(HOST_TABLE_KEY);
  if (!(buffer instanceof SharedArrayBuffer) || !hostTableUsed(buffer)) return;
  try {
    const names: string[] = [];
    for (const seat of hostSeats()) {
      const key = storeKey(seat.name);
      const state = seat.state;
      // Its files are removed below (close: the gate too, when it links to our record): not while
      // another thread of ours is releasing it, for the same race as below.
      if (state !== 'releasing') names.push(key);
      // Releasing: another thread of ours (the keeper giving back a lingering grant, a worker's
      // unlock) is the releaser and gives it back itself. Releasing it here too raced it: both
      // saw the gate ours, one unlinked it, another process linked it, and the second unlink
      // took that process's gate away (two holders; found with bench/host's warm 4 × 250 run).
      if (state === 'none' || state === 'releasing') continue;
      // Lingering (held, serving nobody): given back the way the keeper would, under the
      // queue's latch, so that only one thread releases it.
      if (state === 'held' && seat.lingersUntil !== 0) {
        seat.releaseIfIdle(Infinity);
        if (seat.state === 'none') continue;
      }
      void hostBackend().release(key, null, false);
    }
    hostBackend().close(names);
  } catch (err) {
    debug('could not clean up host locks at exit: %s', (err as Error).message);
  }
}

const hostTableUsed = (buffer: SharedArrayBuffer) => QueueTable.namesIn(buffer) > 0;

