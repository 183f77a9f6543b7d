/**
 * The cluster tier's Redis engine (engine.ts): the message-queue lock. Per
 * name the server keeps who holds it, who waits (a FIFO queue) and the last
 * fencing token; every change is one Redis Function (redis-functions.ts,
 * where the keys and messages are drawn). A release that frees a name
 * grants it, inside the same function, to the head of its queue, and
 * pushes a grant message to that process's inbox, which its agent receives
 * with a blocking pop: one wake-up per release, nobody polls for the lock.
 *
 * A session is two connections opened together, named lk:<owner>:<sid>:
 * `cmd` runs every function, in order (a cancel sent after an acquire runs
 * after it), `blk` waits in BLMPOP on the agent's inbox. The grants and
 * queue entries of a session carry its sid and cmd's client id. If either
 * connection ends, the session is over: every grant it held is reported
 * lost at once, and a new session sends the pending requests again (same
 * request id: one already queued keeps its place, one already granted is
 * taken up).
 *
 * Liveness. Redis tells nobody that a client went away, so waiters look:
 * while a request is queued its engine probes every PROBE_MS (peek: reaps
 * expired leases and returns the holders' and waiters' sessions; then one
 * CLIENT LIST ID; then reap of any session gone, which grants the next),
 * and once right after it queued. A holder whose process died is so taken
 * over within PROBE_MS of its connection closing; a frozen one (SIGSTOP, a
 * paused VM) when its lease runs out on the server's clock. Leases are
 * renewed every ttl/3 by this engine, in the agent thread: a busy main
 * thread keeps its lock. Nothing else runs on a timer.
 *
 * Tokens come from the server: max(last + 1, server time in ms, floor + 1),
 * floor being the highest token this agent has seen for the name. After a
 * restart without persistence (or a failover to a replica that had not
 * received the last writes) every holder is told its lock is lost (its
 * connection dropped), and the next tokens start from the server's clock:
 * above every token issued before, unless a name had sustained more than
 * one grant per ms for long enough that its counter ran ahead of the clock
 * and no surviving agent remembers (README "Redis").
 *
 * Cohorting: the engine holds at most one grant per name for the process.
 * It knows without a round trip whether another process waits: the first
 * waiter to queue behind a grant sends its holders a 'w' message (a grant
 * made while others wait carries the flag). othersWaiting() is a local
 * read; events.wanted() fires when the message arrives.
 */
import { randomBytes } from 'node:crypto';
import type { AcquireOptions, ClusterEngine, ClusterEntry, EngineErrorKind, EngineEvents, EngineGrant, LockMode } from './engine.js';
import { EngineError } from './engine.js';
import { type Conn, type Reply, connect, loadLibrary } from './redis-conn.js';
import { FN, type FnName, LIBRARY_CODE } from './redis-functions.js';
import { me } from '../identity.js';
import { debug } from '../../observe.js';

/** Key prefix of everything latchkey keeps on the server. */
export const PREFIX = 'latchkey:';
/** Ms between liveness probes while a request is queued (a dead holder sends nothing). */
export const PROBE_MS = 200;
/** Ms a connection attempt may take. */
const CONNECT_MS = 3000;
/** How long pending requests wait for the server to come back (after their session ended) before they fail. */
const RECONNECT_GIVE_UP_MS = 5000;
/** How long a name this agent left free stays without a TTL (a name taken again within it costs no PERSIST). */
export const SWEEP_MS = 30_000;
/** The names whose highest token the engine remembers (a floor for the next, should the server lose its data). */
const FLOOR_NAMES = 10_000;
/** The oldest server latchkey's functions run on (Functions: 7.0; BLMPOP: 7.0). Valkey reports redis_version 7.2.4. */
const MIN_VERSION = [7, 0] as const;

interface Session {
  readonly sid: string;
  readonly cmd: Conn;
  readonly blk: Conn;
  readonly cid: string;
  /** CLIENT LIST is allowed (else dead holders are found by their lease only). */
  readonly canList: boolean;
  /** Its agent key written (once, before its first acquire: a session that only queries writes nothing). */
  registered: boolean;
  dead: boolean;
}

interface Pending {
  readonly name: string;
  readonly rid: string;
  readonly opts: AcquireOptions;
  resolve(g: EngineGrant | null): void;
  reject(err: unknown): void;
  queued: boolean;
  /** Given up (abort, close): a late answer that queued or granted it is cancelled again. */
  cancelled: boolean;
  /** The session its last acquire ran on. */
  session: Session | undefined;
  /**
   * 'w' and 'r' messages that came (on the blocking connection) before the reply that granted it
   * (on the command connection): applied when the grant with that token is taken up.
   */
  early: { tok: number; kind: 'w' | 'r'; reason: string }[];
  /** An attempt is running for it (a new session sends again only those that are not). */
  attempting: boolean;
  onAbort: () => void;
  /** Ends the wait at opts.deadline (EngineError 'timeout'), as an abort would. */
  deadline: NodeJS.Timeout | undefined;
}

interface Held {
  readonly token: number;
  readonly ttl: number;
  /** performance.now() when the last renewal that succeeded was sent (or the grant came). */
  renewedAt: number;
  wanted: boolean;
  session: Session;
}

interface Entry {
  owner: string;
  sid: string;
  cid: string;
}

const MODE = { exclusive: 'x', shared: 's' } as const;
const str = (r: Reply): string => (r === null ? '' : String(r));

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}

/** What kind of failure a client error is. */
export function redisErrorOf(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const m = typeof e?.message === 'string' ? e.message : String(err);
  if (/WRONGPASS|NOAUTH|invalid password|AUTH.*without any password|invalid username-password/i.test(m)) {
    return new EngineError('refused', `Cannot use the Redis server: it refused the credentials (${m})`, { cause: err });
  }
  if (/NOPERM/.test(m)) return new EngineError('rights', `Cannot use the Redis server: the user lacks a right latchkey needs (${m})`, { cause: err });
  if (/READONLY/.test(m)) return new EngineError('readonly', `Cannot use the Redis server: it is a read-only replica (${m})`, { cause: err });
  if (/DB index is out of range|invalid DB index/i.test(m)) return new EngineError('config', `Cannot use the Redis server: ${m}`, { cause: err });
  if ((typeof e?.code === 'string' && /^E[A-Z]+$/.test(e.code)) || /connect|Connection|closed|timeout|socket|Socket/i.test(m)) {
    return new EngineError('unreachable', `Cannot reach the Redis server: ${m}`, { cause: err });
  }
  return new EngineError('query', `A Redis command failed: ${m}`, { cause: err });
}

/** The engine for `url` (its form checked by cluster.ts): it connects on first use, and checks the server on every connect. */
export function openRedisEngine(url: string, events: EngineEvents): RedisEngine {
  return new RedisEngine(url, events);
}

export class RedisEngine implements ClusterEngine {
  readonly kind = 'redis';
  readonly abandonedGraceMs = 0; // engine.ts: a robbed holder is sent its revocation before the grant goes out
  /** This agent's id on the server (its inbox, its entries): random per engine. */
  readonly owner = randomBytes(8).toString('hex');
  readonly #url: string;
  readonly #events: EngineEvents;
  readonly #pid: string;
  readonly #host: string;
  #session: Session | undefined;
  #connecting: Promise<Session> | undefined;
  #closed = false;
  #rid = 0;
  readonly #pending = new Map<string, Pending>();
  readonly #held = new Map<string, Held>();
  /** The highest token seen per name, most recent last. */
  readonly #floor = new Map<string, number>();
  /** Releases sent and not answered yet (close() waits for them). */
  readonly #releasing = new Set<Promise<unknown>>();
  #probeTimer: NodeJS.Timeout | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #renewPeriod = Infinity;
  #probing = false;
  #renewing = false;
  /** Names this agent left free, and when: swept (given a TTL) SWEEP_MS later if still free. */
  readonly #freed = new Map<string, number>();
  #sweepTimer: NodeJS.Timeout | undefined;
  /** For tests and benches: what went over the wire. */
  readonly stats = { calls: 0, messages: 0, probes: 0, reaped: 0, sessions: 0 };

  constructor(url: string, events: EngineEvents) {
    this.#url = url;
    this.#events = events;
    const i = me();
    this.#pid = String(i.pid);
    this.#host = i.host.replace(/\|/g, '_');
  }

  kindOf(err: unknown): EngineErrorKind {
    return redisErrorOf(err).kind;
  }

  // --- sessions ---------------------------------------------------------------

  /** The live session, or a new one (errors as EngineError). */
  #live(): Promise<Session> {
    if (this.#closed) return Promise.reject(new EngineError('query', 'Cannot use the Redis engine: it was closed'));
    if (this.#session !== undefined && !this.#session.dead) return Promise.resolve(this.#session);
    this.#connecting ??= this.#open().finally(() => (this.#connecting = undefined));
    return this.#connecting;
  }

  /** Connect both connections and check the server: credentials, version, eviction policy, role. */
  async #open(): Promise<Session> {
    const sid = randomBytes(6).toString('hex'), name = `lk:${this.owner}:${sid}`;
    let cmd: Conn | undefined, blk: Conn | undefined;
    try {
      // Both at once (a refused server: both closed below); blk waits on the inbox, cmd runs everything else.
      const [c, b] = await Promise.allSettled([
        connect(this.#url, { name, connectTimeout: CONNECT_MS }),
        connect(this.#url, { name: `${name}:b`, connectTimeout: CONNECT_MS }),
      ]);
      if (c.status === 'fulfilled') cmd = c.value;
      if (b.status === 'fulfilled') blk = b.value;
      if (c.status === 'rejected') throw c.reason;
      if (b.status === 'rejected') throw b.reason;
      const call = c.value.call;
      const [id, info] = await Promise.all([call(['CLIENT', 'ID']), call(['INFO'])]);
      const field = (k: string) => new RegExp(`^${k}:(.*)$`, 'm').exec(str(info))?.[1]?.trim() ?? '';
      const version = field('redis_version').split('.').map(Number);
      if (!(version[0]! > MIN_VERSION[0] || (version[0] === MIN_VERSION[0] && version[1]! >= MIN_VERSION[1]))) {
        throw new EngineError('version', `Cannot use the Redis server: it is version ${field('redis_version') || 'unknown'} (latchkey needs Redis 7.0 or Valkey 7.2, for Functions and BLMPOP)`);
      }
      const policy = field('maxmemory_policy');
      if (policy.startsWith('allkeys')) {
        throw new EngineError('eviction', `Cannot use the Redis server: its maxmemory-policy is ${policy}, which may evict lock keys (use noeviction or a volatile-* policy)`);
      }
      if (field('role') !== '' && field('role') !== 'master') throw new EngineError('readonly', `Cannot use the Redis server: it is a ${field('role')}, not a master`);
      await loadLibrary(call, LIBRARY_CODE);
      let canList = true;
      try {
        await call(['CLIENT', 'LIST', 'ID', str(id)]);
      } catch (err) {
        if (!/NOPERM|unknown/i.test((err as Error).message)) throw err;
        canList = false; // dead holders are then found by their lease only
        debug('redis: CLIENT LIST is not allowed; dead holders are taken over when their lease runs out');
      }
      const s: Session = { sid, cmd: c.value, blk: b.value, cid: str(id), canList, registered: false, dead: false };
      if (this.#closed) throw new EngineError('query', 'Cannot use the Redis engine: it was closed');
      this.#session = s;
      this.stats.sessions++;
      s.cmd.onEnd((err) => this.#lost(s, `the connection to the server ended${err ? `: ${err.message}` : ''}`));
      s.blk.onEnd((err) => this.#lost(s, `the connection to the server ended${err ? `: ${err.message}` : ''}`));
      void this.#inbox(s);
      // A new session after a lost one: send again what waits (same rid: keeps its place or takes up its grant).
      for (const p of this.#pending.values()) if (!p.attempting && p.session !== s) void this.#attempt(p);
      return s;
    } catch (err) {
      cmd?.destroy();
      blk?.destroy();
      const e = redisErrorOf(err);
      debug('redis: cannot open a session at %s: %s', redactUrl(this.#url), e.message);
      throw e;
    }
  }

  /** Before the session's first acquire: its agent key (for query() and reap()), and its keys kept (a reap may have given them a TTL). */
  #register(s: Session): void {
    if (s.registered) return;
    s.registered = true;
    // Not awaited: the acquire goes after them on the same connection; a failure ends the session, which the acquire sees.
    const quiet = () => {};
    s.cmd.call(['HSET', `${PREFIX}agent:${this.owner}`, 'sid', s.sid, 'pid', this.#pid, 'host', this.#host]).catch(quiet);
    s.cmd.call(['PERSIST', `${PREFIX}agent:${this.owner}`]).catch(quiet);
    s.cmd.call(['PERSIST', `${PREFIX}inbox:${this.owner}`]).catch(quiet);
  }

  /** A connection of `s` ended: everything it held is lost; what waits is sent again on a new session. */
  #lost(s: Session, detail: string): void {
    if (s.dead) return;
    s.dead = true;
    s.cmd.destroy();
    s.blk.destroy();
    if (this.#session === s) this.#session = undefined;
    debug('redis: session %s ended: %s', s.sid, detail);
    for (const [name, h] of this.#held) {
      if (h.session !== s) continue;
      this.#held.delete(name);
      this.#events.lost(name, h.token, 'owner-changed', detail);
    }
    if (this.#closed || this.#pending.size === 0) return;
    void this.#reconnect();
  }

  async #reconnect(): Promise<void> {
    const giveUp = performance.now() + RECONNECT_GIVE_UP_MS;
    for (let delay = 25; ; delay = Math.min(delay * 2, 500)) {
      if (this.#closed || this.#pending.size === 0) return;
      try {
        const s = await this.#live();
        for (const p of this.#pending.values()) if (!p.attempting && p.session !== s) void this.#attempt(p);
        return;
      } catch (err) {
        if (performance.now() >= giveUp) {
          for (const p of [...this.#pending.values()]) this.#settle(p, () => p.reject(redisErrorOf(err)));
          return;
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  // --- the inbox ---------------------------------------------------------------

  async #inbox(s: Session): Promise<void> {
    const key = `${PREFIX}inbox:${this.owner}`;
    while (!s.dead) {
      let r: Reply;
      try {
        r = await s.blk.call(['BLMPOP', 0, 1, key, 'LEFT', 'COUNT', 64]);
      } catch (err) {
        this.#lost(s, `waiting for messages failed: ${(err as Error).message}`);
        return;
      }
      if (!Array.isArray(r) || s.dead) continue;
      for (const m of r[1] as string[]) this.#message(s, m);
      // Whoever was just granted runs first; the next BLMPOP (a write) after (its messages wait in the list).
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  #message(s: Session, m: string): void {
    this.stats.messages++;
    // n fields after the kind, then the name (which may contain '|').
    const parts = (n: number) => {
      const out: string[] = [];
      let from = 2;
      for (let i = 0; i < n; i++) {
        const at = m.indexOf('|', from);
        out.push(m.slice(from, at));
        from = at + 1;
      }
      out.push(m.slice(from));
      return out;
    };
    switch (m[0]) {
      case 'g': {
        const [rid, tok, flags, name] = parts(3) as [string, string, string, string];
        this.#see(name, Number(tok));
        const p = this.#pending.get(name);
        // A grant to a request given up since: its cancel (sent after its acquire, on the same connection) gives it back.
        if (p !== undefined && p.rid === rid && p.session === s) this.#granted(p, s, Number(tok), Number(flags));
        return;
      }
      case 'r': {
        const [tok, reason, name] = parts(2) as [string, string, string];
        this.#revoked(name, Number(tok), reason);
        return;
      }
      case 'w': {
        const [tok, name] = parts(1) as [string, string];
        this.#wanted(name, Number(tok));
        return;
      }
      default:
        debug('redis: unknown message %j', m);
    }
  }

  /** A grant was revoked (stolen, or its lease ran out and was reaped). */
  #revoked(name: string, tok: number, reason: string): void {
    const h = this.#held.get(name);
    if (h === undefined || h.token !== tok) {
      // Its grant may be in the reply still on its way (the two connections race): kept for it.
      this.#pending.get(name)?.early.push({ tok, kind: 'r', reason });
      return;
    }
    this.#held.delete(name);
    this.#schedule();
    this.#events.lost(name, h.token, reason === 'stolen' ? 'stolen' : 'expired',
      reason === 'stolen' ? 'another process stole it' : 'its lease ran out before it was renewed, and another process took it');
  }

  #wanted(name: string, tok: number): void {
    const h = this.#held.get(name);
    if (h === undefined || h.token !== tok) {
      this.#pending.get(name)?.early.push({ tok, kind: 'w', reason: '' });
      return;
    }
    if (h.wanted) return;
    h.wanted = true;
    this.#events.wanted(name);
  }

  #see(name: string, token: number): void {
    if (token > (this.#floor.get(name) ?? 0)) {
      this.#floor.delete(name); // re-inserted: the most recent names last
      this.#floor.set(name, token);
      if (this.#floor.size > FLOOR_NAMES) this.#floor.delete(this.#floor.keys().next().value!);
    }
  }

  // --- acquire -------------------------------------------------------------------

  acquire(name: string, opts: AcquireOptions): Promise<EngineGrant | null> {
    if (this.#pending.has(name) || this.#held.has(name)) {
      return Promise.reject(new EngineError('query', `Cannot acquire ${JSON.stringify(name)}: this engine already waits for or holds it`));
    }
    if (opts.steal && (opts.once || opts.mode !== 'exclusive')) {
      return Promise.reject(new EngineError('query', 'Cannot acquire: steal is exclusive only, and not with once'));
    }
    if (opts.signal.aborted) return Promise.reject(opts.signal.reason);
    return new Promise<EngineGrant | null>((resolve, reject) => {
      const p: Pending = {
        name, rid: `${++this.#rid}`, opts, resolve, reject, queued: false, cancelled: false, session: undefined, early: [], attempting: false,
        onAbort: () => this.#abort(p, opts.signal.reason), deadline: undefined,
      };
      this.#pending.set(name, p);
      opts.signal.addEventListener('abort', p.onAbort, { once: true });
      // The request's deadline ends the wait here (the requester waits a grace past it for this answer, cluster.ts).
      if (opts.deadline !== Infinity && !opts.once) {
        p.deadline = setTimeout(() => this.#abort(p, new EngineError('timeout', `Cannot acquire ${JSON.stringify(name)}: the deadline passed`)),
          Math.max(0, opts.deadline - performance.now()));
      }
      void this.#attempt(p);
    });
  }

  /** Leave p's state and call `how` (resolve or reject), once. */
  #settle(p: Pending, how: () => void): boolean {
    if (this.#pending.get(p.name) !== p) return false;
    this.#pending.delete(p.name);
    p.opts.signal.removeEventListener('abort', p.onAbort);
    clearTimeout(p.deadline);
    how();
    this.#schedule();
    return true;
  }

  async #attempt(p: Pending, retried = false): Promise<void> {
    p.attempting = true;
    try {
      await this.#attempt1(p, retried);
    } finally {
      p.attempting = false;
    }
  }

  async #attempt1(p: Pending, retried: boolean): Promise<void> {
    let s: Session;
    try {
      s = await this.#live();
    } catch (err) {
      // The session was lost and the server is away: the reconnect loop sends it again once one is up (or gives up on it).
      if (!this.#closed && this.#pending.get(p.name) === p && p.session !== undefined) {
        p.attempting = false;
        return void this.#reconnect();
      }
      this.#settle(p, () => p.reject(redisErrorOf(err)));
      return;
    }
    if (this.#pending.get(p.name) !== p) return;
    p.session = s;
    this.#register(s);
    const o = p.opts, flags = (o.once ? 1 : 0) | (o.steal ? 2 : 0);
    let r: Reply[];
    try {
      r = (await this.#fn(s, 'acquire', [
        PREFIX, p.name, this.owner, MODE[o.mode], flags, p.rid, s.sid, s.cid, o.ttl, this.#floor.get(p.name) ?? 0,
      ])) as Reply[];
    } catch (err) {
      if (s.dead) return; // sent again by the next session
      this.#settle(p, () => p.reject(redisErrorOf(err)));
      return;
    }
    const status = Number(r[0]);
    if (this.#pending.get(p.name) !== p || p.session !== s || s.dead) {
      // Given up meanwhile: its cancel went after this acquire and undid it, unless the acquire had to be sent
      // again behind the cancel (the library reloaded after a restart): cancel again, it is idempotent.
      if (p.cancelled && status !== 2 && !s.dead) this.#cancel(s, p);
      return;
    }
    if (status === 1) {
      this.#see(p.name, Number(r[1]));
      this.#granted(p, s, Number(r[1]), Number(r[2]));
      return;
    }
    const holders = triples(r.slice(1));
    if (status === 2) {
      // Unavailable: unless a holder is a session that is gone; then reap it and try once more.
      if (!retried && (await this.#reapDead(s, p.name, holders).catch(() => 0)) > 0) return this.#attempt1(p, true);
      this.#settle(p, () => p.resolve(null));
      return;
    }
    p.queued = true;
    this.#schedule();
    // Queued behind holders that may be long gone: look now, not a probe later.
    void this.#reapDead(s, p.name, holders).catch(() => {});
  }

  #granted(p: Pending, s: Session, token: number, flags: number): void {
    const wanted = (flags & 2) !== 0;
    this.#settle(p, () => {
      this.#held.set(p.name, { token, ttl: p.opts.ttl, renewedAt: performance.now(), wanted, session: s });
      p.resolve({ token, abandoned: (flags & 1) !== 0 });
    });
    // After the requester has its grant: what came early for it.
    queueMicrotask(() => {
      for (const m of p.early) if (m.tok === token) m.kind === 'w' ? this.#wanted(p.name, token) : this.#revoked(p.name, token, m.reason);
    });
    this.#schedule();
  }

  #abort(p: Pending, reason: unknown): void {
    const s = p.session;
    if (!this.#settle(p, () => p.reject(reason))) return;
    p.cancelled = true;
    // On the connection its acquire went on, so it runs after it: it leaves the queue, or gives back a grant made meanwhile.
    if (s !== undefined && !s.dead) this.#cancel(s, p);
  }

  #fn(s: Session, fn: FnName, args: readonly (string | number)[]): Promise<Reply> {
    this.stats.calls++;
    return s.cmd.fcall(LIBRARY_CODE, FN[fn], args);
  }

  #cancel(s: Session, p: Pending): void {
    this.#fn(s, 'cancel', [PREFIX, p.name, this.owner, p.rid]).catch(() => {});
  }

  // --- release, renew -------------------------------------------------------------

  /**
   * Give the grant of `name` back. The engine forgets it at once (the name
   * may be acquired again at once: that acquire goes after this release on
   * the same connection) and resolves without waiting for the server's
   * answer: a release is on nobody's path. close() waits for the answers.
   */
  release(name: string, token: number, abandoned: boolean): Promise<void> {
    const h = this.#held.get(name);
    if (h === undefined || h.token !== token) return Promise.resolve(); // lost already (and reported), or another grant
    this.#held.delete(name);
    this.#schedule();
    if (h.session.dead) return Promise.resolve(); // the grant goes with its session (reaped by the others)
    const sent: Promise<unknown> = this.#fn(h.session, 'release', [PREFIX, name, this.owner, h.token, abandoned ? 1 : 0]).then(
      () => this.#free(name),
      (err: Error) => debug('redis: release of %s failed: %s', name, err.message), // the session is gone or going: reaped with it
    ).finally(() => this.#releasing.delete(sent));
    this.#releasing.add(sent);
    return Promise.resolve();
  }

  /** Remember a name left free; a sweep every SWEEP_MS gives the still-free ones a TTL (off the hot path). */
  #free(name: string): void {
    this.#freed.delete(name);
    this.#freed.set(name, performance.now());
    if (this.#sweepTimer === undefined) {
      this.#sweepTimer = setInterval(() => void this.#sweep(), SWEEP_MS);
      this.#sweepTimer.unref(); // a sweep is housekeeping: close() does the last one
    }
  }

  async #sweep(): Promise<void> {
    const s = this.#session, now = performance.now(), due: string[] = [];
    for (const [name, t] of this.#freed) {
      if (now - t < SWEEP_MS) break; // oldest first
      this.#freed.delete(name);
      if (!this.#held.has(name) && !this.#pending.has(name)) due.push(name);
    }
    if (this.#freed.size === 0) {
      clearInterval(this.#sweepTimer);
      this.#sweepTimer = undefined;
    }
    if (s === undefined || s.dead) return;
    for (let i = 0; i < due.length; i += 256) await this.#fn(s, 'idle', [PREFIX, ...due.slice(i, i + 256)]).catch(() => {});
  }

  /** Whether another process waits for `name`, as this engine has been told (no I/O). */
  othersWaiting(name: string): boolean {
    return this.#held.get(name)?.wanted ?? false;
  }

  /** The same: every process that queues behind a grant says so at once (a 'w' message), so the local answer is exact. */
  othersWaitingExact(name: string): Promise<boolean> {
    return Promise.resolve(this.othersWaiting(name));
  }

  /**
   * Start the two timers when there is something to do; each stops itself at a tick with nothing
   * to do (no timer churn on the uncontended path, which holds for a moment between ticks).
   * Both unref'd: in the agent thread, the thread keeps itself alive; elsewhere (a bench) the
   * connections do while they are open.
   */
  #schedule(): void {
    if (this.#probeTimer === undefined && this.#queued() > 0) {
      this.#probeTimer = setInterval(() => {
        if (this.#queued() === 0) {
          clearInterval(this.#probeTimer);
          this.#probeTimer = undefined;
        } else void this.#probe();
      }, PROBE_MS);
      this.#probeTimer.unref();
    }
    let ttl = Infinity;
    for (const h of this.#held.values()) ttl = Math.min(ttl, h.ttl);
    const period = Math.max(50, Math.floor(ttl / 3));
    if (this.#renewTimer !== undefined && period < this.#renewPeriod) {
      clearInterval(this.#renewTimer);
      this.#renewTimer = undefined;
    }
    if (this.#renewTimer === undefined && this.#held.size > 0) {
      this.#renewPeriod = period;
      this.#renewTimer = setInterval(() => {
        if (this.#held.size === 0) {
          clearInterval(this.#renewTimer);
          this.#renewTimer = undefined;
        } else void this.#renew();
      }, period);
      this.#renewTimer.unref();
    }
  }

  #queued(): number {
    let n = 0;
    for (const p of this.#pending.values()) if (p.queued) n++;
    return n;
  }

  async #renew(): Promise<void> {
    if (this.#renewing) return;
    this.#renewing = true;
    try {
      const now = performance.now(), bySession = new Map<Session, [string, Held][]>();
      for (const [name, h] of this.#held) {
        // Not confirmed within its ttl: the server may have given it to another by now (this process was frozen?).
        if (now - h.renewedAt >= h.ttl) {
          this.#held.delete(name);
          this.#events.lost(name, h.token, 'renew-failed', `no renewal reached the server for ${Math.round(now - h.renewedAt)} ms (ttl ${h.ttl} ms)`);
          continue;
        }
        if (now - h.renewedAt < h.ttl / 3 - 5 || h.session.dead) continue;
        const list = bySession.get(h.session) ?? [];
        list.push([name, h]);
        bySession.set(h.session, list);
      }
      for (const [s, list] of bySession) {
        const sent = performance.now(), args: (string | number)[] = [PREFIX];
        for (const [name, h] of list) args.push(name, this.owner, h.token, h.ttl);
        let r: Reply[];
        try {
          r = (await withTimeout(this.#fn(s, 'renew', args), Math.min(...list.map(([, h]) => h.ttl)) / 3)) as Reply[];
        } catch (err) {
          // Silent or failing: the session is given up (its grants reported), so that the others can reap it at once.
          this.#lost(s, `renewing a lease failed: ${(err as Error).message}`);
          continue;
        }
        list.forEach(([name, h], i) => {
          if (this.#held.get(name) !== h) return;
          if (Number(r[i]) === 1) {
            h.renewedAt = sent;
          } else {
            this.#held.delete(name);
            const expired = performance.now() - h.renewedAt >= h.ttl;
            this.#events.lost(name, h.token, expired ? 'expired' : 'owner-changed', expired
              ? 'its lease ran out before it was renewed'
              : 'the server no longer counts this process as its holder');
          }
        });
      }
    } finally {
      this.#renewing = false;
    }
  }

  // --- liveness ----------------------------------------------------------------------

  /** The entries whose session is gone from the server. */
  async #dead(s: Session, entries: Entry[]): Promise<Entry[]> {
    const others = entries.filter((e) => e.owner !== this.owner || e.sid !== s.sid);
    if (others.length === 0 || !s.canList) return [];
    const ids = [...new Set(others.map((e) => e.cid))];
    const text = str(await s.cmd.call(['CLIENT', 'LIST', 'ID', ...ids]));
    const names = new Map<string, string>();
    for (const line of text.split('\n')) {
      const id = /(?:^| )id=(\d+)/.exec(line)?.[1], n = / name=(\S*)/.exec(line)?.[1];
      if (id !== undefined) names.set(id, n ?? '');
    }
    // Alive: that client id is connected *and* still that session (ids start again with the server).
    return others.filter((e) => names.get(e.cid) !== `lk:${e.owner}:${e.sid}`);
  }

  async #reapDead(s: Session, name: string, entries: Entry[]): Promise<number> {
    const dead = await this.#dead(s, entries);
    if (dead.length === 0) return 0;
    const n = Number(await this.#fn(s, 'reap', [PREFIX, name, ...dead.flatMap((e) => [e.owner, e.sid])]));
    this.stats.reaped += n;
    if (n > 0) debug('redis: %d entries of %s reaped (their sessions are gone)', n, name);
    return n;
  }

  /** While requests are queued: expired leases are reaped by peek, gone sessions here. */
  async #probe(): Promise<void> {
    if (this.#probing) return;
    const s = this.#session;
    const names = [...this.#pending.values()].filter((p) => p.queued && p.session === s).map((p) => p.name);
    if (s === undefined || s.dead || names.length === 0) return;
    this.#probing = true;
    this.stats.probes++;
    try {
      const r = (await this.#fn(s, 'peek', [PREFIX, ...names])) as Reply[];
      for (let i = 0; i < r.length;) {
        const name = str(r[i++]!);
        const nh = Number(r[i++]);
        const entries = triples(r.slice(i, i + 3 * nh));
        i += 3 * nh;
        const nw = Number(r[i++]);
        entries.push(...triples(r.slice(i, i + 3 * nw)));
        i += 3 * nw;
        await this.#reapDead(s, name, entries);
      }
    } catch {
      // the session is ending; the next one probes
    } finally {
      this.#probing = false;
    }
  }

  // --- query, close ---------------------------------------------------------------------

  async query(): Promise<ClusterEntry[]> {
    const s = await this.#live();
    try {
      // The names: every P{N}:s key (a free name's lingers KEEP_MS; it lists nothing).
      const names: string[] = [], glob = PREFIX.replace(/[*?[\]\\]/g, '\\$&');
      let cursor = '0';
      do {
        const r = (await s.cmd.call(['SCAN', cursor, 'MATCH', `${glob}{*}:s`, 'COUNT', 1000, 'TYPE', 'hash'])) as [string, string[]];
        cursor = r[0];
        for (const k of r[1]) names.push(k.slice(PREFIX.length + 1, -3));
      } while (cursor !== '0');
      for (let round = 0; ; round++) {
        const rows: { name: string; state: 'held' | 'pending'; owner: string; f: string[]; pid: number; host: string }[] = [];
        for (let i = 0; i < names.length; i += 256) {
          const r = (await this.#fn(s, 'list', [PREFIX, ...names.slice(i, i + 256)])) as Reply[];
          for (let j = 1; j + 5 < r.length; j += 6) {
            rows.push({
              name: str(r[j]!), state: str(r[j + 1]!) as 'held' | 'pending', owner: str(r[j + 2]!), f: str(r[j + 3]!).split('|'),
              pid: Number(r[j + 4]), host: str(r[j + 5]!),
            });
          }
        }
        const entry = (x: (typeof rows)[number]): Entry => (x.state === 'held'
          ? { owner: x.owner, sid: x.f[3]!, cid: x.f[4]! } : { owner: x.owner, sid: x.f[2]!, cid: x.f[3]! });
        const dead = round === 0 ? await this.#dead(s, rows.map(entry)) : [];
        if (dead.length > 0) {
          // Gone sessions are reaped (which may grant to the next), then the names are listed again.
          const gone = new Set(dead.map((d) => `${d.owner} ${d.sid}`));
          for (const name of new Set(rows.filter((x) => gone.has(`${x.owner} ${entry(x).sid}`)).map((x) => x.name))) {
            await this.#reapDead(s, name, dead);
          }
          continue;
        }
        return rows.map((x): ClusterEntry => (x.state === 'held'
          ? {
            name: x.name, mode: x.f[1] === 's' ? 'shared' : 'exclusive', state: 'held', owner: x.owner, pid: x.pid, host: x.host,
            token: Number(x.f[0]), since: Number(x.f[6]), expires: Number(x.f[5]),
          }
          : {
            name: x.name, mode: x.f[0] === 's' ? 'shared' : 'exclusive', state: 'pending', owner: x.owner, pid: x.pid, host: x.host,
            token: 0, since: Number(x.f[5]),
          }));
      }
    } catch (err) {
      throw redisErrorOf(err);
    }
  }

  /**
   * The process exits: wait for the releases sent, give back what is still
   * held (abandoned: its holders did not finish), withdraw what waits, give
   * the names left free their TTL, delete this agent's keys, disconnect.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    await Promise.all([...this.#releasing]);
    const s = this.#session;
    for (const p of [...this.#pending.values()]) {
      this.#settle(p, () => p.reject(new EngineError('query', 'Cannot acquire: the Redis engine was closed')));
      p.cancelled = true;
      if (s !== undefined && !s.dead && p.session === s) this.#cancel(s, p);
    }
    const held = [...this.#held];
    this.#held.clear();
    this.#closed = true;
    clearInterval(this.#probeTimer);
    clearInterval(this.#renewTimer);
    clearInterval(this.#sweepTimer);
    const freed = [...this.#freed.keys(), ...held.map(([name]) => name)];
    if (s === undefined || s.dead) return;
    await Promise.all(held.map(([name, h]) => this.#fn(s, 'release', [PREFIX, name, this.owner, h.token, 1]).catch(() => {})));
    if (freed.length > 0) await this.#fn(s, 'idle', [PREFIX, ...freed]).catch(() => {});
    await s.cmd.call(['DEL', `${PREFIX}inbox:${this.owner}`, `${PREFIX}agent:${this.owner}`]).catch(() => {});
    s.dead = true;
    s.blk.destroy();
    await s.cmd.quit();
  }
}

function triples(r: Reply[]): Entry[] {
  const out: Entry[] = [];
  for (let i = 0; i + 2 < r.length; i += 3) out.push({ owner: str(r[i]!), sid: str(r[i + 1]!), cid: str(r[i + 2]!) });
  return out;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer in ${Math.round(ms)} ms`)), ms);
    }),
  ]);
}
