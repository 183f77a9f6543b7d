/**
 * The cluster tier: locks shared by every process of every machine that
 * reaches one PostgreSQL server (`LATCHKEY_PG_URL`), through this
 * process's cluster table (a gated request-queue table, as the host
 * tier's: the threads of a process share one cluster grant, cohorting).
 *
 * No requesting thread talks to the server: PostgreSQL's advisory locks
 * belong to a session, and a session to one connection, so the process's
 * connections live in one thread, the cluster agent (cluster/agent.ts,
 * started by helper-threads.ts). The head of a name's queue posts its request in
 * the name's mailbox (queue/word.ts A_OUTER_REQ …) and sleeps on the outer
 * bell; the agent answers there. A blocking lockSync() works the same way.
 *
 * Mailbox: the requester writes A_OUTER_REQ_OP, then A_OUTER_REQ (its
 * number, one more than the last); the agent, having done it, writes
 * A_OUTER_REP_RESULT and A_OUTER_REP_TOKEN, then A_OUTER_REP (that number),
 * and rings the bell. One actor per name posts at a time (the escalator or
 * the releaser), so a mailbox of one is enough.
 */
import { debuglog } from 'node:util';
import { BroadcastChannel, isMainThread, threadId } from 'node:worker_threads';
import type { HostLockEntry } from '../host/backend.js';
import { LockTable, createBuffer, shareWithProcess } from '../../atomics/table.js';
import { H_KEEPER_BELL, H_NAMED, S_BELL, TABLE_GATED, slotBase } from '../../atomics/layout.js';
import { type OuterLock, type OuterOutcome, type RequestQueue, setOuterLock } from '../../atomics/queue/queue.js';
import { setOuterRecovery } from '../../atomics/queue/recovery.js';
import {
  ABANDONED_NEXT, A_FLAGS, A_HEAD, A_OUTER_FLAGS, A_OUTER_MODE, A_OUTER_REP, A_OUTER_REP_RESULT, A_OUTER_REP_TOKEN,
  A_OUTER_REQ, A_OUTER_REQ_OP, MODE_EXCLUSIVE, MODE_MASK, MODE_SHARED, N_MODE, OUTER_COMPROMISED, mayKeepOuter, nodeAt,
} from '../../atomics/queue/word.js';
import { remaining, waitAsyncUntil } from '../../atomics/wait.js';
import type { Wait } from '../../atomics/options.js';
import type { LockMode } from '../../atomics/queue/queue.js';
import { CLUSTER_TABLE_KEY, ensureKeeper } from '../helper-threads.js';
import { ERR_LOCK_BACKEND, ERR_LOCK_TIMEOUT, abortErrorFor } from '../../errors.js';

const debug = debuglog('latchkey');

export const OP_ACQUIRE = 1;
export const OP_CANCEL = 2;
export const OP_RELEASE = 3;
export const OP_MASK = 0xf;
export const F_SHARED = 1 << 4;
/** ifAvailable: one attempt. */
export const F_ONCE = 1 << 5;
/** Release: keep it instead, with a fresh budget, if no other process waits. */
export const F_KEEP = 1 << 6;
/** Release: its last local holder died holding it. */
export const F_ABANDONED = 1 << 7;

export const RES_GRANTED = 1;
export const RES_UNAVAILABLE = 2;
export const RES_CANCELLED = 3;
export const RES_RELEASED = 4;
/** Granted, and the previous holder died holding it. */
export const RES_DIED = 1 << 4;
/** RES_ERROR + kind index (ERROR_KINDS). */
export const RES_ERROR = 8;
export const ERROR_KINDS = ['unreachable', 'refused', 'rights', 'query'] as const;

/** The BroadcastChannel of query() requests (cluster/agent.ts answers). */
export const QUERY_CHANNEL = 'latchkey:cluster-query';
const QUERY_MS = 10_000;
/** How long process exit waits for the agent's last releases. */
const EXIT_MS = 1000;
/** How long a requester waits for the agent to answer its cancel. */
const CANCEL_MS = 2000;
let queries = 0;

const kSlots = 1024;
const kThreads = 256;
const kRequests = 4096;

const clusterBuffer = shareWithProcess(CLUSTER_TABLE_KEY, () => createBuffer(kSlots, kThreads, kRequests, TABLE_GATED));
let table: LockTable | undefined;

/** This thread's view of the process's cluster table; sets up the outer lock the first time. */
export function clusterTable(): LockTable {
  if (table !== undefined) return table;
  if (clusterBuffer === undefined) throw new ERR_LOCK_BACKEND('postgres', 'this worker started before latchkey was imported in the main thread');
  table = LockTable.attach(clusterBuffer);
  const id = LockTable.unsafeExposeInternals(table).core.id;
  setOuterLock(id, clusterOuter);
  setOuterRecovery(id, { giveBack: (_t, slot, abandoned) => giveBack(slot, abandoned) });
  return table;
}

/** LATCHKEY_PG_URL, or a clear error. */
export function clusterUrl(): string {
  const url = process.env.LATCHKEY_PG_URL;
  if (url === undefined || url === '') {
    throw new ERR_LOCK_BACKEND('postgres', "LATCHKEY_PG_URL is not set: scope 'cluster' needs a PostgreSQL connection string");
  }
  return url;
}

/** The cluster-scope queue of `name` (a front-door key). */
export function clusterQueue(name: string): RequestQueue {
  clusterUrl();
  return clusterTable().queue(name);
}

/** The message of an error the agent reported as kind `kind`. */
export function agentError(kind: string): Error {
  let where = 'the server';
  try {
    const u = new URL(clusterUrl());
    where = `${u.hostname}:${u.port || 5432}`;
  } catch {
    // keep 'the server'
  }
  const text: Record<string, string> = {
    unreachable: `the server at ${where} cannot be reached (LATCHKEY_PG_URL), or the connection was lost`,
    refused: `the server at ${where} refused the role (authentication)`,
    rights: `the role lacks the rights latchkey needs at ${where} (create and use its tables and functions)`,
    query: `a query failed at ${where} (NODE_DEBUG=latchkey shows it)`,
  };
  return new ERR_LOCK_BACKEND('postgres', text[kind] ?? text.query!);
}

const bellOf = (q: RequestQueue) => slotBase(q.pool.threads, q.slot) + S_BELL;

/** Post a request in `q`'s mailbox for the agent; its number. */
function post(q: RequestQueue, op: number): number {
  const w = q.pool.words, a = q.anchor, seq = (Atomics.load(w, a + A_OUTER_REQ) + 1) | 0;
  Atomics.store(w, a + A_OUTER_REQ_OP, op);
  Atomics.store(w, a + A_OUTER_REQ, seq); // last: the agent reads the number, then the op
  Atomics.add(w, H_KEEPER_BELL, 1);
  Atomics.notify(w, H_KEEPER_BELL);
  ensureKeeper(w, CLUSTER_TABLE_KEY);
  return seq;
}

/** One escalation through the agent: the request, then the wait for its answer (or a cancel's). */
class ClusterEscalation {
  readonly #q: RequestQueue;
  readonly #wait: Wait;
  #seq: number;
  #cancelling = false;

  get cancelling(): boolean {
    return this.#cancelling;
  }
  #cancelledAt = 0;
  #cause: unknown;

  constructor(q: RequestQueue, mode: LockMode, wait: Wait, once: boolean) {
    this.#q = q;
    this.#wait = wait;
    this.#seq = post(q, OP_ACQUIRE | (mode === 'shared' ? F_SHARED : 0) | (once ? F_ONCE : 0));
  }

  step(): OuterOutcome | { bell: number; until: number } {
    const q = this.#q, w = q.pool.words, a = q.anchor;
    const bell = Atomics.load(w, bellOf(q));
    if (Atomics.load(w, a + A_OUTER_REP) === this.#seq) {
      const result = Atomics.load(w, a + A_OUTER_REP_RESULT);
      switch (result & 0xf) {
        case RES_GRANTED:
          return { granted: { token: q.pool.f64[(a + A_OUTER_REP_TOKEN) >> 1]!, expires: Infinity, previousDied: (result & RES_DIED) !== 0 } };
        case RES_UNAVAILABLE: return { gaveUp: 'unavailable' };
        case RES_CANCELLED: return { failed: this.#cause };
        default: return { failed: agentError(ERROR_KINDS[(result & 0xf) - RES_ERROR] ?? 'query') };
      }
    }
    if (!this.#cancelling && performance.now() >= this.#wait.deadline) {
      this.cancel(new ERR_LOCK_TIMEOUT(JSON.stringify(q.name), this.#wait.timeout));
    }
    // The agent answers a cancel at once; if it does not (it is not running), give up anyway:
    // it gives back a grant nobody asked for when it next looks (its sweep).
    if (this.#cancelling && performance.now() - this.#cancelledAt > CANCEL_MS) return { failed: this.#cause };
    return { bell, until: this.#cancelling ? this.#cancelledAt + CANCEL_MS : this.#wait.deadline };
  }

  /** Withdraw the request; the agent's answer to the cancel ends the escalation (with `cause`). */
  cancel(cause: unknown): void {
    if (this.#cancelling) return;
    this.#cancelling = true;
    this.#cancelledAt = performance.now();
    this.#cause = cause;
    this.#seq = post(this.#q, OP_CANCEL);
  }
}

const clusterOuter: OuterLock = {
  acquireSync(q, mode, wait, _ttl, once) {
    const e = new ClusterEscalation(q, mode, wait, once), w = q.pool.words;
    for (;;) {
      const s = e.step();
      if (!('bell' in s)) return s;
      Atomics.wait(w, bellOf(q), s.bell, remaining(s.until));
    }
  },
  async acquire(q, mode, wait, _ttl, once) {
    const e = new ClusterEscalation(q, mode, wait, once), w = q.pool.words, { signal } = wait;
    for (;;) {
      // The answer first: a grant that came with the abort is taken, and the front door gives it back.
      const s = e.step();
      if (!('bell' in s)) return s;
      if (signal?.aborted && !e.cancelling) {
        e.cancel(abortErrorFor(signal));
        continue;
      }
      await waitAsyncUntil(w, bellOf(q), s.bell, s.until, signal);
    }
  },
  // As A_OUTER_ACTOR: the agent keeps it (no other process waits) or gives it back, and reports.
  release(q) {
    const w = q.pool.words, a = q.anchor, head = w[a + A_HEAD]!;
    const covers = head !== 0 && (w[a + A_OUTER_MODE] === MODE_EXCLUSIVE || (w[nodeAt(q.pool, head - 1) + N_MODE]! & MODE_MASK) === MODE_SHARED);
    const keep = covers && (w[a + A_OUTER_FLAGS]! & OUTER_COMPROMISED) === 0 && mayKeepOuter(q.pool, a);
    post(q, OP_RELEASE | (keep ? F_KEEP : 0) | (w[a + A_OUTER_MODE] === MODE_SHARED ? F_SHARED : 0)
      | ((w[a + A_FLAGS]! & ABANDONED_NEXT) !== 0 ? F_ABANDONED : 0));
  },
};

/** Held and pending cluster locks of every machine, from the agent (which owns the connection). */
export async function clusterQuery(): Promise<HostLockEntry[]> {
  clusterUrl();
  const w = LockTable.unsafeExposeInternals(clusterTable()).core.words;
  ensureKeeper(w, CLUSTER_TABLE_KEY);
  const channel = new BroadcastChannel(QUERY_CHANNEL), id = `${process.pid}:${threadId}:${++queries}`;
  try {
    return await new Promise<HostLockEntry[]>((resolve, reject) => {
      let again: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        clearInterval(again);
        reject(agentError('unreachable'));
      }, QUERY_MS);
      channel.onmessage = (event) => {
        const m = (event as { data: { id: string; entries?: HostLockEntry[]; error?: string } }).data;
        if (m.id !== id) return;
        clearTimeout(timer);
        clearInterval(again);
        if (m.entries !== undefined) resolve(m.entries);
        else reject(agentError(m.error ?? 'query'));
      };
      // The agent may be starting: ask again until it answers.
      const ask = () => channel.postMessage({ id });
      ask();
      again = setInterval(ask, 250);
    });
  } finally {
    channel.close();
  }
}

/** Recovery (a thread died in the way): the agent gives back whatever this process holds of the slot's name. */
function giveBack(slot: number, abandoned: boolean): void {
  const t = clusterTable(), name = t.nameAt(slot);
  if (name === null) return;
  post(t.queue(name), OP_RELEASE | (abandoned ? F_ABANDONED : 0)); // abandoned: the next process is told
  debug('cluster lock %s: given back after a thread died in the way', name);
}

// At exit, wait (a little) for the agent to finish the releases it was
// asked for: a session that ends with a lease row left reads, to the next
// holder, as a holder that died.
if (isMainThread) {
  process.on('exit', () => {
    if (clusterBuffer === undefined || table === undefined && new Int32Array(clusterBuffer)[H_NAMED] === 0) return;
    const end = performance.now() + EXIT_MS;
    for (const q of clusterTable().queues()) {
      const w = q.pool.words, a = q.anchor;
      for (;;) {
        const bell = Atomics.load(w, bellOf(q));
        if (Atomics.load(w, a + A_OUTER_REP) === Atomics.load(w, a + A_OUTER_REQ) || performance.now() >= end) break;
        Atomics.wait(w, bellOf(q), bell, Math.max(0, end - performance.now()));
      }
    }
  });
}
