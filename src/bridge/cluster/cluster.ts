/**
 * The cluster tier: locks shared by every process of every machine that
 * reaches one server, through this process's cluster table (a gated
 * request-queue table, as the host tier's: the threads of a process share
 * one cluster grant, cohorting). The server is named by
 * `LATCHKEY_CLUSTER_URL`, whose scheme picks the engine (kEngines): redis://
 * or rediss:// (Redis, Valkey: redis.ts), postgres:// or postgresql://
 * (PostgreSQL: postgres.ts); `LATCHKEY_PG_URL` is read when it is not set.
 *
 * No requesting thread talks to the server: PostgreSQL's advisory locks
 * belong to a session, and a session to one connection; a Redis agent
 * owns an inbox and renews leases. So the process's connections live in
 * one thread, the cluster agent (agent.ts, started by helper-threads.ts). The head of a name's queue posts its request in the
 * name's mailbox (the seat's, atomics/queue/outer.ts) and sleeps on the
 * name's bell; the agent answers there. A blocking lockSync() works the
 * same way. One actor per name posts at a time (the escalator or the
 * releaser), so a mailbox of one request and one answer is enough.
 *
 * The mailbox's words (outer.ts OuterSeat.mailbox) carry this tier's codes:
 *   request op   OP_* | F_* flags | the time left before the request's
 *                deadline, whole ms, in bits OP_DEADLINE_SHIFT.. (the agent
 *                passes the deadline to the engine, which ends the wait
 *                itself: PostgreSQL's lock_timeout in the server, a timer
 *                on Redis). An acquisition's lease (ttl, engines with
 *                leases: Redis) is read from its seat (OuterSeat.leaseAsked).
 *   answer       RES_* | RES_DIED | RES_WANTED and the engine's token;
 *                RES_TIMEOUT; or RES_ERROR | the error kind's index << RES_ERROR_SHIFT
 *
 * The cohort (kEngines[…].cohort, word.ts CohortPolicy): a grant nobody
 * local uses lingers while no other process waits (the agent gives it back
 * after the linger, or at once when another process says it waits: a
 * PostgreSQL knock, a Redis 'w' message); once another process waits
 * (OuterSeat.wanted(), or RES_WANTED: the grant came after a wait), the
 * process's turn is the engine's turnPasses.
 */
import { BroadcastChannel, getEnvironmentData, threadId } from 'node:worker_threads';
import type { ClusterEngine, ClusterEntry, EngineEvents } from './engine.js';
import { HELPER_SERVING, QueueTable } from '../../atomics/queue/table.js';
import type { RequestQueue } from '../../atomics/queue/queue.js';
import type { CohortPolicy, OuterLock, OuterOutcome, OuterRequest, OuterSeat } from '../../atomics/queue/outer.js';
import type { Geometry } from '../../atomics/memory.js';
import { type HelperSpec, ensureHelper } from '../helper-threads.js';
import { type Escalating, escalate, escalateSync } from '../escalation.js';
import { ERR_LOCK_BACKEND, ERR_LOCK_TIMEOUT } from '../../errors.js';
import { debug } from '../../observe.js';
import { type DriverName, checkDriver } from '../drivers.js';
import { announceSteal } from '../../loss.js';

export const OP_ACQUIRE = 1;
export const OP_CANCEL = 2;
export const OP_RELEASE = 3;
/** The process exits (clusterExit, on the control queue): the agent closes its engine, then answers. */
export const OP_CLOSE = 4;
export const OP_MASK = 0xf;
export const F_SHARED = 1 << 4;
/** ifAvailable: one attempt. */
export const F_ONCE = 1 << 5;
/** Release: keep it instead, with a fresh budget, if no other process waits. */
export const F_KEEP = 1 << 6;
/** Release: its last local holder died holding it. */
export const F_ABANDONED = 1 << 7;
/** Acquire: steal it (engines that support it). */
export const F_STEAL = 1 << 8;
/** Acquire: the time left before the deadline, ms, from this bit up (22 bits); OP_DEADLINE_NONE: none, or too far to say. */
export const OP_DEADLINE_SHIFT = 9;
export const OP_DEADLINE_NONE = (1 << 22) - 1;

export const RES_GRANTED = 1;
export const RES_UNAVAILABLE = 2;
export const RES_CANCELLED = 3;
export const RES_RELEASED = 4;
/** The engine's wait reached the request's deadline (ERR_LOCK_TIMEOUT). */
export const RES_TIMEOUT = 5;
/** Granted, and the previous holder died holding it. */
export const RES_DIED = 1 << 4;
/** Granted, and another process waits for it already (engine.othersWaiting): the grant starts wanted. */
export const RES_WANTED = 1 << 5;
/** RES_ERROR | the kind's index in ERROR_KINDS << RES_ERROR_SHIFT (errorResult, errorKindOf). */
export const RES_ERROR = 8;
const RES_ERROR_SHIFT = 8;
export const ERROR_KINDS = ['unreachable', 'refused', 'rights', 'query', 'agent', 'config', 'version', 'unsupported', 'eviction', 'readonly'] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/** The answer that reports an error of `kind` (an unknown kind is 'query'; 'timeout' is RES_TIMEOUT). */
export function errorResult(kind: string): number {
  if (kind === 'timeout') return RES_TIMEOUT;
  const i = ERROR_KINDS.indexOf(kind as ErrorKind);
  return RES_ERROR | ((i < 0 ? ERROR_KINDS.indexOf('query') : i) << RES_ERROR_SHIFT);
}

/** The kind of error an answer reports. */
function errorKindOf(result: number): ErrorKind {
  return ERROR_KINDS[result >>> RES_ERROR_SHIFT] ?? 'query';
}

/** The BroadcastChannel of query() requests (cluster/agent.ts answers). */
export const QUERY_CHANNEL = 'latchkey:cluster-query';
const QUERY_MS = 10_000;
/** How long process exit waits for the agent's last releases. */
const EXIT_MS = 1000;
/** How long a requester waits for the agent to answer its cancel. */
const CANCEL_MS = 2000;
/**
 * A request whose deadline went to the agent waits this long past it for
 * the engine's own timeout (the server's answer) before it cancels: a
 * cancel costs a round trip on another connection and races the grant.
 */
const DEADLINE_GRACE_MS = 250;
/**
 * The name of the queue that carries the agent's own requests (OP_CLOSE).
 * Names starting with '-' are reserved (the front door refuses them), so no
 * lock request ever uses this queue.
 */
export const CONTROL_NAME = '-latchkey:cluster-agent';
let queries = 0;

/** Where every thread finds the process's cluster table (worker_threads environment data). */
export const CLUSTER_TABLE_KEY = 'latchkey:cluster-table';
/** The cluster table's shape: 1024 names held or waited for at a time, 4096 requests. */
export const kClusterGeometry: Geometry = { slots: 1024, threads: 256, requests: 4096, gated: true };

/**
 * Connections per process (home included) when LATCHKEY_PG_CONNECTIONS is
 * not set: one for tries and uncontended grants, one per wait parked in the
 * server at once (postgres.ts).
 */
export const kDefaultConnections = 8;

/** The cluster agent thread (helper-threads.ts). */
export const agentSpec: HelperSpec = {
  key: CLUSTER_TABLE_KEY,
  script: './cluster/agent.js',
  title: 'cluster agent',
  get backend() {
    return clusterBackend();
  },
  // Every request waiting for it is answered: it will not come.
  onFailure: () => failPending(),
};

let table: QueueTable | undefined;

/** This thread's view of the process's cluster table (born by the first thread that asks). */
export function clusterTable(): QueueTable {
  if (table !== undefined) return table;
  const buffer = getEnvironmentData(CLUSTER_TABLE_KEY);
  if (!(buffer instanceof SharedArrayBuffer)) throw new ERR_LOCK_BACKEND(clusterBackend(), 'this worker started before latchkey was imported in the main thread');
  return (table = QueueTable.attach(buffer, { outer: clusterOuter, onStolen: announceSteal }));
}

/**
 * How the threads of a process share a cluster grant on PostgreSQL:
 * - while no other process waits, the whole budget (64 local grants or
 *   20 ms), renewed after an exact check with the server (agent.ts);
 * - once another process waits (OUTER_WANTED: a knock, or the grant came
 *   after a wait), no new local pass (turnPasses 1: only the grant the
 *   escalator fetched it for), and the grant goes back as its holders leave;
 * - a grant nobody local uses lingers 2 ms while nobody else waits: a
 *   process re-taking a name costs no round trip (a loop of lockSync() +
 *   unlock(): ~0.04× of a try + unlock round trip). A knock gives a
 *   lingering grant back at once, so another process pays at most a knock's
 *   delivery for it.
 */
const kPostgresCohort: CohortPolicy = Object.freeze({ turnPasses: 1, turnMs: 20, lingerMs: 2 });

/**
 * On Redis, where the engine is told at once when another process queues
 * (a 'w' message: events.wanted, OUTER_WANTED): the whole budget (64 local
 * grants or 20 ms) whoever waits, since every hand-over to another process
 * costs a message between processes (~0.3 ms here) and a FIFO queue serves
 * each process in turn anyway; a grant nobody local uses lingers 2 ms while
 * no other process waits (a loop of lock + unlock in one process re-takes it
 * with no round trip) and goes back at once when one starts to.
 */
const kRedisCohort: CohortPolicy = Object.freeze({ turnPasses: 64, turnMs: 20, lingerMs: 2 });

export type EngineName = 'postgres' | 'redis';

/** The engines by the URL's scheme. */
const kSchemes: Readonly<Record<string, EngineName>> = { 'postgres:': 'postgres', 'postgresql:': 'postgres', 'redis:': 'redis', 'rediss:': 'redis' };

/**
 * What the requesting side knows of each engine, before anything is queued:
 * whether the front door may offer `steal`, how the process's threads share
 * its grants (word.ts CohortPolicy), its default port (for messages), the
 * driver it loads in the agent thread (checked here: a missing one is
 * ERR_LOCK_BACKEND naming the package, not a vaguer error from the agent).
 */
export const kEngines: Readonly<Record<EngineName, { readonly steal: boolean; readonly cohort: CohortPolicy; readonly port: number; readonly driver: DriverName }>> = {
  postgres: { steal: false, cohort: kPostgresCohort, port: 5432, driver: 'pg' },
  redis: { steal: true, cohort: kRedisCohort, port: 6379, driver: '@redis/client' },
};

/** The variable that names the server, and its value: LATCHKEY_CLUSTER_URL, else LATCHKEY_PG_URL; undefined when neither is set. */
function urlSetting(): { readonly variable: string; readonly url: string } | undefined {
  const cluster = process.env.LATCHKEY_CLUSTER_URL;
  if (cluster !== undefined && cluster !== '') return { variable: 'LATCHKEY_CLUSTER_URL', url: cluster };
  const pg = process.env.LATCHKEY_PG_URL;
  if (pg !== undefined && pg !== '') return { variable: 'LATCHKEY_PG_URL', url: pg };
  return undefined;
}

/** The engine a URL names, by its scheme; undefined when it names none. */
function engineOf(url: string): EngineName | undefined {
  try {
    return kSchemes[new URL(url).protocol];
  } catch {
    return undefined;
  }
}

/** The backend of the cluster tier as set now, for messages: 'redis', 'postgres', or 'cluster' when no usable URL is set. */
export function clusterBackend(): string {
  const setting = urlSetting();
  return (setting && engineOf(setting.url)) ?? 'cluster';
}

let checked: { url: string; engine: EngineName } | undefined;

/** The cluster URL, checked (a URL whose scheme names an engine, and that engine's form), or a clear error: before anything is queued. */
export function clusterUrl(): string {
  return checkedUrl().url;
}

/** The engine the cluster URL names (clusterUrl()'s checks and errors). */
export function clusterEngine(): EngineName {
  return checkedUrl().engine;
}

function checkedUrl(): { url: string; engine: EngineName } {
  const setting = urlSetting();
  if (setting === undefined) {
    throw new ERR_LOCK_BACKEND('cluster', "LATCHKEY_CLUSTER_URL is not set, and LATCHKEY_PG_URL is not set either: scope 'cluster' needs a server's URL, "
      + 'redis://… or rediss://… (Redis, Valkey) or postgres://… (PostgreSQL)');
  }
  const { variable, url } = setting;
  if (checked?.url === url) return checked;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ERR_LOCK_BACKEND(variable === 'LATCHKEY_PG_URL' ? 'postgres' : 'cluster',
      `${variable} is not a URL (expected ${variable === 'LATCHKEY_PG_URL' ? '' : 'redis://host:port or '}postgres://user@host:port/database): ${JSON.stringify(redact(url).slice(0, 80))}`);
  }
  const engine = kSchemes[u.protocol];
  // LATCHKEY_PG_URL names PostgreSQL only (it predates the other engines).
  if (variable === 'LATCHKEY_PG_URL' && engine !== 'postgres') {
    throw new ERR_LOCK_BACKEND('postgres', `LATCHKEY_PG_URL is not a PostgreSQL URL: its scheme is ${u.protocol} (expected postgres: or postgresql:; a Redis URL goes in LATCHKEY_CLUSTER_URL)`);
  }
  if (engine === undefined) {
    throw new ERR_LOCK_BACKEND('cluster', `${variable} names no engine latchkey has: its scheme is ${u.protocol} (expected redis:, rediss:, postgres: or postgresql:)`);
  }
  if (engine === 'postgres') clusterConnections();
  if (engine === 'redis') {
    if (u.hostname === '') throw new ERR_LOCK_BACKEND('redis', `${variable} names no host: ${JSON.stringify(redact(url))}`);
    if (u.pathname !== '' && u.pathname !== '/' && !/^\/\d+$/.test(u.pathname)) {
      throw new ERR_LOCK_BACKEND('redis', `${variable}'s path is ${JSON.stringify(u.pathname)} (expected nothing, or a database number: redis://host:port/0)`);
    }
  }
  checkDriver(kEngines[engine].driver, engine);
  return (checked = { url, engine });
}

/**
 * LATCHKEY_PG_CONNECTIONS (default kDefaultConnections): the most
 * connections the process opens to a PostgreSQL server, home included, ≥ 2.
 * At the bound, a further wait polls instead of parking in the server (not
 * FIFO).
 */
export function clusterConnections(): number {
  const raw = process.env.LATCHKEY_PG_CONNECTIONS;
  if (raw === undefined || raw === '') return kDefaultConnections;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 2) {
    throw new ERR_LOCK_BACKEND('postgres', `LATCHKEY_PG_CONNECTIONS must be an integer ≥ 2 (connections per process, home included), not ${JSON.stringify(raw)}`);
  }
  return n;
}

/** The URL with its password hidden, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}

/** The engine for `url` (in the agent thread): chosen by the URL's scheme. Connects on first use. */
export async function openEngine(url: string, events: EngineEvents): Promise<ClusterEngine> {
  if (engineOf(url) === 'redis') {
    const { openRedisEngine } = await import('./redis.js');
    return openRedisEngine(url, events);
  }
  const { PostgresEngine } = await import('./postgres.js');
  return new PostgresEngine(url, events, { maxConnections: clusterConnections() });
}

/** Whether the front door may offer `steal` at cluster scope (the engine the URL names supports it); clusterUrl()'s errors. */
export function clusterCanSteal(): boolean {
  return kEngines[clusterEngine()].steal;
}

/** The cluster-scope queue of `name` (a front-door key). */
export function clusterQueue(name: string): RequestQueue {
  clusterUrl();
  return clusterTable().queue(name);
}

/** The message of an error the agent reported as kind `kind`. */
export function agentError(kind: string): Error {
  let where = 'the server', variable = 'LATCHKEY_PG_URL', engine: EngineName = 'postgres';
  try {
    engine = clusterEngine();
    variable = urlSetting()!.variable;
    const u = new URL(clusterUrl());
    where = `${u.hostname}:${u.port || kEngines[engine].port}`;
  } catch {
    // keep 'the server'
  }
  const text: Record<string, string> = engine === 'redis'
    ? {
      unreachable: `the Redis server at ${where} cannot be reached (${variable}), or the connection was lost`,
      refused: `the Redis server at ${where} refused the credentials (the user and password in ${variable})`,
      rights: `the Redis user lacks a command latchkey needs at ${where} (FUNCTION LOAD, FCALL, BLMPOP, CLIENT ID, INFO, SCAN)`,
      query: `a command failed at the Redis server at ${where} (NODE_DEBUG=latchkey shows it)`,
      agent: 'the cluster agent thread could not start (NODE_DEBUG=latchkey says why)',
      config: `the Redis server at ${where} has no such database (the number in ${variable}'s path)`,
      version: `the server at ${where} is older than Redis 7.0 (or Valkey 7.2), which latchkey needs (Functions, BLMPOP)`,
      eviction: `the Redis server at ${where} may evict lock keys: its maxmemory-policy is allkeys-* (use noeviction or a volatile-* policy)`,
      readonly: `the Redis server at ${where} is a read-only replica: point ${variable} at the master`,
      unsupported: `the Redis server at ${where} cannot do what was asked (NODE_DEBUG=latchkey says what)`,
    }
    : {
      unreachable: `the server at ${where} cannot be reached (${variable}), or the connection was lost`,
      refused: `the server at ${where} refused the role (authentication)`,
      rights: `the role lacks the rights latchkey needs at ${where} (create and use its tables and functions)`,
      query: `a query failed at ${where} (NODE_DEBUG=latchkey shows it)`,
      agent: 'the cluster agent thread could not start (NODE_DEBUG=latchkey says why)',
      config: `the server at ${where} has no such database (${variable})`,
      version: `the server at ${where} is older than PostgreSQL 14, which latchkey needs`,
      unsupported: `the server at ${where} cannot do what was asked (NODE_DEBUG=latchkey says what)`,
      eviction: `the server at ${where} may lose lock state`,
      readonly: `the server at ${where} is read-only`,
    };
  return new ERR_LOCK_BACKEND(engine, text[kind] ?? text.query!);
}

/** Post a request in the seat's mailbox for the agent; its number. */
function post(seat: OuterSeat, op: number): number {
  const seq = seat.mailbox.post(op);
  const helper = clusterTable().helper;
  helper.ring();
  ensureHelper(agentSpec, helper);
  return seq;
}

/** One escalation through the agent: the request, then the wait for its answer (or a cancel's). */
class ClusterEscalation implements Escalating {
  readonly #seat: OuterSeat;
  readonly #req: OuterRequest;
  #seq: number;
  #cancelling = false;
  #cancelledAt = 0;
  #cause: unknown;
  /** A stealer of this process queued ahead: the request is withdrawn so that the steal goes out instead. */
  #standingDown = false;
  /** When this side gives up on the agent's own timeout and cancels (performance.now() ms). */
  readonly #giveUpAt: number;

  constructor(seat: OuterSeat, req: OuterRequest) {
    this.#seat = seat;
    this.#req = req;
    const left = req.wait.deadline - performance.now();
    // The time left goes with the request: the engine ends the wait at the deadline itself.
    const ms = req.once || !(left < OP_DEADLINE_NONE) ? OP_DEADLINE_NONE : Math.max(1, Math.ceil(left));
    this.#giveUpAt = ms === OP_DEADLINE_NONE ? req.wait.deadline : req.wait.deadline + DEADLINE_GRACE_MS;
    this.#seq = post(seat, OP_ACQUIRE | (req.mode === 'shared' ? F_SHARED : 0) | (req.once ? F_ONCE : 0) | (req.steal ? F_STEAL : 0)
      | (ms << OP_DEADLINE_SHIFT));
  }

  step(): OuterOutcome | { bell: number; until: number } {
    const seat = this.#seat, bell = seat.bell, answer = seat.mailbox.answer(this.#seq);
    if (answer !== null) {
      const { result, token } = answer;
      switch (result & 0xf) {
        case RES_GRANTED: return { granted: { token, expires: Infinity, abandoned: (result & RES_DIED) !== 0, wanted: (result & RES_WANTED) !== 0 } };
        case RES_UNAVAILABLE: return { gaveUp: 'unavailable' };
        case RES_CANCELLED: return this.#standingDown ? { gaveUp: 'stood-down' } : { failed: this.#cause };
        case RES_TIMEOUT: return { failed: this.#timeout() };
        default: return { failed: agentError(errorKindOf(result)) };
      }
    }
    // A steal queued ahead in this process (it rang the bell): withdraw, and the queue hands the
    // escalation to the stealer (as the host tier stands down); else the steal would wait for this
    // request's own wait in the server to end, which may be never.
    if (!this.#cancelling && !this.#req.steal && seat.stealerAhead) {
      this.#standingDown = true;
      this.abort(undefined);
    }
    // The engine times the wait out itself (its answer is RES_TIMEOUT); if it does not answer in time, cancel.
    if (!this.#cancelling && performance.now() >= this.#giveUpAt) this.abort(this.#timeout());
    // The agent answers a cancel at once; if it does not (it is not running), give up anyway:
    // it gives back a grant nobody asked for when it next looks (its sweep).
    if (this.#cancelling && performance.now() - this.#cancelledAt > CANCEL_MS) return this.#standingDown ? { gaveUp: 'stood-down' } : { failed: this.#cause };
    return { bell, until: this.#cancelling ? this.#cancelledAt + CANCEL_MS : this.#giveUpAt };
  }

  #timeout(): Error {
    return new ERR_LOCK_TIMEOUT(JSON.stringify(this.#seat.name), this.#req.wait.timeout);
  }

  /** Withdraw the request; the agent's answer to the cancel ends the escalation (with `cause`). */
  abort(cause: unknown): undefined {
    if (this.#cancelling) return undefined;
    this.#cancelling = true;
    this.#cancelledAt = performance.now();
    this.#cause = cause;
    this.#seq = post(this.#seat, OP_CANCEL);
    return undefined;
  }
}

/** The cluster tier's side of the seam (atomics/queue/outer.ts). */
export const clusterOuter: OuterLock = {
  // By the engine the URL names (read as each queue is made: the URL is checked by then).
  get cohort() {
    const setting = urlSetting(), engine = setting && engineOf(setting.url);
    return engine === undefined ? kPostgresCohort : kEngines[engine].cohort;
  },
  acquireSync: (seat, req) => escalateSync(seat, new ClusterEscalation(seat, req)),
  acquire: (seat, req) => escalate(seat, new ClusterEscalation(seat, req), req.wait.signal),
  // As the name's releaser: the agent keeps it (no other process waits) or gives it back, and reports.
  release(seat) {
    post(seat, OP_RELEASE | (seat.worthKeeping ? F_KEEP : 0) | (seat.mode === 'shared' ? F_SHARED : 0) | (seat.abandonedNext ? F_ABANDONED : 0));
  },
  // Recovery: the agent gives back whatever this process holds of the name.
  giveBack(name, abandoned) {
    post(clusterTable().queue(name).seat!, OP_RELEASE | (abandoned ? F_ABANDONED : 0)); // abandoned: the next process is told
    debug('cluster lock %s: given back after a thread died in the way', name);
  },
};

/** The agent could not start: every request waiting for it fails now (ERR_LOCK_BACKEND) instead of at its deadline. */
function failPending(): void {
  if (table === undefined) return;
  for (const q of table.queues()) {
    const { seq } = q.seat!.mailbox.request();
    if (!q.seat!.mailbox.idle()) q.seat!.mailbox.reply(seq, errorResult('agent'));
  }
}

/** Held and pending cluster locks of every machine, from the agent (which owns the connection). */
export async function clusterQuery(): Promise<ClusterEntry[]> {
  clusterUrl();
  ensureHelper(agentSpec, clusterTable().helper);
  const channel = new BroadcastChannel(QUERY_CHANNEL), id = `${process.pid}:${threadId}:${++queries}`;
  try {
    return await new Promise<ClusterEntry[]>((resolve, reject) => {
      let again: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        clearInterval(again);
        reject(agentError('unreachable'));
      }, QUERY_MS);
      channel.onmessage = (event) => {
        const m = (event as { data: { id: string; entries?: ClusterEntry[]; error?: string } }).data;
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

/**
 * At exit, give back the grants that linger, wait (a little) for the agent
 * to send the releases it was asked for, then have it close its engine: the
 * engine settles what the releases left (PostgreSQL: the released grants'
 * rows, so that no clean release reads as a death to the next holder;
 * Redis: its releases finished, what is still held given back, abandoned,
 * its inbox deleted). Grants still held by a thread are not given back
 * clean: their holder never let go, and the next holder is told
 * (abandoned). (src/process.ts installs it.)
 */
export function clusterExit(): void {
  const buffer = getEnvironmentData(CLUSTER_TABLE_KEY);
  if (!(buffer instanceof SharedArrayBuffer) || QueueTable.namesIn(buffer) === 0) return;
  const end = performance.now() + EXIT_MS, t = clusterTable();
  // A grant that lingers is given back too: its session ending with it held would read, to the next holder, as a death.
  for (const q of t.queues()) if (q.seat!.lingersUntil !== 0) q.seat!.releaseIfIdle(Infinity);
  for (const q of t.queues()) {
    const seat = q.seat!;
    for (;;) {
      const bell = seat.bell;
      // Releases only: an acquisition (another thread waiting) does not hold the exit up.
      if (seat.mailbox.idle() || (seat.mailbox.request().op & OP_MASK) !== OP_RELEASE || performance.now() >= end) break;
      seat.sleep(bell, end);
    }
  }
  if (t.helper.state !== HELPER_SERVING) return;
  let seat: OuterSeat;
  try {
    seat = t.queue(CONTROL_NAME).seat!;
  } catch {
    return; // the table is full: no close (the server finds the connections gone)
  }
  const seq = seat.mailbox.post(OP_CLOSE);
  t.helper.ring();
  for (;;) {
    const bell = seat.bell;
    if (seat.mailbox.answer(seq) !== null || performance.now() >= end) break;
    seat.sleep(bell, end);
  }
}
