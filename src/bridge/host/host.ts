/**
 * The host tier: locks shared by every process of a machine, reached
 * through this process's host table (a gated request-queue table,
 * atomics/queue/word.ts). A request first queues among the threads of its
 * process; only the head of a name's queue talks to the backend (the
 * escalator, below), and once the process holds the host lock it passes
 * among the process's requests without a round trip, up to the cohort
 * budget (lock cohorting: Dice, Marathe, Shavit, "Lock Cohorting", 2012).
 *
 * Configuration, read at first use in each thread (workers inherit it):
 *   LATCHKEY_BACKEND  'file' (default) or 'sqlite'
 *   LATCHKEY_DIR      the lock directory (default $TMPDIR/latchkey-<uid>);
 *                     the SQLite database is <dir>/locks.db
 *
 * Waiting for another process: the escalator makes an attempt, then sleeps
 * on the name's outer bell (slot S_BELL) until the lease keeper (keeper-thread.ts),
 * which watches the backend, rings it on a change, or until the backend's
 * retryAt (a lease running out, a liveness poll), or its deadline.
 */
import { isMainThread } from 'node:worker_threads';
import { join } from 'node:path';
import { LockTable, createBuffer, shareWithProcess } from '../../atomics/table.js';
import { H_KEEPER_BELL, H_NAMED, S_BELL, TABLE_GATED, slotBase } from '../../atomics/layout.js';
import type { Wait } from '../../atomics/options.js';
import { type LockMode, type OuterLock, type OuterOutcome, type RequestQueue, setOuterLock } from '../../atomics/queue/queue.js';
import { setOuterRecovery } from '../../atomics/queue/recovery.js';
import {
  ABANDONED_NEXT, A_FLAGS, A_HEAD, A_OUTER, A_OUTER_EXPIRES, A_OUTER_FLAGS, A_OUTER_MODE, A_OUTER_NODE, A_OUTER_TOKEN, A_OUTER_TTL,
  A_OUTER_WAITERS, MODE_EXCLUSIVE, MODE_MASK, MODE_SHARED, N_MODE, OUTER_ACQUIRING, OUTER_COMPROMISED,
  OUTER_HELD, OUTER_RELEASING, heldGrants, lingerDue, mayKeepOuter, nodeAt, stealerWaiting,
} from '../../atomics/queue/word.js';
import { waitAsyncUntil, remaining } from '../../atomics/wait.js';
import type { Attempt, Backend, CompromiseReason, HostLockEntry, Renewal } from './backend.js';
import { FileBackend } from './file.js';
import { SqliteBackend } from './sqlite.js';
import { me, monotonicMs, wallClock } from '../identity.js';
import { HOST_TABLE_KEY, ensureKeeper } from '../helper-threads.js';
import { ERR_LOCK_BACKEND, ERR_LOCK_TIMEOUT, abortErrorFor } from '../../errors.js';
import { debug, hostEvent, hostObserved } from '../../observe.js';
import { type LostGrants, broadcastLoss } from '../../loss.js';


/** Host leases, ms, unless a request says otherwise (`ttl`). */
export const kDefaultTtl = 10_000;

const kSlots = 1024;
const kThreads = 256;
const kRequests = 4096;

const hostBuffer = shareWithProcess(HOST_TABLE_KEY, () => createBuffer(kSlots, kThreads, kRequests, TABLE_GATED));

let table: LockTable | undefined;
let backend: Backend | undefined;

/** This thread's view of the process's host table; sets up the outer lock the first time. */
export function hostTable(): LockTable {
  if (table !== undefined) return table;
  if (hostBuffer === undefined) {
    throw new ERR_LOCK_BACKEND('host', 'this worker started before latchkey was imported in the main thread');
  }
  table = LockTable.attach(hostBuffer);
  const id = LockTable.unsafeExposeInternals(table).core.id;
  setOuterLock(id, outerLock);
  setOuterRecovery(id, { giveBack: (_t, slot, abandoned) => giveBack(slot, abandoned) });
  return table;
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

/** The host-scope queue of `name` (a front-door key). */
export function hostQueue(name: string): RequestQueue {
  const t = hostTable();
  hostBackend(); // a misconfiguration fails the request, not a later escalation
  return t.queue(name);
}

const bellOf = (q: RequestQueue) => slotBase(q.pool.threads, q.slot) + S_BELL;
const f64 = (q: RequestQueue, word: number) => q.pool.f64[(q.anchor + word) >> 1];

/**
 * One escalation: the attempts of the head of a name's queue to take the
 * host lock, written once for the blocking and the async driver. step()
 * returns an outcome, or the bell value and deadline to sleep on.
 */
class Escalation {
  readonly since = monotonicMs();
  #watching = false;

  constructor(
    readonly q: RequestQueue, readonly mode: LockMode, readonly wait: Wait, readonly ttl: number,
    readonly once: boolean, readonly steal: boolean,
  ) {}

  step(): OuterOutcome | { bell: number; until: number } {
    const { q } = this, w = q.pool.words, name = q.name as string;
    const self = Atomics.load(w, q.anchor + A_OUTER_NODE) - 1;
    if (!this.steal && stealerWaiting(q.pool, q.anchor, self)) return this.end({ gaveUp: 'stood-down' });
    // Read the bell before the attempt: a release after the attempt rings a new value.
    const bell = Atomics.load(w, bellOf(q));
    let r: Attempt;
    try {
      const result = hostBackend().attempt({ name, mode: this.mode, ttl: this.ttl, steal: this.steal, wait: !this.once, since: this.since });
      if (result instanceof Promise) throw new ERR_LOCK_BACKEND(hostBackend().kind, 'it answers asynchronously, and this thread waits synchronously');
      r = result;
    } catch (err) {
      return this.end({ failed: err });
    }
    if (r.granted) {
      this.#unwatch();
      ensureKeeper(w); // it renews the lease, and lets the grant linger
      if (r.previousDied) hostEvent('takeover', name, { token: r.token });
      else if (hostObserved()) hostEvent('grant', name, { token: r.token, mode: this.mode });
      return { granted: { token: r.token, expires: r.expires, previousDied: r.previousDied } };
    }
    if (this.once) return this.end({ gaveUp: 'unavailable' });
    if (performance.now() >= this.wait.deadline) return this.end({ failed: new ERR_LOCK_TIMEOUT(JSON.stringify(name), this.wait.timeout) });
    if (!this.#watching && hostObserved()) hostEvent('wait', name, { retryInMs: r.retryAt - wallClock() });
    this.#watch();
    return { bell, until: Math.min(this.wait.deadline, performance.now() + Math.max(0, r.retryAt - wallClock())) };
  }

  /** Leave without the lock: withdraw what the attempts published. */
  end(outcome: OuterOutcome): OuterOutcome {
    this.#unwatch();
    try {
      void hostBackend().withdraw(this.q.name as string);
    } catch (err) {
      debug('could not withdraw the wait for %s: %s', this.q.name, (err as Error).message);
    }
    return outcome;
  }

  /** Ask the lease keeper to watch the name and ring its bell. */
  #watch(): void {
    if (this.#watching) return;
    this.#watching = true;
    const w = this.q.pool.words;
    Atomics.add(w, this.q.anchor + A_OUTER_WAITERS, 1);
    Atomics.add(w, H_KEEPER_BELL, 1);
    Atomics.notify(w, H_KEEPER_BELL);
    ensureKeeper(w);
  }

  #unwatch(): void {
    if (!this.#watching) return;
    this.#watching = false;
    Atomics.sub(this.q.pool.words, this.q.anchor + A_OUTER_WAITERS, 1);
  }
}

const outerLock: OuterLock = {
  acquireSync(q, mode, wait, ttl, once, steal) {
    const e = new Escalation(q, mode, wait, ttl, once, steal), w = q.pool.words;
    for (;;) {
      const s = e.step();
      if (!('bell' in s)) return s;
      Atomics.wait(w, bellOf(q), s.bell, remaining(s.until));
    }
  },
  async acquire(q, mode, wait, ttl, once, steal) {
    const e = new Escalation(q, mode, wait, ttl, once, steal), w = q.pool.words, { signal } = wait;
    for (;;) {
      if (signal?.aborted) return e.end({ failed: abortErrorFor(signal) });
      const s = e.step();
      if (!('bell' in s)) return s;
      await waitAsyncUntil(w, bellOf(q), s.bell, s.until, signal);
    }
  },
  release: releaseOuter,
};

/**
 * As A_OUTER_ACTOR (A_OUTER is RELEASING): keep the host lock with a fresh
 * budget when local requests wait for it and no other process does, else
 * give it back.
 */
function releaseOuter(q: RequestQueue): void {
  const w = q.pool.words, a = q.anchor, name = q.name as string, b = hostBackend();
  const head = w[a + A_HEAD], compromised = (w[a + A_OUTER_FLAGS] & OUTER_COMPROMISED) !== 0;
  const covers = head !== 0 && (w[a + A_OUTER_MODE] === MODE_EXCLUSIVE || (w[nodeAt(q.pool, head - 1) + N_MODE] & MODE_MASK) === MODE_SHARED);
  try {
    if (covers && !compromised && mayKeepOuter(q.pool, a) && b.othersWaiting(name) === false) {
      q.outerKept();
      return;
    }
    // A local holder died holding it and nobody local came next: the next process is told.
    void b.release(name, f64(q, A_OUTER_TOKEN), (w[a + A_FLAGS] & ABANDONED_NEXT) !== 0);
    if (covers) hostEvent('handoff', name, { token: f64(q, A_OUTER_TOKEN) }); // local requests wait: others go first
  } catch (err) {
    // The lease runs out by itself; the others take it then.
    debug('could not give back host lock %s: %s', name, (err as Error).message);
  }
  q.outerReleased();
}

/** Recovery (a thread died in the way): give back whatever this process holds of the slot's name. */
function giveBack(slot: number, abandoned: boolean): void {
  const t = hostTable(), name = t.nameAt(slot);
  if (name === null) return;
  const b = hostBackend();
  void b.withdraw(name);
  void b.release(name, null, abandoned);
}

// --- the lease keeper's work (keeper-thread.ts runs it in its own thread) ---------------

/**
 * Loss of host grants, told to their holders (signals, promises,
 * onCompromised). The front door sets it in the threads that hold locks;
 * elsewhere (the lease keeper) the news goes out on the loss channel.
 */
export type LossHook = (tableId: string, nodes: number[], reason: CompromiseReason, detail: string, grants: LostGrants) => void;
let lossHook: LossHook = (table, nodes, reason, detail, grants) => broadcastLoss({ table, nodes, reason, detail, grants });
export function onHostLoss(hook: LossHook): void {
  lossHook = hook;
}

/**
 * Renew the host grant of `q` if `force` or its lease is a third gone;
 * report it lost if the backend says so. Under the queue's latch: the grant
 * cannot be given back (or replaced) meanwhile.
 */
export function renewOuter(q: RequestQueue, force: boolean): void {
  let lost: { nodes: number[]; tokens: number[]; reason: CompromiseReason; detail: string } | undefined;
  q.withLatch(() => {
    const w = q.pool.words, a = q.anchor;
    if (w[a + A_OUTER] !== OUTER_HELD || (w[a + A_OUTER_FLAGS] & OUTER_COMPROMISED) !== 0) return { value: undefined, action: 0 };
    const ttl = w[a + A_OUTER_TTL], expires = f64(q, A_OUTER_EXPIRES), now = wallClock();
    if (!force && expires - now > (ttl * 2) / 3) return { value: undefined, action: 0 };
    let r: Renewal;
    try {
      const result = hostBackend().renew(q.name as string, f64(q, A_OUTER_TOKEN), ttl);
      if (result instanceof Promise) return { value: undefined, action: 0 }; // networked backends renew in their own way
      r = result;
    } catch (err) {
      if (expires > now) return { value: undefined, action: 0 }; // try again next round while the lease lasts
      r = { lost: 'renew-failed', detail: (err as Error).message };
    }
    if ('expires' in r) {
      q.pool.f64[(a + A_OUTER_EXPIRES) >> 1] = r.expires;
      if (hostObserved()) hostEvent('renew', q.name as string, { token: f64(q, A_OUTER_TOKEN), expires: r.expires });
      return { value: undefined, action: 0 };
    }
    w[a + A_OUTER_FLAGS] |= OUTER_COMPROMISED;
    // Taken before its lease ran out: a steal. After: the lease expired.
    const reason: CompromiseReason = r.lost === 'renew-failed' ? r.lost : expires > now ? 'stolen' : 'expired';
    lost = { ...heldGrants(q.pool, a), reason, detail: r.detail };
    return { value: undefined, action: 0 };
  });
  if (lost !== undefined) {
    hostEvent('lost', q.name as string, { reason: lost.reason, detail: lost.detail });
    lossHook(q.tableId, lost.nodes, lost.reason, lost.detail, { slot: q.slot, gen: q.gen, tokens: lost.tokens });
  }
}

/** Every host-scope queue of the process, with whether it holds the host lock and whether an escalator waits. */
export function* hostQueues(): Generator<{ q: RequestQueue; held: boolean; waited: boolean }> {
  for (const q of hostTable().queues()) {
    const w = q.pool.words, outer = Atomics.load(w, q.anchor + A_OUTER);
    yield { q, held: outer === OUTER_HELD, waited: Atomics.load(w, q.anchor + A_OUTER_WAITERS) > 0 || outer === OUTER_ACQUIRING };
  }
}

// --- query and exit ------------------------------------------------------------

export interface HostInfo {
  name: string;
  mode: LockMode;
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
    (e.state === 'held' ? held : pending).push({ name: e.name, mode: e.mode, clientId: `${e.pid}`, pid: e.pid, token: e.token });
  }
  const t = hostTable();
  for (const s of t.stats()) {
    if (s.kind !== 'queue' || s.name === null) continue;
    const snap = t.queue(s.name).snapshot();
    for (const e of snap.held) held.push({ name: s.name, mode: e.mode, clientId: `${process.pid}:${e.client}`, pid: process.pid, token: e.token });
    for (const e of snap.pending) pending.push({ name: s.name, mode: e.mode, clientId: `${process.pid}:${e.client}`, pid: process.pid, token: 0 });
  }
  return { held, pending };
}

/**
 * Give back every host lock that lingers (held, serving nobody): when the
 * keeper, which otherwise does it, has stopped.
 */
export function releaseLingering(): void {
  for (const { q, held } of hostQueues()) {
    if (held) q.withLatch(() => ({ value: undefined, action: lingerDue(q.pool, q.anchor, q.tid, Infinity) }));
  }
}

// A worker's backend files are the process's: close them when it exits.
if (!isMainThread) process.once('exit', () => backend?.close());

// At exit the process gives back every host lock it holds and removes its
// records: the others need not wait for the pid check to see it gone.
if (isMainThread) {
  process.on('exit', () => {
    // No name in the table: no thread of this process used a host lock.
    if (hostBuffer === undefined || new Int32Array(hostBuffer)[H_NAMED] === 0) return;
    try {
      const names: string[] = [];
      for (const { q } of hostQueues()) {
        const name = q.name as string, outer = Atomics.load(q.pool.words, q.anchor + A_OUTER);
        names.push(name);
        if (outer === OUTER_HELD || outer === OUTER_RELEASING || outer === OUTER_ACQUIRING) void hostBackend().release(name, null, false);
      }
      hostBackend().close(names);
    } catch (err) {
      debug('could not clean up host locks at exit: %s', (err as Error).message);
    }
  });
}
