/**
 * The host tier: locks shared by every process of a machine, reached
 * through this process's host table (a gated QueueTable). A request first
 * queues among the threads of its process; only the head of a name's queue
 * talks to the backend (the escalator, below), and once the process holds
 * the host lock it passes among the process's requests without a round
 * trip, as the cohort policy says (lock cohorting: Dice, Marathe, Shavit,
 * "Lock Cohorting", 2012). The queue and this tier meet only through the
 * seat (atomics/queue/outer.ts).
 *
 * Configuration, read at first use in each thread (workers inherit it):
 *   LATCHKEY_BACKEND  'file' (default) or 'sqlite'
 *   LATCHKEY_DIR      the lock directory (default $TMPDIR/latchkey-<uid>);
 *                     the SQLite database is <dir>/locks.db
 *
 * Waiting for another process: the escalator queues at the backend and
 * parks on its own FIFO (backend.ts Waiter): an async escalator in the
 * FIFO's libuv read callback (a grant message is taken there), a blocking
 * lockSync() in readSync(2), which the lease keeper ticks every POLL_MS and
 * at the deadline. The releasing process writes one message to exactly the
 * next waiter's FIFO: no keeper, no inotify, no poll on the wake path. A
 * waiter also looks every POLL_MS, for a holder that died.
 *
 * Nothing here runs at import: the table is born, the backend opened and
 * the keeper started by the first host request (src/process.ts). The first
 * grant does not wait for the keeper: the thread that got it renews the
 * process's leases until the keeper runs.
 */
import { BroadcastChannel, getEnvironmentData, threadId } from 'node:worker_threads';
import { join } from 'node:path';
import { HELPER_RUNNING, QueueTable } from '../../atomics/queue/table.js';
import type { CohortPolicy } from '../../atomics/queue/word.js';
import type { RequestQueue } from '../../atomics/queue/queue.js';
import type { OuterLock, OuterOutcome, OuterRequest, OuterSeat } from '../../atomics/queue/outer.js';
import type { Geometry } from '../../atomics/memory.js';
import type { Backend, CompromiseReason, Grant, HostLockEntry, Waiter } from './backend.js';
import { FileBackend } from './file.js';
import { SqliteBackend } from './sqlite.js';
import { me, monotonicMs, wallClock } from '../identity.js';
import { type HelperSpec, ensureHelper } from '../helper-threads.js';
import { storeKey, nameOfStoreKey } from '../keys.js';
import { ERR_LOCK_BACKEND, ERR_LOCK_TIMEOUT, abortErrorFor } from '../../errors.js';
import { debug, hostEvent, hostObserved } from '../../observe.js';
import { announceLoss, announceSteal } from '../../loss.js';

/** Host leases, ms, unless a request says otherwise (`ttl`). */
export const kDefaultTtl = 10_000;

/** Where every thread finds the process's host table (worker_threads environment data). */
export const HOST_TABLE_KEY = 'latchkey:host-table';
/** The host table's shape: 1024 names held or waited for at a time, 4096 requests. */
export const kHostGeometry: Geometry = { slots: 1024, threads: 256, requests: 4096, gated: true };

/**
 * How a host grant is shared by the process's threads (word.ts CohortPolicy).
 *
 * Fairness between processes: waiters queue FIFO at the backend, and a
 * release hands the lock to the oldest. A process keeps a grant for its own
 * requests for a turn: up to 64 local grants or 20 ms (a request of one
 * thread made right after its release re-takes the lingering grant with no
 * I/O, word.ts "Lingering"), then the lock goes to the next process in
 * line; a grant nobody uses lingers 0.5 ms while nobody else waits, and
 * goes back as soon as the keeper looks when another process waits. A
 * waiting process so waits at most (processes ahead) × (a turn + one
 * hand-over), and a one-thread loop of short sections gets 64 of them per
 * hand-over (~1 ms of passes here) instead of one.
 *
 * Why a 20 ms turn, not 1–5 ms: measured on 2 busy cores (load 5–13), the 2
 * processes × 4 threads cohort made ~4 passes per hand-over with a 5 ms turn
 * (a pass between parked threads costs a wake-up, and a hand-over between
 * processes 0.6–1 ms); the 4 × 250 one-thread loops are bounded by their
 * 64 passes, not by the time (1.7–3.1 k ops/s with turns of 1, 2, 5 and
 * 20 ms alike).
 */
export const kHostCohort: CohortPolicy = Object.freeze({ turnPasses: 64, turnMs: 20, lingerMs: 0.5 });

/** How often the keeper ticks a blocked lockSync() (it looks for a dead holder), and the escalator's poll. */
export const POLL_MS = 100;
/** Where lockSync() waiters ask the lease keeper for ticks on their FIFO. */
export const TICK_CHANNEL = 'latchkey:host-ticks';

/** A blocked lockSync()'s request for ticks: on its FIFO every POLL_MS, and at `deadline` (epoch ms). */
export interface TickRequest {
  readonly id: string;
  readonly fifo: string;
  readonly deadline: number;
  readonly done?: boolean;
}

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

const keeperRunning = () => hostTable().helper.state === HELPER_RUNNING;

/**
 * One escalation: the head of a name's queue takes the host lock, or queues
 * for it at the backend and looks again after each wake-up. look() is
 * written once for the blocking and the async driver (below).
 */
class Escalation {
  readonly since = monotonicMs();
  readonly #key: string;
  waiter: Waiter | null = null;

  constructor(readonly seat: OuterSeat, readonly req: OuterRequest) {
    this.#key = storeKey(seat.name);
  }

  /** One look: an outcome, or the ms to park on the waiter's FIFO before the next (0: look again now). */
  look(): OuterOutcome | number {
    const { seat, req } = this;
    if (!req.steal && seat.stealerAhead) return this.end({ gaveUp: 'stood-down' });
    let r: Grant | number | 'restart';
    try {
      ensureHelper(keeperSpec, hostTable().helper); // it renews the lease: a grant nobody would renew is refused
      if (this.waiter === null) {
        const a = hostBackend().acquire({ name: this.#key, mode: req.mode, ttl: req.ttl, steal: req.steal, once: req.once, since: this.since });
        if ('unavailable' in a) return this.end({ gaveUp: 'unavailable' });
        if ('later' in a) {
          r = Math.max(1, a.later); // the store asks us to come back (a fresh store's grace)
        } else if ('queued' in a) {
          this.waiter = a.queued;
          if (hostObserved()) hostEvent('wait', seat.name, { retryInMs: POLL_MS });
          r = 0; // queued: look at once (a release between our look and our queueing is seen there)
        } else {
          r = a.granted;
        }
      } else {
        r = this.waiter.step();
        if (r === 'restart') {
          this.waiter = null;
          r = 0;
        }
      }
    } catch (err) {
      return this.end({ failed: err });
    }
    if (typeof r === 'object') return this.granted(r);
    if (r > 0 && performance.now() >= req.wait.deadline) return this.end({ failed: new ERR_LOCK_TIMEOUT(JSON.stringify(seat.name), req.wait.timeout) });
    return r;
  }

  granted(g: Grant): OuterOutcome {
    const { seat, req } = this;
    this.waiter = null;
    renewUntilKeeperRuns(req.ttl);
    if (g.previousDied) hostEvent('takeover', seat.name, { token: g.token });
    else if (hostObserved()) hostEvent('grant', seat.name, { token: g.token, mode: req.mode });
    let wanted = false;
    try {
      wanted = hostBackend().waiting(this.#key);
    } catch {
      // asked again at the release
    }
    return { granted: { token: g.token, expires: g.expires, abandoned: g.previousDied, wanted } };
  }

  /** Leave without the lock: leave the backend's queue (a lock handed meanwhile goes on). */
  end(outcome: OuterOutcome): OuterOutcome {
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) {
      try {
        w.leave();
      } catch (err) {
        debug('could not leave the queue of %s: %s', this.seat.name, (err as Error).message);
      }
    }
    return outcome;
  }
}

/** Park an async escalation on its FIFO: a message (a grant taken in the read callback), `ms`, the abort, or a local stealer (the bell). */
function park(e: Escalation, ms: number, signal: AbortSignal | undefined): Promise<Grant | null> {
  const w = e.waiter!, seat = e.seat, bell = seat.bell;
  return new Promise((resolve) => {
    let done = false, rang = false;
    const finish = (g: Grant | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      w.disarm();
      // Our own wait on the bell ends too (nobody else sleeps on a host name's bell).
      if (!rang) seat.ring();
      resolve(g);
    };
    const onAbort = () => finish(null);
    const timer = setTimeout(() => finish(null), ms);
    signal?.addEventListener('abort', onAbort, { once: true });
    // A stealer of this process that queues behind us rings the bell: we stand down at once.
    void seat.sleepAsync(bell, performance.now() + ms + 1000, undefined).then(() => {
      rang = true;
      finish(null);
    });
    w.arm(finish);
  });
}

/** Sleep `ms` (ref'd: a waiting request keeps its thread alive), or until `signal` aborts. */
function sleepUnless(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

async function acquireAsync(seat: OuterSeat, req: OuterRequest): Promise<OuterOutcome> {
  const e = new Escalation(seat, req), signal = req.wait.signal;
  for (;;) {
    // The answer first: a grant that came with the abort is taken, and the front door gives it back.
    const s = e.look();
    if (typeof s !== 'number') return s;
    if (signal?.aborted) return e.end({ failed: abortErrorFor(signal) });
    if (s <= 0) continue;
    const ms = Math.max(1, Math.min(s, req.wait.deadline - performance.now()));
    if (e.waiter === null) {
      await sleepUnless(ms, signal);
      continue;
    }
    const g = await park(e, ms, signal);
    if (g !== null) return e.granted(g);
  }
}

let ticker: BroadcastChannel | undefined;
let tickIds = 0;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function acquireSync(seat: OuterSeat, req: OuterRequest): OuterOutcome {
  const e = new Escalation(seat, req);
  let ticking: { id: string; fifo: string } | null = null;
  const stopTicks = () => {
    if (ticking === null) return;
    ticker!.postMessage({ id: ticking.id, fifo: ticking.fifo, deadline: 0, done: true } satisfies TickRequest);
    ticking = null;
  };
  try {
    for (;;) {
      const s = e.look();
      if (typeof s !== 'number') return s;
      if (s <= 0) continue;
      const w = e.waiter;
      if (w === null || s < POLL_MS / 4) {
        // A short sleep (a busy store, a fresh store's grace): no tick needed.
        Atomics.wait(sleeper, 0, 0, Math.max(1, Math.min(s, req.wait.deadline - performance.now())));
        w?.poll();
        continue;
      }
      if (!keeperRunning() || w.fifo === '') {
        // The keeper (which ticks a blocked read) is not running yet: look every millisecond.
        Atomics.wait(sleeper, 0, 0, 1);
        w.poll();
        continue;
      }
      if (ticking === null || ticking.fifo !== w.fifo) {
        stopTicks();
        ticker ??= new BroadcastChannel(TICK_CHANNEL);
        ticker.unref();
        ticking = { id: `${process.pid}:${threadId}:${tickIds++}`, fifo: w.fifo };
        const deadline = req.wait.deadline === Infinity ? Infinity : wallClock() + (req.wait.deadline - performance.now());
        ticker.postMessage({ id: ticking.id, fifo: w.fifo, deadline } satisfies TickRequest);
      }
      w.readBlocking();
    }
  } finally {
    stopTicks();
  }
}

/** The host tier's side of the seam (atomics/queue/outer.ts). */
export const hostOuter: OuterLock = {
  cohort: kHostCohort,
  acquireSync,
  acquire: acquireAsync,
  release: releaseOuter,
  giveBack(name, abandoned) {
    hostBackend().release(storeKey(name), null, abandoned);
  },
};

/**
 * As the name's releaser: keep the host lock with a fresh budget when local
 * requests wait for it and no other process does, else give it back (to the
 * next process in line, in place).
 */
function releaseOuter(seat: OuterSeat): void {
  const key = storeKey(seat.name), keep = seat.worthKeeping;
  let others = true;
  try {
    if (keep) others = hostBackend().waiting(key);
  } catch {
    // the store cannot say: give it back, the others may wait
  }
  if (keep && !others) {
    seat.kept();
    return;
  }
  try {
    // A local holder died holding it and nobody local came next: the next process is told.
    hostBackend().release(key, seat.lease.token, seat.abandonedNext);
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
      r = hostBackend().renew(storeKey(seat.name), token, ttl);
    } catch (err) {
      if (expires > now) return null; // try again next round while the lease lasts
      r = { lost: 'renew-failed' as const, detail: (err as Error).message };
    }
    if ('expires' in r) {
      if (hostObserved()) hostEvent('renew', seat.name, { token, expires: r.expires });
      return { expires: r.expires };
    }
    // After its lease ran out: expired. Before: another holder in its place is a steal; a marker gone
    // (the store removed, a file deleted by something other than latchkey) is said as such.
    const reason = r.removed === true || r.lost === 'renew-failed' ? r.lost
      : expires <= now ? 'expired' : r.lost === 'owner-changed' ? 'stolen' : r.lost;
    lost = { reason, detail: r.detail };
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
  if (bridging !== undefined || keeperRunning()) return;
  bridging = setTimeout(() => {
    bridging = undefined;
    if (keeperRunning()) return;
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
  const entries: HostLockEntry[] = hostBackend().query();
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
 * (src/process.ts installs it; a worker's own backend only closes its files
 * and gives its FIFOs back.)
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
      names.push(key);
      if (seat.state !== 'none') hostBackend().release(key, null, false);
    }
    hostBackend().close(names);
  } catch (err) {
    debug('could not clean up host locks at exit: %s', (err as Error).message);
  }
}

const hostTableUsed = (buffer: SharedArrayBuffer) => QueueTable.namesIn(buffer) > 0;
