/**
 * The file backend: host locks as hard links in a lock directory
 * (file-dir.ts draws it), waiters in a FIFO queue, the gate handed to the
 * oldest live waiter in place and that one process woken by a message on its
 * FIFO (fifo.ts). No inotify, no keeper, no herd on the hand-over path.
 *
 * A name's directory:
 *   name, seq       the full name; the token store (records.ts)
 *   o-<owner>       a process's record of the name (records.ts; its lease is
 *                   its mtime + ttl); every marker below is a hard link to one
 *   x               the gate: the exclusive holder's, a writer's waiting for
 *                   readers to leave, a waiter's handed it, or (for µs) a
 *                   reader's coming in
 *   b               the name's latch, held for µs by whoever hands the gate
 *                   on, takes it over or steals it
 *   q/<entry>/r     the queue: one directory per waiter, r a link to its
 *                   record; lstat(q).nlink − 2 counts them. <entry> =
 *                   `<since: 14 hex µs>-<x|s><fifo>.<n>-<owner>` sorts by
 *                   arrival and says what a hand-off needs
 *   s/<owner>-<token>  shared holders
 *
 * Transitions (the research notes, /work/scratch/host/NOTES.md §5, have the
 * full table; every one was exercised by the kill tests, test/host-kill*):
 * - Free gate, exclusive: write the record (HELD), link(o, x), read seq,
 *   issue the next token, write seq. A reader comes in through the gate,
 *   leaves a marker in s/ and frees the gate.
 * - Gate held: queue (a FIFO of ours, mkdir q/<entry>, link r), then look at
 *   x again (a releaser frees x, then looks at q: one of the two sees the
 *   other).
 * - Release, nobody waits: rename x aside, check it was ours, remove it; look
 *   at q again (a waiter that came meanwhile is poked).
 * - Release, someone waits: under b, the oldest live waiter (the hints the
 *   message that woke us named, else a listing) gets the next token in seq,
 *   then rename(its r → x) (the gate is never free, and it leaves the queue
 *   in the same step), then one message on its FIFO (token, its entry, the
 *   waiters after it). A waiter whose FIFO has no reader is dead: passed
 *   over. A waiter that gives up unlink(2)s its r: exactly one of the
 *   rename and the unlink wins.
 * - A waiter woken (message, poll, the keeper's tick for lockSync) looks:
 *   x mine and r gone: handed (token from the message, else from seq); r
 *   gone, x not mine: passed over, queue again in the same place; x free:
 *   take it, serve the queue; x held by a stale owner: take it over (under
 *   b: check again, ABANDONED in seq if it died in its section, hand on).
 * - Steal: under b, token, seq, a link of our record renamed over x; the
 *   robbed are told on their notice FIFO at once.
 *
 * Orders that prevent lost wake-ups: a waiter links its entry, then looks
 * at x; a releaser frees x, then looks at q. A writer waiting for readers
 * writes ENTERING, then counts s/; a reader unlinks its marker, then reads
 * x's record. A releaser writes seq, then renames, then messages: whoever
 * finds itself handed the gate reads its token from seq without the latch.
 *
 * Not in any wait: this thread's files of a name (2 descriptors) are cached
 * for at most OPEN_NAMES names (issue 17 item 7).
 */
import {
  watch as fsWatch, closeSync, constants, fstatSync, futimesSync, linkSync, lstatSync, mkdirSync, openSync, readSync, readdirSync, renameSync,
  rmSync, rmdirSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { LockMode } from '../../atomics/queue/queue.js';
import type { Attempt, AcquireRequest, Backend, Grant, HostLockEntry, PruneReport, Renewal, Waiter } from './backend.js';
import {
  asBackend, descriptorBudget, encodeName, forgetIfDead, lockDirOf, nameIn, openNameDir, unlinkQuiet, writeFloor,
} from './file-dir.js';
import {
  ABANDONED, ENTERING, EXCLUSIVE, HELD, IDLE, MAX_TOKEN, RECORD_BYTES, type Rec, SEQ_BYTES, SHARED, type Seq, decodeRecord, encodeRecord,
  ownerHash, readSeq, writeSeq,
} from './records.js';
import { type Fifo, Fifos, M_ENTER, M_GRANT, M_GRANT_ABANDONED, M_LOST, M_POKE, M_READ, type Message } from './fifo.js';
import { type Self, me, provablyDeadHashed, wallClock } from '../identity.js';
import { ERR_LOCK_BACKEND } from '../../errors.js';

/** A waiter checks the gate's holder this often when nothing wakes it (a dead holder is found within this). */
export const POLL_MS = 100;
/** A queued waiter whose record has not been touched this long is passed over (frozen, or its thread blocked); it queues again when it runs. */
export const SKIP_MS = 1000;
/** b is held for µs: a live holder of it that has held it this long is frozen. */
export const BREAKER_STALE_MS = 5000;
/** An unreadable marker whose inode has not changed this long is garbage. */
export const GARBAGE_STALE_MS = 30_000;
/**
 * Names whose files this thread keeps open (two descriptors each); a name in
 * a wait of this thread is never closed. Fewer under a low `ulimit -n`.
 */
export const OPEN_NAMES = descriptorBudget(32);
/**
 * Test hook (the kill tests, test/host-kill.test.ts): LATCHKEY_TEST_PAUSE_AT
 * names a point of the hand-off where this process stops itself (SIGSTOP),
 * for the test to kill it there. Read once; costs nothing when unset.
 */
const PAUSE_AT = process.env.LATCHKEY_TEST_PAUSE_AT;
const pauseAt = PAUSE_AT === undefined || PAUSE_AT === '' ? () => {} : (point: string) => {
  if (point === PAUSE_AT) process.kill(process.pid, 'SIGSTOP');
};

/** How long a release waits for b (held for µs) before it frees the gate and pokes the head instead. */
const RELEASE_B_SPINS = 200;

const C = constants;

interface Marker {
  readonly rec: Rec | null; // null: unreadable
  readonly ino: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
}

/** One name's files as this thread has them open. */
interface NameFiles {
  readonly name: string;
  readonly dir: string;
  readonly dirIno: number;
  readonly o: string;
  readonly recFd: number;
  readonly recIno: number;
  readonly seqFd: number;
  readonly x: string;
  readonly b: string;
  readonly q: string;
  readonly s: string;
  /** Waits of this thread in progress on the name: its files stay open. */
  pins: number;
  /** Epoch ms this thread last wrote or touched the record. */
  beat: number;
  /** The last token this thread was granted. */
  lastToken: number;
  /** Inode of a b whose dead holder we broke: it died handing on, not in its section. */
  brokeB: number;
  /** The waiters after us that the message handing us the gate named: the release tries them first (no listing). */
  hints: readonly string[];
}

interface Entry {
  readonly e: string;
  readonly mode: number;
  readonly k: string;
  readonly owner: string;
}

const recBuf = Buffer.alloc(RECORD_BYTES);
const seqBuf = Buffer.alloc(SEQ_BYTES);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** Sleep this thread `ms` (b is held for µs). */
const sleepSync = (ms: number) => Atomics.wait(sleeper, 0, 0, ms);
const monoUs = () => Number(process.hrtime.bigint() / 1000n);
const modeOf = (m: LockMode) => (m === 'shared' ? SHARED : EXCLUSIVE);

/** A marker read whole: its record (null: unreadable), inode, mtime and ctime; null when it is not there. */
function readMarker(path: string): Marker | null {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted here must not block the open.
    fd = openSync(path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    const st = lstatSync(path, { throwIfNoEntry: false });
    return st === undefined ? null : { rec: null, ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { rec: null, ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
    const n = readSync(fd, recBuf, 0, RECORD_BYTES, 0);
    return { rec: decodeRecord(recBuf, n), ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
  } finally {
    closeSync(fd);
  }
}

const deadOwner = (r: Rec) => provablyDeadHashed(r);

/** Whether a marker's owner may be passed over: provably dead, or its lease (mtime + ttl) ran out. Unreadable: after GARBAGE_STALE_MS. */
function stale(m: Marker, now: number): boolean {
  if (m.rec === null) return now - m.mtimeMs > GARBAGE_STALE_MS;
  return now > m.mtimeMs + m.rec.ttl || deadOwner(m.rec);
}

const inoOf = (path: string) => lstatSync(path, { throwIfNoEntry: false })?.ino ?? -1;

function linkQuiet(from: string, to: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

function rmdirQuiet(path: string): void {
  try {
    rmdirSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw err;
  }
}

function renameQuiet(from: string, to: string): boolean {
  try {
    renameSync(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Entry names: `<since: 14 hex>-<x|s><fifo>.<n>-<owner>`; n counts this
 * thread's enqueues, and the fifo names the thread, so a name is never
 * reused (a message naming an old entry is stale).
 */
let enqueues = 0;
function entryName(since: number, mode: number, k: string, owner: string): string {
  return `${since.toString(16).padStart(14, '0')}-${mode === SHARED ? 's' : 'x'}${k}.${enqueues++}-${owner}`;
}

function parseEntry(e: string): Entry | null {
  if (e.length < 20 || e[14] !== '-') return null;
  const rest = e.slice(15), dot = rest.indexOf('.'), dash = rest.indexOf('-', dot);
  if (dot < 2 || dash < 0 || (rest[0] !== 's' && rest[0] !== 'x')) return null;
  return { e, mode: rest[0] === 's' ? SHARED : EXCLUSIVE, k: rest.slice(1, dot), owner: rest.slice(dash + 1) };
}

let asides = 0;

/** A grant as the escalator reports it. */
function grantOf(N: NameFiles, token: number, previousDied: boolean, ttl: number): Grant {
  N.lastToken = token;
  N.hints = [];
  return { token, expires: N.beat + ttl, previousDied };
}

/** An error that means the name's directory (or the whole lock directory) went away under us. */
function gone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ESTALE';
}

export class FileBackend implements Backend {
  readonly kind = 'file';
  readonly location: string;
  readonly #me: Self;
  readonly #hash: number;
  /** The lock directory's inode when this thread opened it: another means it was removed and made again. */
  #dirIno: number;
  /** Epoch ms until which a lock directory made a moment ago grants nothing (file-dir.ts STORE_GRACE_MS). */
  #graceUntil: number;
  readonly #names = new Map<string, NameFiles>();
  #fifos: Fifos | undefined;

  /**
   * `owner` is this process (identity.ts); another identity makes this
   * instance a client of its own, as if it were another process (the
   * bench's no-cohort anchor, and tests of the backend alone).
   */
  constructor(dir?: string, owner: Self = me()) {
    const d = lockDirOf(dir);
    this.location = d.path;
    this.#dirIno = d.ino;
    this.#graceUntil = d.graceUntil;
    this.#me = owner;
    this.#hash = ownerHash(owner.id);
  }

  get #f(): Fifos {
    return (this.#fifos ??= new Fifos(this.location, 'file', this.#me.id));
  }

  // --- Backend ------------------------------------------------------------------

  acquire(req: AcquireRequest): Attempt {
    const grace = this.#graceUntil - wallClock();
    if (grace > 0 && !req.once) return { later: grace };
    return this.#store(req.name, 'take', () => {
      const N = this.#files(req.name);
      const r = { mode: modeOf(req.mode), ttl: req.ttl, since: Math.round(req.since * 1000) };
      if (req.steal) return { granted: this.#steal(N, r) };
      const g = r.mode === EXCLUSIVE ? this.#fastExclusive(N, r) : this.#fastShared(N, r);
      if (g === 'entering' && req.once) {
        // Readers are in: an ifAvailable writer does not wait for them.
        this.freeGate(N);
        this.writeRecord(N, IDLE, r);
        return { unavailable: true };
      }
      if (g === 'entering') {
        const w = new FileWaiter(this, N, r);
        try {
          const first = w.enter(false);
          return typeof first === 'object' ? { granted: first } : { queued: w };
        } catch (err) {
          w.leave();
          throw err;
        }
      }
      if (g !== null) return { granted: g };
      if (req.once) {
        const once = this.#once(N, r);
        return once === null ? { unavailable: true } : { granted: once };
      }
      const w = new FileWaiter(this, N, r);
      try {
        w.enqueue();
      } catch (err) {
        w.leave();
        throw err;
      }
      return { queued: w };
    });
  }

  release(name: string, token: number | null, abandoned: boolean): void {
    this.#store(name, 'give back', () => {
      const N = this.#files(name);
      if (inoOf(N.x) === N.recIno) {
        const hints = N.hints;
        N.hints = [];
        this.#releaseGate(N, abandoned ? ABANDONED : 0, hints);
        if (token !== null) return;
      }
      // Shared: our marker of that token (token null: every marker of ours, as recovery and exit give back).
      const paths: string[] = [];
      if (token !== null) paths.push(join(N.s, `${this.#me.id}-${token}`));
      else for (const s of readdirSync(N.s)) if (s.startsWith(`${this.#me.id}-`)) paths.push(join(N.s, s));
      let left = false;
      for (const path of paths) if (inoOf(path) === N.recIno && unlinkQuiet(path)) left = true;
      if (!left) return; // taken from us already (a steal, a takeover), or never ours
      // A writer may hold the gate waiting for the readers in to leave: it counts again.
      const m = readMarker(N.x);
      if (m?.rec != null && m.rec.state === ENTERING && m.rec.fifo !== '') this.#f.send(m.rec.id, m.rec.fifo, M_POKE);
      else if (m === null && !this.#queueEmpty(N)) this.#pokeHead(N);
    });
  }

  checkStore(): void {
    // The lock directory made again: every name's files are opened afresh at their next use.
    const st = lstatSync(this.location, { throwIfNoEntry: false });
    if (st !== undefined && st.ino !== this.#dirIno) this.#forget('');
  }

  waiting(name: string): boolean {
    return this.#store(name, 'look at the queue of', () => !this.#queueEmpty(this.#files(name)));
  }

  renew(name: string, token: number, _ttl: number): Renewal {
    return this.#store(name, 'renew', () => {
      const N = this.#files(name);
      const now = new Date();
      futimesSync(N.recFd, now, now);
      N.beat = now.getTime();
      const x = lstatSync(N.x, { throwIfNoEntry: false });
      if (x?.ino === N.recIno) return { expires: N.beat + _ttl };
      // Shared: our marker of this token.
      if (inoOf(join(N.s, `${this.#me.id}-${token}`)) === N.recIno) return { expires: N.beat + _ttl };
      if (x === undefined) {
        const d = lstatSync(N.dir, { throwIfNoEntry: false });
        if (d === undefined || d.ino !== N.dirIno) {
          return {
            lost: 'marker-missing', removed: true,
            detail: `the lock's directory ${N.dir} was removed while it was held (rm -rf of the lock directory, or a tmp cleaner?): the lock is lost`,
          };
        }
        return { lost: 'marker-missing', detail: `its gate in ${N.dir} was removed (its lease had run out, or something other than latchkey removed it)` };
      }
      return { lost: 'owner-changed', detail: `another process holds it now (${N.dir})` };
    }, (err) => {
      // The directory went away while we held it: the store was removed (issue 17 item 1).
      if (gone(err)) {
        return {
          lost: 'marker-missing', removed: true,
          detail: `its lock directory ${this.location} (or the name's directory in it) was removed while it was held: the lock is lost`,
        };
      }
      throw err;
    });
  }

  query(): HostLockEntry[] {
    const out: HostLockEntry[] = [], now = wallClock(), mono = monoUs();
    let dirs: string[];
    try {
      dirs = readdirSync(this.location);
    } catch (err) {
      throw asBackend(err, 'file', `cannot list ${this.location}`);
    }
    for (const d of dirs) {
      if (d.startsWith('.')) continue;
      const dir = join(this.location, d), name = nameIn(dir);
      if (name === null) continue;
      const add = (m: Marker | null, state: 'held' | 'pending', token: number, since: number) => {
        if (m?.rec == null || deadOwner(m.rec)) return;
        const r = m.rec, expires = m.mtimeMs + r.ttl;
        if (state === 'held' && expires < now) return;
        out.push({
          name, mode: r.mode === SHARED ? 'shared' : 'exclusive', state, owner: r.id, pid: r.pid, host: r.host,
          token: state === 'held' ? token : 0, expires: state === 'held' ? expires : 0, since,
        });
      };
      const waitStart = (r: Rec) => now - (mono - r.since) / 1000;
      try {
        const x = readMarker(join(dir, 'x'));
        if (x?.rec != null) {
          let seq: Seq | 'corrupt' = 'corrupt', seqAt = x.rec.at;
          try {
            const fd = openSync(join(dir, 'seq'), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
            try {
              seq = readSeq(fd, seqBuf);
              seqAt = fstatSync(fd).mtimeMs;
            } finally {
              closeSync(fd);
            }
          } catch {
            // shown without a token
          }
          // The gate is a holding only for an exclusive holder in; a writer keeping it for readers to leave waits.
          if (x.rec.mode === EXCLUSIVE && x.rec.state === HELD) add(x, 'held', seq === 'corrupt' ? 0 : seq.token, seqAt);
          else if (x.rec.mode === EXCLUSIVE) add(x, 'pending', 0, waitStart(x.rec));
        }
        for (const s of readdirSync(join(dir, 's'))) {
          const dash = s.lastIndexOf('-'), m = readMarker(join(dir, 's', s));
          if (m?.rec != null) add(m, 'held', Number(s.slice(dash + 1)) || 0, m.rec.at);
        }
        for (const e of readdirSync(join(dir, 'q')).sort()) {
          const m = readMarker(join(dir, 'q', e, 'r'));
          if (m?.rec != null && now - m.mtimeMs <= SKIP_MS + POLL_MS) add(m, 'pending', 0, waitStart(m.rec));
        }
      } catch {
        // a name directory being removed: skipped
      }
    }
    return out;
  }

  /**
   * Tell `onMessage` of every notice to this process (a grant of ours was
   * taken: a steal, a takeover): the lease keeper reads the process's
   * notice FIFO. Never keeps the thread alive.
   */
  notices(onMessage: (m: Message) => void): void {
    this.#store('', 'open the notice FIFO in', () => this.#f.openNotice(onMessage));
  }

  prune(only?: ReadonlySet<string>): PruneReport {
    const removed: string[] = [], kept: Array<{ name: string; why: 'held' | 'waiting' | 'busy' | 'corrupt' }> = [];
    let entries: string[];
    try {
      entries = readdirSync(this.location);
    } catch (err) {
      throw asBackend(err, 'file', `cannot list ${this.location}`);
    }
    const now = wallClock();
    for (const d of entries) {
      const path = join(this.location, d);
      // Leftovers of a prune or a publish that died halfway (a publish takes µs).
      if (d.startsWith('.trash-') || ((d.startsWith('.new-') || d.startsWith('.floor-')) && now - (lstatSync(path, { throwIfNoEntry: false })?.mtimeMs ?? now) > 60_000)) {
        rmSync(path, { recursive: true, force: true });
        continue;
      }
      if (d.startsWith('.')) continue;
      const name = nameIn(path);
      if (name === null || (only !== undefined && !only.has(name))) continue;
      const why = this.#store(name, 'prune', () => this.#pruneOne(name), () => 'busy' as const);
      if (why === 'removed') removed.push(name);
      else kept.push({ name, why });
    }
    if (lstatSync(join(this.location, '.fifo'), { throwIfNoEntry: false }) !== undefined) this.#f.collectDead();
    return { removed, kept };
  }

  /**
   * One name: removed only while we hold its gate and its latch, with
   * nobody queued and no reader in; the floor raised to its last token
   * first; the directory renamed aside whole, then removed. A waiter that
   * queued in the µs before the rename is poked: it finds its directory
   * gone and queues in a new one.
   */
  #pruneOne(name: string): 'removed' | 'held' | 'waiting' | 'busy' | 'corrupt' {
    const N = this.#files(name);
    if (!this.#queueEmpty(N)) return 'waiting';
    const r: Req = { mode: EXCLUSIVE, ttl: 10_000, since: monoUs() };
    this.writeRecord(N, HELD, r);
    if (!linkQuiet(N.o, N.x) && inoOf(N.x) !== N.recIno) {
      this.writeRecord(N, IDLE, r);
      return 'held';
    }
    let taken = false;
    try {
      if (!this.#queueEmpty(N)) return 'waiting';
      if (this.liveReaders(N) > 0) return 'held';
      if (!this.takeB(N, 50)) return 'busy';
      taken = true;
      let seq: Seq;
      try {
        seq = this.readSeq(N);
      } catch {
        return 'corrupt'; // left for its operator: it says why at the next request
      }
      writeFloor(this.location, seq.token);
      const trash = join(this.location, `.trash-${this.#me.id}.${asides++}`);
      renameSync(N.dir, trash);
      taken = false;
      for (const e of readdirSync(join(trash, 'q'))) {
        const p = parseEntry(e);
        if (p !== null && p.owner !== this.#me.id) this.#f.send(p.owner, p.k, M_POKE);
      }
      rmSync(trash, { recursive: true, force: true });
      this.#closeFiles(N);
      this.#names.delete(name);
      return 'removed';
    } finally {
      if (taken) this.dropB(N);
      if (this.#names.get(name) === N && inoOf(N.x) === N.recIno) {
        this.freeGate(N);
        this.writeRecord(N, IDLE, r);
      }
    }
  }

  watch(name: string, onChange: () => void): () => void {
    const dir = join(this.location, encodeName(name));
    try {
      // The gate renamed over (a steal, a takeover), unlinked (freed by a taker), or the directory itself removed.
      const w = fsWatch(dir, { persistent: false }, (event, file) => {
        if (file === null || (event === 'rename' && (file === 'x' || file === encodeName(name)))) onChange();
      });
      w.on('error', () => onChange());
      return () => w.close();
    } catch {
      return () => {}; // no inotify (or out of watches): renewals still check
    }
  }

  /** This thread is done: close its files; with `names` (the process exits), remove its records of them; its FIFOs go back to the pool. */
  close(names: Iterable<string> = []): void {
    for (const name of names) {
      try {
        unlinkQuiet(join(this.location, encodeName(name), `o-${this.#me.id}`));
      } catch {
        // gone already
      }
    }
    for (const N of this.#names.values()) this.#closeFiles(N);
    this.#names.clear();
    this.#fifos?.returnAll();
  }

  // --- this thread's files ---------------------------------------------------------

  /**
   * Run `fn` on the store; a system error is ERR_LOCK_BACKEND with its cause.
   * When the name's directory (or the lock directory) went away under us,
   * its cached files are dropped and `fn` runs once more on a fresh
   * directory (`onGone` may answer instead).
   */
  #store<T>(name: string, what: string, fn: () => T, onGone?: (err: unknown) => T): T {
    try {
      return fn();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException)?.code;
      if (code === 'EMFILE' || code === 'ENFILE') {
        // Out of descriptors: close every name's files this thread keeps for later, and try once more.
        this.#shed();
        try {
          return fn();
        } catch (again) {
          throw asBackend(again, 'file', `cannot ${what} ${JSON.stringify(name)} in ${this.location}`);
        }
      }
      if (!gone(err)) throw asBackend(err, 'file', `cannot ${what} ${JSON.stringify(name)} in ${this.location}`);
      this.#forget(name);
      if (onGone !== undefined) return onGone(err);
      try {
        return fn();
      } catch (again) {
        throw asBackend(again, 'file', `cannot ${what} ${JSON.stringify(name)} in ${this.location}`);
      }
    }
  }

  /** Close the files of every name not in a wait of this thread, and the cached FIFO writers. */
  #shed(): void {
    for (const [name, N] of this.#names) {
      if (N.pins > 0) continue;
      this.#closeFiles(N);
      this.#names.delete(name);
    }
    this.#fifos?.shed();
  }

  /** Drop what this thread has open of `name`, and of every name if the lock directory itself was made again. */
  #forget(name: string): void {
    const st = lstatSync(this.location, { throwIfNoEntry: false });
    if (st === undefined || st.ino !== this.#dirIno) {
      for (const N of this.#names.values()) this.#closeFiles(N);
      this.#names.clear();
      this.#fifos?.returnAll();
      this.#fifos = undefined;
      const d = lockDirOf(this.location);
      this.#dirIno = d.ino;
      this.#graceUntil = d.graceUntil;
      return;
    }
    const N = this.#names.get(name);
    if (N !== undefined) {
      this.#closeFiles(N);
      this.#names.delete(name);
    }
  }

  /** @internal Drop this thread's files of `name` (its directory went away): the next use opens them afresh. */
  forgetName(name: string): void {
    this.#forget(name);
  }

  #files(name: string): NameFiles {
    const cached = this.#names.get(name);
    if (cached !== undefined) {
      // Most recently used last: the oldest is closed first.
      this.#names.delete(name);
      this.#names.set(name, cached);
      return cached;
    }
    const { path: dir, ino: dirIno } = openNameDir(this.location, name);
    const o = join(dir, `o-${this.#me.id}`);
    const recFd = openSync(o, C.O_RDWR | C.O_CREAT | C.O_NOFOLLOW, 0o600);
    let seqFd: number;
    try {
      seqFd = openSync(join(dir, 'seq'), C.O_RDWR | C.O_NOFOLLOW | C.O_NONBLOCK);
      if (!fstatSync(seqFd).isFile()) {
        closeSync(seqFd);
        throw new ERR_LOCK_BACKEND('file', `${join(dir, 'seq')} is not a file: tokens cannot be trusted (it is refused, not reset)`);
      }
    } catch (err) {
      closeSync(recFd);
      if (gone(err) && lstatSync(dir, { throwIfNoEntry: false }) !== undefined) {
        throw new ERR_LOCK_BACKEND('file', `${join(dir, 'seq')} is missing: tokens cannot be trusted (it is refused, not reset)`, { cause: err });
      }
      throw asBackend(err, 'file', `cannot open ${join(dir, 'seq')} (the token store)`);
    }
    const N: NameFiles = {
      name, dir, dirIno, o, recFd, recIno: fstatSync(recFd).ino, seqFd, x: join(dir, 'x'), b: join(dir, 'b'),
      q: join(dir, 'q'), s: join(dir, 's'), pins: 0, beat: 0, lastToken: -1, brokeB: -1, hints: [],
    };
    this.#names.set(name, N);
    if (this.#names.size > OPEN_NAMES) {
      for (const [key, old] of this.#names) {
        if (this.#names.size <= OPEN_NAMES) break;
        if (old.pins > 0 || old === N) continue;
        this.#closeFiles(old);
        this.#names.delete(key);
      }
    }
    return N;
  }

  #closeFiles(N: NameFiles): void {
    for (const fd of [N.recFd, N.seqFd]) {
      try {
        closeSync(fd);
      } catch {
        // closed already
      }
    }
  }

  // --- records and seq ---------------------------------------------------------------

  /** @internal Write our record of N (renews its lease: the mtime). */
  writeRecord(N: NameFiles, state: number, r: Req, fifo = ''): void {
    const m = this.#me, now = wallClock();
    encodeRecord(recBuf, {
      state, mode: r.mode, id: m.id, pid: m.pid, start: m.start, host: m.host, hostHash: m.hostHash, bootHash: m.bootHash, ttl: r.ttl, since: r.since, at: now, fifo,
    });
    writeSync(N.recFd, recBuf, 0, RECORD_BYTES, 0);
    N.beat = now;
  }

  /** @internal seq, refused when it cannot be trusted. */
  readSeq(N: NameFiles): Seq {
    let s = readSeq(N.seqFd, seqBuf);
    if (s === 'corrupt') s = readSeq(N.seqFd, seqBuf); // a torn read: once more
    if (s === 'corrupt') {
      throw new ERR_LOCK_BACKEND('file', `${join(N.dir, 'seq')} is corrupt: tokens could go backwards (it is refused, not reset: remove the name's directory only when no process uses the lock)`);
    }
    return s;
  }

  /** @internal Write seq (we hold the gate, or b). */
  writeSeq(N: NameFiles, s: Seq): void {
    writeSeq(N.seqFd, seqBuf, s);
  }

  /** @internal The token after `seq`'s; the end of the safe range is an error, never a wrap. */
  next(token: number): number {
    if (token + 1 > MAX_TOKEN) {
      throw new ERR_LOCK_BACKEND('file', `the tokens of this lock are spent (the last was ${token}; at most ${MAX_TOKEN}): remove its directory when no process uses it`);
    }
    return token + 1;
  }

  /** @internal Whether no process waits for N (lstat(q).nlink counts the entries' directories; 1 on a file system that does not count: then list). */
  queueEmpty(N: NameFiles): boolean {
    return this.#queueEmpty(N);
  }

  #queueEmpty(N: NameFiles): boolean {
    const n = lstatSync(N.q).nlink;
    if (n !== 1) return n === 2;
    for (const e of readdirSync(N.q)) if (lstatSync(join(N.q, e, 'r'), { throwIfNoEntry: false }) !== undefined) return false;
    return true;
  }

  get hash(): number {
    return this.#hash;
  }

  get self(): Self {
    return this.#me;
  }

  get fifos(): Fifos {
    return this.#f;
  }

  // --- taking -------------------------------------------------------------------

  /** Free gate, exclusive: link x, issue the next token. 4 syscalls. */
  #fastExclusive(N: NameFiles, r: Req): Grant | 'entering' | null {
    this.writeRecord(N, HELD, r);
    if (!linkQuiet(N.o, N.x)) {
      if (inoOf(N.x) !== N.recIno) return null;
      // Ours already: left by a thread of ours that died (recovery gives it back; this is the same).
    }
    try {
      const seq = this.readSeq(N);
      if (seq.readers > 0 && this.liveReaders(N) > 0) return 'entering';
      const token = this.next(seq.token);
      this.writeSeq(N, { grants: seq.grants + 1, flags: 0, token, readers: 0, holder: this.#hash });
      return grantOf(N, token, (seq.flags & ABANDONED) !== 0, r.ttl);
    } catch (err) {
      this.#letGo(N);
      throw err;
    }
  }

  /** A take that failed after it linked the gate (a store that cannot be trusted, a full disk): the gate goes back. */
  #letGo(N: NameFiles): void {
    try {
      if (inoOf(N.x) === N.recIno) this.freeGate(N);
    } catch {
      // the lease runs out by itself
    }
  }

  /** Free gate or readers in, shared: come in through the gate, leave a marker in s/, give the gate back. */
  #fastShared(N: NameFiles, r: Req): Grant | null {
    this.writeRecord(N, HELD, r);
    for (let spin = 0; ; spin++) {
      if (linkQuiet(N.o, N.x)) break;
      const m = readMarker(N.x);
      if (m !== null && m.ino === N.recIno) break; // ours: a thread of ours that died coming in
      // Another reader coming in holds the gate for µs: try again; anyone else: wait.
      if (m !== null && (m.rec?.mode !== SHARED || m.rec.state !== HELD || spin >= 8)) return null;
    }
    let seq: Seq, token: number;
    try {
      seq = this.readSeq(N);
      token = this.next(seq.token);
      linkQuiet(N.o, join(N.s, `${this.#me.id}-${token}`));
      // Readers keep ABANDONED for the next writer: they are told, and so is it.
      this.writeSeq(N, { grants: seq.grants + 1, flags: seq.flags, token, readers: seq.readers + 1, holder: this.#hash });
    } catch (err) {
      this.#letGo(N);
      throw err;
    }
    this.freeGate(N);
    return grantOf(N, token, (seq.flags & ABANDONED) !== 0, r.ttl);
  }

  /** ifAvailable found it held: only a stale holder with nobody queued lets us in now. */
  #once(N: NameFiles, r: Req): Grant | null {
    const m = readMarker(N.x);
    if (m !== null && m.ino !== N.recIno && stale(m, wallClock()) && this.#queueEmpty(N)) {
      this.takeover(N, m);
      const g = r.mode === EXCLUSIVE ? this.#fastExclusive(N, r) : this.#fastShared(N, r);
      if (g === 'entering') {
        this.freeGate(N);
        this.writeRecord(N, IDLE, r);
        return null;
      }
      if (g !== null) return g;
    }
    if (inoOf(N.x) !== N.recIno) this.writeRecord(N, IDLE, r);
    return null;
  }

  /** Steal: under b, the gate becomes ours in place; every holder is told at once. */
  #steal(N: NameFiles, r: Req): Grant {
    this.writeRecord(N, HELD, r);
    while (!this.takeB(N, 50));
    try {
      const m = readMarker(N.x), seq = this.readSeq(N), token = this.next(seq.token);
      this.writeSeq(N, { grants: seq.grants + 1, flags: 0, token, readers: 0, holder: this.#hash });
      const tmp = `${N.x}.${this.#me.id}.${asides++}`;
      linkSync(N.o, tmp);
      renameSync(tmp, N.x);
      let robbed = false;
      if (m !== null && m.ino !== N.recIno && m.rec !== null) {
        robbed ||= m.rec.state === HELD;
        this.#f.send(m.rec.id, 'n', M_LOST);
        if (m.rec.state === ENTERING && m.rec.fifo !== '') this.#f.send(m.rec.id, m.rec.fifo, M_POKE); // a writer waiting for readers
      }
      for (const s of readdirSync(N.s)) {
        const path = join(N.s, s), sm = readMarker(path);
        unlinkQuiet(path);
        if (sm?.rec != null && sm.ino !== N.recIno) {
          robbed = true;
          this.#f.send(sm.rec.id, 'n', M_LOST);
        }
      }
      return grantOf(N, token, robbed, r.ttl);
    } finally {
      this.dropB(N);
    }
  }

  // --- giving back and handing on ----------------------------------------------------

  /**
   * Give the gate on: to the oldest live waiter in place (under b), else
   * free it. `flags`: ABANDONED when our holder died in its section.
   */
  #releaseGate(N: NameFiles, flags: number, hints: readonly string[] = []): void {
    if (hints.length === 0 && this.#queueEmpty(N)) {
      this.freeGate(N, flags);
      return;
    }
    if (!this.takeB(N, RELEASE_B_SPINS)) {
      // b is busy for longer than a hand-off takes: free the gate; the head is poked and takes it.
      this.freeGate(N, flags);
      return;
    }
    try {
      if (inoOf(N.x) !== N.recIno) return; // taken from us meanwhile
      if (this.handOff(N, this.readSeq(N), flags, hints)) return;
      this.freeGate(N, flags);
    } finally {
      this.dropB(N);
    }
  }

  /**
   * @internal Free the gate we hold: rename it aside (only what is there
   * moves), check it was ours, remove it; then look at the queue once more,
   * for a waiter that queued after we looked. With `flags`, seq's flags
   * become them first (the next grant is told).
   */
  freeGate(N: NameFiles, flags?: number): void {
    if (flags !== undefined) {
      const seq = this.readSeq(N);
      if (seq.flags !== flags) this.writeSeq(N, { ...seq, flags });
    }
    const to = `${N.x}.${this.#me.id}.${asides++}`;
    if (!renameQuiet(N.x, to)) return;
    if (inoOf(to) !== N.recIno) {
      // Not ours (a steal got in first): put it back. If someone linked a free gate in the
      // µs between, the stealer lost it: it is told (notice FIFO), as a robbed holder is.
      if (!linkQuiet(to, N.x)) {
        const m = readMarker(to);
        if (m?.rec != null) this.#f.send(m.rec.id, 'n', M_LOST);
      }
      unlinkQuiet(to);
      return;
    }
    unlinkQuiet(to);
    // Look at q *after* the gate is free: a waiter that queued before that looks at x after.
    if (!this.#queueEmpty(N)) this.#pokeHead(N);
  }

  /**
   * @internal Under b, holding the gate (or breaking a stale one): hand it to
   * the oldest live waiter. `hints` (the waiters the message that handed us
   * the gate named) first, else the queue is listed. Exclusive: the next
   * token in seq, then rename(its r → x), then one message. A waiter whose
   * FIFO has no reader is passed over. Readers at the head all come in
   * (a marker and a token each); the writer behind them is handed the gate
   * to wait for them. Returns whether the gate left us.
   */
  handOff(N: NameFiles, seq: Seq, flags: number, hints: readonly string[]): boolean {
    const mine = this.#me.id, f = this.#f;
    // rename(2) between two links of one inode does nothing: a waiter of this process, when the
    // gate links to our record, leaves the queue by unlink instead.
    const pass = (w: Entry, path: string) => (w.owner === mine && inoOf(N.x) === N.recIno ? unlinkQuiet(path) : renameQuiet(path, N.x));
    const tried = new Set<string>();
    let token = seq.token, grants = seq.grants, handed = false;
    // Readers in (the gate was taken free, or over, while they hold): a writer is handed the gate
    // to wait for them (M_ENTER), never a grant. No reader comes in while we hold the gate.
    let readersIn: boolean | undefined;
    for (let round = 0; round < 2; round++) {
      const list = round === 0 ? hints.map(parseEntry).filter((p): p is Entry => p !== null) : this.#list(N, tried);
      for (let i = 0; i < list.length; i++) {
        const w = list[i]!;
        tried.add(w.e);
        const path = join(N.q, w.e, 'r');
        if (!f.alive(w.owner, w.k)) {
          // Nobody reads its FIFO: its process (or thread) is gone.
          if (unlinkQuiet(path)) rmdirQuiet(join(N.q, w.e));
          forgetIfDead(N.dir, w.owner);
          continue;
        }
        if (w.mode === EXCLUSIVE && (readersIn ??= seq.readers > 0 && this.liveReaders(N) > 0)) {
          if (!pass(w, path)) continue;
          if (f.send(w.owner, w.k, M_ENTER, 0, [w.e])) return true;
          handed = true;
          continue;
        }
        if (w.mode === EXCLUSIVE) {
          const next = this.next(token);
          // seq first: whoever finds itself handed the gate reads its token there without b.
          this.writeSeq(N, { grants: grants + 1, flags, token: next, readers: 0, holder: ownerHash(w.owner) });
          pauseAt('handoff:before-rename');
          if (!pass(w, path)) {
            // It left just now (nobody saw the token): seq back as it was.
            this.writeSeq(N, { grants, flags, token, readers: seq.readers, holder: seq.holder });
            continue;
          }
          token = next;
          grants += 1;
          handed = true;
          const names = [w.e, ...list.slice(i + 1).map((v) => v.e)];
          pauseAt('handoff:after-rename');
          const told = f.send(w.owner, w.k, (flags & ABANDONED) !== 0 ? M_GRANT_ABANDONED : M_GRANT, token, names);
          pauseAt('handoff:after-message');
          if (told) return true;
          // It died as it was handed the gate: the gate is with it (nobody can link x), on to the next (we still hold b).
          continue;
        }
        // Readers at the head: all in, each with its token; the writer behind them gets the gate.
        const group: Entry[] = [w];
        let writer: Entry | null = null;
        for (let j = i + 1; j < list.length; j++) {
          const v = list[j]!;
          if (!f.alive(v.owner, v.k)) continue;
          if (v.mode === SHARED) group.push(v);
          else {
            writer = v;
            break;
          }
        }
        const tokens = group.map(() => (token = this.next(token)));
        grants += group.length;
        this.writeSeq(N, { grants, flags, token, readers: seq.readers + group.length, holder: 0 });
        group.forEach((g, k) => {
          if (renameQuiet(join(N.q, g.e, 'r'), join(N.s, `${g.owner}-${tokens[k]}`))) f.send(g.owner, g.k, M_READ, tokens[k]!, [g.e]);
        });
        if (writer !== null && pass(writer, join(N.q, writer.e, 'r'))) {
          f.send(writer.owner, writer.k, M_ENTER, 0, [writer.e]);
          return true;
        }
        if (handed) {
          // The gate is with a waiter that died as it was handed it: free it.
          this.#freeStale(N, inoOf(N.x));
          return true;
        }
        return false; // the caller frees the gate (readers hold without it)
      }
    }
    if (handed) {
      // Every waiter we handed the gate to was dead: it is with the last of them; free it.
      this.#freeStale(N, inoOf(N.x));
      return true;
    }
    return false;
  }

  /** The queue, oldest first, without `tried`; a waiter whose record is older than SKIP_MS is passed over (and leaves it). */
  #list(N: NameFiles, tried: Set<string>): Entry[] {
    let entries: string[];
    try {
      entries = readdirSync(N.q);
    } catch {
      return [];
    }
    entries.sort();
    const now = wallClock(), out: Entry[] = [];
    for (const e of entries) {
      if (tried.has(e)) continue;
      const p = parseEntry(e), path = join(N.q, e, 'r');
      const st = lstatSync(path, { throwIfNoEntry: false });
      if (st === undefined) {
        rmdirQuiet(join(N.q, e)); // a husk: its waiter left, or was handed the gate
        continue;
      }
      if (p === null) continue; // not ours to judge
      if (now - st.mtimeMs > SKIP_MS) {
        // Frozen, or its thread blocked: passed over; it queues again when it runs.
        if (unlinkQuiet(path)) rmdirQuiet(join(N.q, e));
        continue;
      }
      out.push(p);
      if (out.length > 8) break;
    }
    return out;
  }

  /** Under b: free a gate that links to `ino` (a dead waiter's, a stale holder's), and poke the head. */
  #freeStale(N: NameFiles, ino: number): void {
    const to = `${N.x}.${this.#me.id}.${asides++}`;
    if (!renameQuiet(N.x, to)) return;
    if (inoOf(to) !== ino) linkQuiet(to, N.x);
    unlinkQuiet(to);
    if (!this.#queueEmpty(N)) this.#pokeHead(N);
  }

  /**
   * @internal Take over a gate whose holder is stale (dead, or its lease ran
   * out): under b, check it is still the one judged, tell the next holder
   * it was abandoned if it died in its section (persisted in seq: issue 17
   * item 3), and hand the gate on as its releaser would have.
   */
  takeover(N: NameFiles, judged: Marker): void {
    if (!this.takeB(N, 0)) return;
    try {
      const m = readMarker(N.x);
      if (m === null || m.ino !== judged.ino || !stale(m, wallClock())) return;
      const seq = this.readSeq(N);
      let flags = seq.flags;
      // Died (or lost its lease) in its exclusive section: seq says the gate's token is its own,
      // and it did not die holding b (that is a release in progress: its section was over).
      if (m.rec !== null && m.rec.state === HELD && m.rec.mode === EXCLUSIVE && seq.holder === ownerHash(m.rec.id) && N.brokeB !== m.ino) {
        flags |= ABANDONED;
      }
      N.brokeB = -1;
      if (flags !== seq.flags) this.writeSeq(N, { ...seq, flags });
      // Frozen, not dead: told on its notice FIFO (it reads it when it runs again).
      if (m.rec !== null && !deadOwner(m.rec)) this.#f.send(m.rec.id, 'n', M_LOST);
      if (!this.handOff(N, { ...seq, flags }, flags, [])) this.#freeStale(N, judged.ino);
    } finally {
      this.dropB(N);
    }
    // The dead owner's record: nobody reads it any more once the gate left it.
    if (judged.rec !== null) forgetIfDead(N.dir, judged.rec.id);
  }

  /** @internal Count the live readers in s/ (stale ones removed, and told: only the gate's holder does this). */
  liveReaders(N: NameFiles): number {
    let live = 0;
    const now = wallClock();
    for (const s of readdirSync(N.s)) {
      const path = join(N.s, s), m = readMarker(path);
      if (m === null) continue;
      if (m.ino === N.recIno || stale(m, now)) {
        unlinkQuiet(path);
        if (m.rec !== null && m.ino !== N.recIno && !deadOwner(m.rec)) this.#f.send(m.rec.id, 'n', M_LOST);
        else if (m.rec !== null && m.ino !== N.recIno) forgetIfDead(N.dir, m.rec.id);
        continue;
      }
      live++;
    }
    return live;
  }

  #pokeHead(N: NameFiles): void {
    let entries: string[];
    try {
      entries = readdirSync(N.q).sort();
    } catch {
      return;
    }
    for (const e of entries) {
      const p = parseEntry(e);
      // A husk (its waiter was handed the gate, or left) is not the head.
      if (p !== null && inoOf(join(N.q, e, 'r')) >= 0 && this.#f.send(p.owner, p.k, M_POKE)) return;
    }
  }

  /** @internal b, the name's latch (µs). A dead holder of it is broken at once, a frozen one after BREAKER_STALE_MS. */
  takeB(N: NameFiles, spins: number): boolean {
    for (let round = 0, breaks = 0; round <= spins; round++) {
      if (linkQuiet(N.o, N.b)) return true;
      const m = readMarker(N.b);
      if (m === null) continue;
      if (m.ino === N.recIno) return true; // ours, left by a thread of ours that died in it
      const now = wallClock();
      // link(2) set b's ctime: how long it has been held (unless its owner wrote its record since).
      const dead = m.rec === null ? now - m.ctimeMs > GARBAGE_STALE_MS : deadOwner(m.rec);
      if (dead || now - m.ctimeMs > BREAKER_STALE_MS) {
        if (dead) N.brokeB = m.ino; // died inside a latch section: it was handing on or taking over, not in its own section
        const to = `${N.b}.${this.#me.id}.${asides++}`;
        if (renameQuiet(N.b, to)) {
          if (inoOf(to) !== m.ino) linkQuiet(to, N.b);
          unlinkQuiet(to);
        }
        if (breaks++ < 2) round--; // broken: take it now
        continue;
      }
      if (round < spins) sleepSync(0.05);
    }
    return false;
  }

  /** @internal Drop b: a plain unlink (nobody breaks a b held for µs by a live process). */
  dropB(N: NameFiles): void {
    if (inoOf(N.b) === N.recIno) unlinkQuiet(N.b);
  }

  /** @internal Our marker in s/, if a hand-off made us a reader. */
  myMarker(N: NameFiles): { path: string; token: number } | null {
    const prefix = `${this.#me.id}-`;
    for (const s of readdirSync(N.s)) {
      if (s.startsWith(prefix) && inoOf(join(N.s, s)) === N.recIno) return { path: join(N.s, s), token: Number(s.slice(prefix.length)) };
    }
    return null;
  }

  /** @internal A hand-off to us ended without us: give what came on (the gate, a reader's marker). */
  passOn(N: NameFiles): void {
    if (inoOf(N.x) === N.recIno) this.#releaseGate(N, 0);
    const marker = this.myMarker(N);
    if (marker !== null) {
      unlinkQuiet(marker.path);
      const m = readMarker(N.x);
      if (m?.rec != null && m.rec.state === ENTERING && m.rec.fifo !== '') this.#f.send(m.rec.id, m.rec.fifo, M_POKE);
      else if (m === null && !this.#queueEmpty(N)) this.#pokeHead(N);
    }
  }

  /** @internal Wrap a waiter's step in the store's error rules. */
  guard<T>(N: NameFiles, what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (gone(err)) throw err; // the caller starts again on a fresh directory
      throw asBackend(err, 'file', `cannot ${what} ${JSON.stringify(N.name)} in ${this.location}`);
    }
  }
}

/** What a request asks of the backend, as its waiter keeps it. */
interface Req {
  readonly mode: number;
  readonly ttl: number;
  /** CLOCK_MONOTONIC µs: its place in line. */
  readonly since: number;
}

/** A request of this thread queued in a name's q/ (or a writer holding the gate while readers leave). */
class FileWaiter implements Waiter {
  readonly name: string;
  #phase: 'new' | 'queued' | 'entering' | 'done' = 'new';
  #entry = '';
  #fifo: Fifo | null = null;
  #husk: string | null = null;

  constructor(readonly b: FileBackend, readonly N: NameFiles, readonly r: Req) {
    this.name = N.name;
    N.pins++;
  }

  get fifo(): string {
    return this.#fifo?.path ?? '';
  }

  #claim(): Fifo {
    return (this.#fifo ??= this.b.fifos.claim());
  }

  /** Into the queue: HELD already (if the gate is handed to us we are in without another write), then look at x again. */
  enqueue(): void {
    const { b, N, r } = this;
    b.guard(N, 'queue for', () => {
      const f = this.#claim();
      b.writeRecord(N, HELD, r, f.k);
      this.#entry = entryName(r.since, r.mode, f.k, b.self.id);
      const dir = join(N.q, this.#entry);
      for (;;) {
        try {
          mkdirSync(dir, { mode: 0o700 });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
        try {
          linkSync(N.o, join(dir, 'r'));
          break;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EEXIST') break;
          if (code !== 'ENOENT' || lstatSync(N.q, { throwIfNoEntry: false }) === undefined) throw err;
          // our entry's directory was swept as a husk meanwhile: again
        }
      }
      this.#phase = 'queued';
    });
  }

  step(): Grant | number | 'restart' {
    const { b, N } = this;
    try {
      if (this.#phase === 'entering') return this.#enteringStep();
      if (this.#phase !== 'queued') throw new Error('latchkey: internal error: a waiter looked after it ended');
      return this.#queuedStep();
    } catch (err) {
      if (!gone(err)) throw asBackend(err, 'file', `cannot wait for ${JSON.stringify(N.name)} in ${b.location}`);
      // The name's directory (or the lock directory) went away under the wait: queue again in the new one.
      this.#end();
      b.forgetName(this.name);
      return 'restart';
    }
  }

  #heartbeat(): void {
    const { N } = this, now = wallClock();
    if (now - N.beat >= POLL_MS / 2) {
      const t = new Date(now);
      futimesSync(N.recFd, t, t); // a waiter's lease: the hand-off passes over one not touched for SKIP_MS
      N.beat = now;
    }
  }

  #queuedStep(): Grant | number {
    const { b, N, r } = this, f = this.#fifo!;
    this.#heartbeat();
    const rPath = join(N.q, this.#entry, 'r');
    // x before r: rename(r → x) is atomic, so "r gone and x not ours" seen in this order
    // is looked at once more (the rename may have fallen between the two lstats).
    let xIno = inoOf(N.x);
    const queued = inoOf(rPath) === N.recIno;
    if (!queued && xIno !== N.recIno) xIno = inoOf(N.x);
    if (xIno === N.recIno) {
      if (!queued) return this.#takeHanded();
      // We hold the gate and are still queued: we took it free (below) and the queue comes first.
      return this.#serve();
    }
    if (!queued) {
      if (r.mode === SHARED) {
        const last = f.last;
        const byMsg = last !== null && last.kind === M_READ && last.target === this.#entry ? join(N.s, `${b.self.id}-${last.token}`) : null;
        const marker = byMsg !== null && inoOf(byMsg) === N.recIno ? { path: byMsg, token: last!.token } : b.myMarker(N);
        if (marker !== null) return this.#granted(marker.token, false);
      }
      if (lstatSync(N.q, { throwIfNoEntry: false }) === undefined) {
        // The name's directory went away under us (pruned, or the store removed): queue in the new one.
        const e = new Error('the name directory went away') as NodeJS.ErrnoException;
        e.code = 'ENOENT';
        throw e;
      }
      // Passed over (we were frozen or slow) or our gate was taken: back in line, same place.
      this.enqueue();
      return 0;
    }
    if (xIno < 0) {
      // The gate is free while we wait (its releaser missed us): take it and serve the queue.
      if (linkQuiet(N.o, N.x)) return this.#serve();
      return 0;
    }
    const m = readMarker(N.x);
    if (m !== null && m.ino !== N.recIno && stale(m, wallClock())) {
      b.takeover(N, m);
      return 0;
    }
    // A live holder: sleep until our FIFO speaks, or poll (jittered, so waiters do not poll together).
    return POLL_MS * (0.75 + Math.random() / 2);
  }

  /** We hold the gate (taken free) while queued: hand it to the oldest waiter, which may be us. */
  #serve(): number {
    const { b, N } = this;
    if (b.takeB(N, 5)) {
      try {
        if (inoOf(N.x) === N.recIno) {
          const seq = b.readSeq(N);
          if (!b.handOff(N, seq, seq.flags, [])) b.freeGate(N);
        }
      } finally {
        b.dropB(N);
      }
    }
    return 0;
  }

  /** The gate was handed to us: in, or (a writer behind readers) wait for them to leave. */
  #takeHanded(): Grant | number {
    const { b, N, r } = this, f = this.#fifo!;
    this.#husk = join(N.q, this.#entry);
    // Frozen past our lease? Then a breaker may be handing it on: do not trust it.
    // (A blocked lockSync's record is touched by its own steps: ask the file.)
    if (wallClock() > N.beat + r.ttl) {
      N.beat = fstatSync(N.recFd).mtimeMs;
      if (wallClock() > N.beat + r.ttl) {
        this.enqueue();
        return 0;
      }
    }
    const last = f.last;
    if (last !== null && last.target === this.#entry) {
      if (last.kind === M_GRANT || last.kind === M_GRANT_ABANDONED) return this.#granted(last.token, last.kind === M_GRANT_ABANDONED, last.hints);
      if (last.kind === M_ENTER) return this.enter(true);
    }
    // No message (its releaser died after the rename, or it is on its way): seq has our token
    // (a releaser writes seq before it renames), unless we must wait for readers.
    const seq = b.readSeq(N);
    if (seq.holder === b.hash && seq.token > N.lastToken && seq.readers === 0) return this.#granted(seq.token, (seq.flags & ABANDONED) !== 0);
    return this.enter(true);
  }

  /** @internal Holding the gate as a writer: in once no reader is left (under b: it writes seq). */
  enter(_handed: boolean): Grant | number {
    const { b, N, r } = this;
    return b.guard(N, 'take', () => {
      if (!b.takeB(N, 50)) {
        this.#phase = 'entering';
        return 1;
      }
      try {
        if (inoOf(N.x) !== N.recIno) {
          // Taken from us meanwhile (a steal): back in line.
          this.enqueue();
          return 0;
        }
        const seq = b.readSeq(N);
        if (seq.readers > 0) {
          // Say ENTERING *before* counting the readers: a reader leaves by unlinking its marker and
          // then reading our record, so either it sees ENTERING and pokes us, or we see it gone.
          if (this.#phase !== 'entering') {
            const f = this.#claim();
            b.writeRecord(N, ENTERING, r, f.k);
            this.#phase = 'entering';
          }
          if (b.liveReaders(N) > 0) return POLL_MS;
        }
        const token = b.next(seq.token);
        b.writeRecord(N, HELD, r, this.#fifo?.k ?? '');
        b.writeSeq(N, { grants: seq.grants + 1, flags: 0, token, readers: 0, holder: b.hash });
        return this.#granted(token, (seq.flags & ABANDONED) !== 0);
      } finally {
        b.dropB(N);
      }
    });
  }

  #enteringStep(): Grant | number {
    const { N } = this;
    this.#heartbeat();
    if (inoOf(N.x) !== N.recIno) {
      this.enqueue();
      return 0;
    }
    return this.enter(false);
  }

  #granted(token: number, abandoned: boolean, hints: readonly string[] = []): Grant {
    const g = grantOf(this.N, token, abandoned, this.r.ttl);
    this.N.hints = hints;
    this.#end();
    return g;
  }

  #end(): void {
    if (this.#phase === 'done') return;
    this.#phase = 'done';
    this.N.pins--;
    if (this.#fifo !== null) this.b.fifos.release(this.#fifo);
    this.#fifo = null;
    // Our entry's directory, left empty by the hand-off: removed off the hand-over's path.
    const husk = this.#husk ?? (this.#entry === '' ? null : join(this.N.q, this.#entry));
    if (husk !== null) setImmediate(() => {
      try {
        rmdirQuiet(husk);
      } catch {
        // swept by a lister
      }
    });
  }

  arm(onWake: (grant: Grant | null) => void): void {
    const f = this.#fifo;
    if (f === null) return;
    f.arm((m) => {
      if (this.#phase !== 'queued') {
        onWake(null);
        return;
      }
      // A grant for our entry is taken in the read callback itself: one lstat.
      if ((m.kind === M_GRANT || m.kind === M_GRANT_ABANDONED) && m.names[0] === this.#entry) {
        try {
          const { N, r } = this;
          if (inoOf(N.x) === N.recIno && wallClock() <= N.beat + r.ttl) {
            this.#husk = join(N.q, this.#entry);
            onWake(this.#granted(m.value, m.kind === M_GRANT_ABANDONED, m.names.slice(1)));
            return;
          }
        } catch {
          // looked at again by the step
        }
      }
      onWake(null);
    });
  }

  disarm(): void {
    this.#fifo?.disarm();
  }

  readBlocking(): void {
    this.#fifo?.readBlocking();
  }

  poll(): boolean {
    return this.#fifo?.poll() ?? false;
  }

  leave(): void {
    const { b, N, r } = this;
    if (this.#phase === 'done') return;
    const phase = this.#phase;
    try {
      if (phase === 'queued') {
        const rPath = join(N.q, this.#entry, 'r');
        if (unlinkQuiet(rPath)) rmdirQuiet(join(N.q, this.#entry));
        else {
          // Handed to us as we left: pass it on (we never went in: the flags go on too).
          rmdirQuiet(join(N.q, this.#entry));
          b.passOn(N);
        }
      } else if (inoOf(N.x) === N.recIno) {
        b.passOn(N); // a writer of ours holding the gate for readers to leave
      }
      if (inoOf(N.x) !== N.recIno) b.writeRecord(N, IDLE, r);
    } catch {
      // the name went away: nothing of ours is left to give back
    } finally {
      this.#end();
    }
  }
}

