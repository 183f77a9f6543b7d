/**
 * The file backend: host locks as hard links in a lock directory
 * (file-dir.ts draws it). Chosen by measurement over an exclusive-create
 * marker (open O_EXCL + write + close + unlink): a hard link allocates no
 * inode and writes no data block, so link + unlink costs 7 µs here against
 * 23 µs for create + unlink, and the marker is complete the moment it
 * exists (bench/README.md has the figures). flock(2) was not an option: it
 * needs a native addon, and a holder frozen by SIGSTOP keeps a kernel lock
 * forever, where a lease lets the others go on.
 *
 * Each process writes one record per name, `o-<owner>` (RECORD_BYTES of
 * JSON, rewritten in place by pwrite): its pid, start time, boot, host, the
 * mode, state, token and lease expiry. Every marker is a hard link to the
 * record of the process it stands for, so reading a marker reads its
 * owner, whole, and renewing a lease (a pwrite into our own inode) can
 * never touch anybody else's marker:
 *
 *   x       the gate: held by the exclusive holder for as long as it holds,
 *           by a shared holder for the few µs it takes to come in, and by a
 *           writer while it waits for the readers in to leave (no new
 *           reader comes in meanwhile)
 *   s-<o>   one per shared holder
 *   w-<o>   one per waiting process (query(), and cohorts yield to it)
 *   heir    a waiter that has waited HOST_FAIR_MS: whoever else takes the
 *           gate while the heir's record is fresh gives it back at once
 *   b       the breaker: held while a stale marker is taken away, so that
 *           two takers never both win (rename-then-recheck under it)
 *   seq     float64s: the last token, ABANDONED, readers that came in
 *           since the last writer (a hint: a writer counts s-* only then),
 *           and whose turn it is since when (TURN_MS)
 *
 * A marker is stale when its owner is provably dead (identity.ts) or its
 * lease has run out; an unreadable one when its record has not been
 * written for GARBAGE_STALE_MS. Stale markers are renamed aside under `b`
 * and checked to be the one examined before they are removed.
 */
import {
  closeSync, constants, fstatSync, futimesSync, linkSync, lstatSync, openSync, readSync, readdirSync, renameSync, watch, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { LockMode } from '../../atomics/queue/queue.js';
import type { Attempt, AttemptRequest, Backend, HostLockEntry, Renewal } from './backend.js';
import { nameIn, openLockDir, openNameDir, unlinkQuiet } from './file-dir.js';
import { type Owner, me, monotonicMs, provablyDead, wallClock } from '../identity.js';
import { ERR_LOCK_BACKEND } from '../../errors.js';

export const RECORD_BYTES = 512;
/** A waiter that has waited this long claims `heir` and goes next (the thread tier's FAIR_MS, across processes). */
export const HOST_FAIR_MS = 1;
/**
 * How long a process may keep re-taking the lock while an heir waits: its
 * turn. Handing over costs a wake-up in another process (~100-300 µs here),
 * so a turn of one grant would spend most of the time handing over; a turn
 * of TURN_MS lets the holder run on for a while, and bounds every wait by
 * about (processes waiting) × (TURN_MS + one hand-over).
 */
export const TURN_MS = 1;
/** An heir whose record has not been written this long is ignored (a waiter rewrites it at least every POLL_MS). */
export const HEIR_STALE_MS = 500;
/** How often a waiter checks that a live holder still lives, when nothing wakes it. */
export const POLL_MS = 100;
/** An unreadable marker whose record has not been written this long is broken. */
export const GARBAGE_STALE_MS = 30_000;
/** A breaker holds `b` for µs; one that has held it this long is frozen or dead. */
export const BREAKER_STALE_MS = 5_000;
/** Names whose files a thread keeps open (two descriptors each); the least recently opened is closed past this. */
const OPEN_NAMES = 256;

type State = 'waiting' | 'entering' | 'held' | 'idle';

interface Rec extends Owner {
  readonly v: 1;
  readonly mode: LockMode;
  readonly state: State;
  readonly token: number;
  readonly expires: number;
  readonly ttl: number;
  /** Monotonic ms the wait began (arrival order); epoch ms in `at`. */
  readonly since: number;
  readonly at: number;
}

interface Marker {
  readonly rec: Rec | null; // null: unreadable
  readonly ino: number;
  readonly mtimeMs: number;
}

interface NameFiles {
  readonly dir: string;
  readonly o: string;
  readonly fd: number;
  readonly ino: number;
  readonly seq: number;
  /** This thread published a waiter marker (or claimed heir) since its last grant. */
  published: boolean;
}

const SEQ_TOKEN = 0;
const SEQ_FLAGS = 1;
const SEQ_READERS = 2;
/** The process whose turn it is (a tag of its owner id) and when its turn began (epoch ms). */
const SEQ_TURN_OWNER = 3;
const SEQ_TURN_SINCE = 4;
const SEQ_WORDS = 5;
const SEQ_ABANDONED = 1;

function parseRec(text: string): Rec | null {
  try {
    const r = JSON.parse(text) as Partial<Rec>;
    if (r.v !== 1 || typeof r.id !== 'string' || typeof r.pid !== 'number' || typeof r.start !== 'string'
      || typeof r.boot !== 'string' || typeof r.host !== 'string' || (r.mode !== 'exclusive' && r.mode !== 'shared')
      || typeof r.token !== 'number' || typeof r.expires !== 'number' || typeof r.state !== 'string') return null;
    return r as Rec;
  } catch {
    return null;
  }
}

function readMarker(path: string): Marker | null {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted there must not block the open.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return unreadable(path); // a symlink (ELOOP), no rights …
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { rec: null, ino: st.ino, mtimeMs: st.mtimeMs }; // a directory, a FIFO …: garbage
    const buf = Buffer.alloc(RECORD_BYTES);
    const n = readSync(fd, buf, 0, RECORD_BYTES, 0);
    return { rec: parseRec(buf.toString('utf8', 0, n).trimEnd()), ino: st.ino, mtimeMs: st.mtimeMs };
  } finally {
    closeSync(fd);
  }
}

/** A marker that cannot be read: garbage (it fails closed, and is broken after GARBAGE_STALE_MS), or null if gone. */
function unreadable(path: string): Marker | null {
  const st = lstatSync(path, { throwIfNoEntry: false });
  return st === undefined ? null : { rec: null, ino: st.ino, mtimeMs: st.mtimeMs };
}

/** link(2) that answers false when the target exists. */
function linkIfAbsent(from: string, to: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

function inoOf(path: string): number {
  return lstatSync(path, { throwIfNoEntry: false })?.ino ?? -1;
}

export class FileBackend implements Backend {
  readonly kind = 'file';
  readonly location: string;
  readonly #me: Owner;
  readonly #names = new Map<string, NameFiles>();
  /** Names closed (past OPEN_NAMES) while their waiter markers were out. */
  readonly #publishedClosed = new Set<string>();
  readonly #seq = new Float64Array(SEQ_WORDS);
  /** This process in SEQ_TURN_OWNER: 48 bits of its owner id's hash (a float64 holds them exactly). */
  readonly #tag: number;
  readonly #record = Buffer.alloc(RECORD_BYTES);

  /**
   * `owner` is this process (identity.ts); another identity makes this
   * instance a client of its own, as if it were another process (the
   * bench's no-cohort anchor, and tests of the backend alone).
   */
  constructor(dir?: string, owner: Owner = me()) {
    this.location = openLockDir(dir);
    this.#me = owner;
    this.#tag = parseInt(createHash('sha256').update(owner.id).digest('hex').slice(0, 12), 16);
  }

  attempt(req: AttemptRequest): Attempt {
    const f = this.#files(req.name), x = join(f.dir, 'x');
    // The record must be whole before the gate links to it: write it first,
    // with the token the grant will have if nobody gets in between (checked
    // below). A holder that dies before its grant is so reported abandoned
    // for nothing: the safe side.
    let token = this.#readSeq(f)[SEQ_TOKEN] + 1;
    this.#write(f, req.mode, 'held', token, wallClock() + req.ttl, req.ttl, req.since);
    let previousDied = false;
    for (let round = 0; round < 8; round++) {
      // 1. The gate.
      if (!linkIfAbsent(f.o, x)) {
        const holder = readMarker(x);
        if (holder === null) continue; // released meanwhile
        if (holder.ino !== f.ino) {
          const stale = this.#stale(holder);
          if (!req.steal && !stale) return this.#wait(f, req, this.#retryAt(holder));
          const broken = this.#break(f, 'x', req.steal);
          if (broken === 'busy') return this.#wait(f, req, wallClock() + 1);
          // A holder that died (or lost its lease) inside its exclusive section: the next one is told.
          if (broken === 'broken' && holder.rec?.mode === 'exclusive' && holder.rec.state === 'held') previousDied = true;
          continue;
        }
        // Ours already: a writer of ours waiting for readers, or left by a thread of ours that died.
      }
      // 2. Through the gate. A fresh heir goes first (unless this is a steal),
      // once the process whose turn it is has had TURN_MS.
      const seq = this.#readSeq(f), now = wallClock(), expires = now + req.ttl;
      if (seq[SEQ_FLAGS] & SEQ_ABANDONED) previousDied = true;
      const myTurn = seq[SEQ_TURN_OWNER] === this.#tag && now - seq[SEQ_TURN_SINCE] < TURN_MS;
      if (!req.steal && !myTurn && this.#heirBlocks(f)) {
        // Yielding after taking a dead holder's marker away: the news is the heir's now.
        if (previousDied) this.#writeSeq(f, seq[SEQ_TOKEN], seq[SEQ_FLAGS] | SEQ_ABANDONED, seq[SEQ_READERS], seq[SEQ_TURN_OWNER], seq[SEQ_TURN_SINCE]);
        unlinkQuiet(x);
        return this.#wait(f, req, wallClock() + HEIR_STALE_MS);
      }
      const turnOwner = this.#tag, turnSince = seq[SEQ_TURN_OWNER] === this.#tag ? seq[SEQ_TURN_SINCE] : now;
      if (seq[SEQ_TOKEN] + 1 !== token) {
        token = seq[SEQ_TOKEN] + 1;
        this.#write(f, req.mode, 'held', token, expires, req.ttl, req.since);
      }
      if (req.mode === 'exclusive') {
        if (seq[SEQ_READERS] > 0 && this.#liveReaders(f, req.steal) > 0) {
          // Keep the gate: no new reader comes in while we wait for these to leave.
          this.#write(f, 'exclusive', 'entering', 0, expires, req.ttl, req.since);
          return this.#wait(f, req, wallClock() + POLL_MS, true);
        }
        this.#writeSeq(f, token, 0, 0, turnOwner, turnSince);
        this.#stopWaiting(f);
        return { granted: true, token, expires, previousDied };
      }
      // Readers keep ABANDONED for the next writer: they are told, and so is it.
      this.#writeSeq(f, token, seq[SEQ_FLAGS], seq[SEQ_READERS] + 1, turnOwner, turnSince);
      linkIfAbsent(f.o, join(f.dir, `s-${this.#me.id}`));
      unlinkQuiet(x);
      this.#stopWaiting(f);
      return { granted: true, token, expires, previousDied };
    }
    return this.#wait(f, req, wallClock() + 1);
  }

  renew(name: string, token: number, ttl: number): Renewal {
    const f = this.#files(name), rec = this.#own(f);
    if (rec === null || rec.token !== token || rec.state !== 'held') {
      return { lost: 'owner-changed', detail: `this process's record of ${JSON.stringify(name)} no longer holds token ${token}` };
    }
    const expires = wallClock() + ttl;
    this.#write(f, rec.mode, 'held', token, expires, ttl, rec.since, rec.at);
    const marker = join(f.dir, rec.mode === 'exclusive' ? 'x' : `s-${this.#me.id}`), ino = inoOf(marker);
    if (ino === f.ino) return { expires };
    if (ino < 0) return { lost: 'marker-missing', detail: `its marker in ${f.dir} was taken away (lease expired or stolen)` };
    return { lost: 'owner-changed', detail: `another process holds it now (${f.dir})` };
  }

  release(name: string, token: number | null, abandoned: boolean): void {
    const f = this.#files(name), rec = this.#own(f);
    if (token === null) this.#stopWaiting(f, true);
    if (rec === null || (token !== null && rec.token !== token) || rec.state !== 'held') return;
    if (rec.mode === 'shared') {
      const s = join(f.dir, `s-${this.#me.id}`);
      if (inoOf(s) === f.ino) unlinkQuiet(s);
      return;
    }
    const x = join(f.dir, 'x');
    if (inoOf(x) !== f.ino) return; // taken from us already
    if (abandoned) {
      const seq = this.#readSeq(f);
      this.#writeSeq(f, seq[SEQ_TOKEN], seq[SEQ_FLAGS] | SEQ_ABANDONED, seq[SEQ_READERS], seq[SEQ_TURN_OWNER], seq[SEQ_TURN_SINCE]);
    }
    // With half the lease left nobody may break it: unlink. Nearer its end,
    // a breaker could be about to: give it back under `b`, as breakers do.
    if (rec.expires - wallClock() > rec.ttl / 2) {
      unlinkQuiet(x);
      return;
    }
    if (!this.#takeBreaker(f)) return; // a breaker is at it: the lease is over anyway
    try {
      if (inoOf(x) === f.ino) unlinkQuiet(x);
    } finally {
      this.#dropBreaker(f);
    }
  }

  withdraw(name: string): void {
    const f = this.#files(name), rec = this.#own(f);
    this.#stopWaiting(f, true);
    if (rec !== null && rec.state !== 'held') {
      const x = join(f.dir, 'x');
      if (inoOf(x) === f.ino) unlinkQuiet(x); // a writer of ours that was waiting for readers
      this.#write(f, rec.mode, 'idle', 0, 0, rec.ttl, rec.since);
    }
  }

  othersWaiting(name: string): boolean {
    const f = this.#files(name);
    for (const entry of readdirSync(f.dir)) {
      if (!entry.startsWith('w-') || entry === `w-${this.#me.id}`) continue;
      const m = readMarker(join(f.dir, entry));
      if (m?.rec != null && !provablyDead(m.rec)) return true;
      if (m?.rec != null) this.#forget(f.dir, m.rec.id); // a dead waiter's leftovers
    }
    return false;
  }

  query(): HostLockEntry[] {
    const out: HostLockEntry[] = [], now = wallClock();
    let dirs: string[];
    try {
      dirs = readdirSync(this.location);
    } catch {
      return out;
    }
    for (const d of dirs) {
      const dir = join(this.location, d), name = nameIn(dir);
      if (name === null) continue;
      let entries: string[];
      try {
        entries = readdirSync(dir);
      } catch {
        continue;
      }
      for (const e of entries) {
        if (e !== 'x' && !e.startsWith('s-') && !e.startsWith('w-')) continue;
        const m = readMarker(join(dir, e));
        if (m?.rec == null || provablyDead(m.rec)) continue;
        const r = m.rec;
        // The gate is a holding only for an exclusive holder; a writer keeping it for readers to leave waits.
        if (e === 'x' && r.mode === 'shared') continue;
        const held = e.startsWith('s-') || (e === 'x' && r.state === 'held');
        if (held && r.expires < now) continue;
        out.push({
          name, mode: r.mode, state: held ? 'held' : 'pending', owner: r.id, pid: r.pid, host: r.host,
          token: held ? r.token : 0, expires: held ? r.expires : 0, since: r.at,
        });
      }
    }
    return out;
  }

  watch(name: string, onChange: () => void): () => void {
    try {
      // Only a marker coming or going can let a waiter in (or tell a holder
      // it lost one); records and seq are rewritten on every attempt, and
      // waking on those would wake every waiter on every other's attempt.
      const f = this.#files(name), heir = join(f.dir, 'heir');
      const w = watch(f.dir, { persistent: false }, (event, file) => {
        if (file !== null && event !== 'rename') return;
        // While another process is heir, the gate changing hands is not our
        // turn: wait for the heir to go instead (one wake-up per hand-over,
        // not one per grant of the process whose turn it is).
        if (file === 'x') {
          const ino = inoOf(heir);
          if (ino >= 0 && ino !== f.ino) return;
        }
        if (file === null || file === 'x' || file === 'heir' || file.startsWith('s-')) onChange();
      });
      w.on('error', () => {}); // the waiters' polling goes on
      return () => w.close();
    } catch {
      return () => {}; // no inotify (or out of watches): the waiters poll
    }
  }

  /** Remove everything of this process for these names (at exit), and close the files. */
  close(names: Iterable<string> = []): void {
    for (const name of names) {
      const f = this.#names.get(name);
      if (f !== undefined) this.#forget(f.dir, this.#me.id, f.ino);
    }
    for (const f of this.#names.values()) {
      closeSync(f.fd);
      closeSync(f.seq);
    }
    this.#names.clear();
  }

  #files(name: string): NameFiles {
    const cached = this.#names.get(name);
    if (cached !== undefined) return cached;
    const dir = openNameDir(this.location, name), o = join(dir, `o-${this.#me.id}`);
    const flags = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW;
    const fd = openSync(o, flags, 0o600), seq = openSync(join(dir, 'seq'), flags, 0o600);
    // A name closed while this thread had markers out keeps that news: they are taken away after its grant.
    const f: NameFiles = { dir, o, fd, ino: fstatSync(fd).ino, seq, published: this.#publishedClosed.delete(name) };
    if (this.#names.size >= OPEN_NAMES) {
      const [oldest, files] = this.#names.entries().next().value as [string, NameFiles];
      closeSync(files.fd);
      closeSync(files.seq);
      this.#names.delete(oldest);
      if (files.published) this.#publishedClosed.add(oldest);
    }
    this.#names.set(name, f);
    return f;
  }

  /**
   * Write this process's record. `at` (epoch ms) is when the grant was made
   * (kept by renewals) or the wait began; by default: now for a grant, the
   * wait's start (from `since`) for anything else.
   */
  #write(f: NameFiles, mode: LockMode, state: State, token: number, expires: number, ttl: number, since: number, at?: number): void {
    const m = this.#me;
    at ??= state === 'held' ? wallClock() : wallClock() - (monotonicMs() - since);
    const rec: Rec = { v: 1, id: m.id, pid: m.pid, start: m.start, boot: m.boot, host: m.host, mode, state, token, expires, ttl, since, at };
    const buf = this.#record;
    buf.fill(0x20);
    const n = buf.write(JSON.stringify(rec));
    if (n >= RECORD_BYTES) throw new ERR_LOCK_BACKEND('file', 'a lock record does not fit in its file (host name too long?)');
    // One pwrite of a whole record: a reader sees the old one or the new one.
    writeSync(f.fd, buf, 0, RECORD_BYTES, 0);
  }

  #own(f: NameFiles): Rec | null {
    const n = readSync(f.fd, this.#record, 0, RECORD_BYTES, 0);
    return parseRec(this.#record.toString('utf8', 0, n).trimEnd());
  }

  #readSeq(f: NameFiles): Float64Array {
    const s = this.#seq;
    s.fill(0);
    readSync(f.seq, s, 0, s.byteLength, 0);
    if (!s.every(Number.isFinite) || s[SEQ_TOKEN] < 0) {
      throw new ERR_LOCK_BACKEND('file', `${join(f.dir, 'seq')} is corrupt (tokens could go backwards: remove the directory only when no process uses the lock)`);
    }
    return s;
  }

  #writeSeq(f: NameFiles, token: number, flags: number, readers: number, turnOwner: number, turnSince: number): void {
    const s = this.#seq;
    s[SEQ_TOKEN] = token;
    s[SEQ_FLAGS] = flags;
    s[SEQ_READERS] = readers;
    s[SEQ_TURN_OWNER] = turnOwner;
    s[SEQ_TURN_SINCE] = turnSince;
    writeSync(f.seq, s, 0, s.byteLength, 0);
  }

  /** Whether a marker another process holds may be taken away. */
  #stale(m: Marker): boolean {
    if (m.rec === null) return wallClock() - m.mtimeMs > GARBAGE_STALE_MS;
    return provablyDead(m.rec) || wallClock() > m.rec.expires;
  }

  #retryAt(m: Marker): number {
    const poll = wallClock() + POLL_MS;
    return m.rec === null ? poll : Math.min(poll, m.rec.expires + 1);
  }

  #wait(f: NameFiles, req: AttemptRequest, retryAt: number, keepGate = false): Attempt {
    if (!keepGate) this.#write(f, req.mode, 'waiting', 0, 0, req.ttl, req.since);
    if (req.wait) {
      f.published = true;
      linkIfAbsent(f.o, join(f.dir, `w-${this.#me.id}`));
      // Waited long enough: claim the turn after this holder (advisory; one heir at a time).
      if (monotonicMs() - req.since >= HOST_FAIR_MS) linkIfAbsent(f.o, join(f.dir, 'heir'));
    }
    return { granted: false, retryAt };
  }

  /**
   * Take back this process's waiter marker and heir claim. After a grant,
   * only if this thread published them (the uncontended path costs no
   * lstat); `always` for withdraw and recovery, which may clean up after
   * another thread of the process.
   */
  #stopWaiting(f: NameFiles, always = false): void {
    if (!always && !f.published) return;
    f.published = false;
    const w = join(f.dir, `w-${this.#me.id}`), heir = join(f.dir, 'heir');
    if (inoOf(w) === f.ino) unlinkQuiet(w);
    if (inoOf(heir) === f.ino) unlinkQuiet(heir);
  }

  /** Another process's heir is fresh: it goes first. A stale or dead one is taken away. */
  #heirBlocks(f: NameFiles): boolean {
    const path = join(f.dir, 'heir'), ino = inoOf(path);
    if (ino < 0 || ino === f.ino) return false; // one lstat on the uncontended path
    const m = readMarker(path);
    if (m === null || m.ino === f.ino) return false;
    const fresh = m.rec !== null && !provablyDead(m.rec) && wallClock() - m.mtimeMs < HEIR_STALE_MS;
    if (!fresh) this.#renameAway(path, m.ino);
    return fresh;
  }

  /** Count the shared holders still in; take away dead or expired ones (or all, for a steal). We hold the gate. */
  #liveReaders(f: NameFiles, steal: boolean): number {
    let live = 0;
    for (const entry of readdirSync(f.dir)) {
      if (!entry.startsWith('s-')) continue;
      const path = join(f.dir, entry), m = readMarker(path);
      if (m === null) continue;
      if (m.ino === f.ino) {
        unlinkQuiet(path); // a shared grant of ours that a dead thread of ours left
        continue;
      }
      if (steal || this.#stale(m)) {
        // Only the gate's holder removes others' shared markers, and the gate is ours.
        unlinkQuiet(path);
        if (m.rec !== null && provablyDead(m.rec)) this.#forget(f.dir, m.rec.id);
        continue;
      }
      live++;
    }
    return live;
  }

  /**
   * Take a stale `marker` away, race-free: under the breaker `b`, look
   * again, rename it aside, and check that what moved is what was judged
   * stale (if not, put it back). 'busy' when another breaker is at work.
   */
  #break(f: NameFiles, marker: string, steal: boolean): 'broken' | 'changed' | 'busy' {
    if (!this.#takeBreaker(f)) return 'busy';
    try {
      const path = join(f.dir, marker), now = readMarker(path);
      if (now === null || now.ino === f.ino || (!steal && !this.#stale(now))) return 'changed';
      const aside = join(f.dir, `.broken-${randomBytes(6).toString('hex')}`);
      try {
        renameSync(path, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'changed';
        throw err;
      }
      if (inoOf(aside) !== now.ino) {
        // Not what we judged: only a breaker that broke `b` wrongly could cause this. Put it back.
        linkIfAbsent(aside, path);
        unlinkQuiet(aside);
        return 'changed';
      }
      unlinkQuiet(aside);
      if (now.rec !== null && provablyDead(now.rec)) this.#forget(f.dir, now.rec.id);
      return 'broken';
    } finally {
      this.#dropBreaker(f);
    }
  }

  #takeBreaker(f: NameFiles): boolean {
    const b = join(f.dir, 'b');
    // Others judge a breaker stale by its record's mtime (BREAKER_STALE_MS):
    // make it now, or a record last written long ago (a release near the
    // lease's end, after a freeze) reads as a breaker that died at once.
    const now = new Date();
    futimesSync(f.fd, now, now);
    for (let round = 0; round < 2; round++) {
      if (linkIfAbsent(f.o, b)) return true;
      const m = readMarker(b);
      if (m === null) continue;
      if (m.ino === f.ino) return true; // left by a thread of ours that died breaking
      const dead = m.rec === null ? wallClock() - m.mtimeMs > GARBAGE_STALE_MS : provablyDead(m.rec);
      if (!dead && wallClock() - m.mtimeMs < BREAKER_STALE_MS) return false;
      this.#renameAway(b, m.ino);
    }
    return false;
  }

  #dropBreaker(f: NameFiles): void {
    const b = join(f.dir, 'b');
    if (inoOf(b) === f.ino) unlinkQuiet(b);
  }

  /** Rename `path` aside and remove it if it is still the inode `ino`; put it back if not. */
  #renameAway(path: string, ino: number): void {
    const aside = `${path}.gone-${randomBytes(6).toString('hex')}`;
    try {
      renameSync(path, aside);
    } catch {
      return; // gone already
    }
    if (inoOf(aside) !== ino) linkIfAbsent(aside, path);
    unlinkQuiet(aside);
  }

  /** Remove a process's leftovers in a name directory: its record and markers other than the gate. */
  #forget(dir: string, id: string, ino?: number): void {
    for (const entry of [`w-${id}`, `s-${id}`]) unlinkQuiet(join(dir, entry));
    if (ino !== undefined) {
      for (const entry of ['x', 'heir', 'b']) if (inoOf(join(dir, entry)) === ino) unlinkQuiet(join(dir, entry));
    }
    unlinkQuiet(join(dir, `o-${id}`));
  }
}
