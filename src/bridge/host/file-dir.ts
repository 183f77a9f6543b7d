/**
 * The file backend's directories: where they are, who may own them, how a
 * lock name becomes a file name that cannot leave its directory, and how a
 * name's directory comes into being whole.
 *
 * Layout (`<dir>` defaults to `$TMPDIR/latchkey-<uid>`; file.ts draws a name's files):
 * ```
 * <dir>/                 0700, owned by this user, not a symlink
 *   .floor               the lowest token a new name's store starts from (below)
 *   .fifo/               FIFOs that wake waiters (fifo.ts)
 *   <prefix>~<hash>/     one directory per name, 0700, published whole:
 *     name               the full name (UTF-8)
 *     seq                the name's token store (records.ts)
 *     q/ s/              its queue and its shared holders (file.ts)
 *     o-<owner>, x, b    records and markers (file.ts)
 * ```
 * `<prefix>` is the name with everything but [A-Za-z0-9._-] replaced
 * (at most 40 characters, no leading dot), for people who look; `<hash>`
 * (SHA-256, 16 hex digits) keeps distinct names apart, and the `name` file
 * proves it: a name whose directory holds another name is refused.
 *
 * A name's directory is made as `.new-<rand>/` with everything in it, then
 * renamed into place: a name directory that exists is complete, and two
 * processes making it at once end with one (the loser's rename fails).
 *
 * The floor (issue 17 item 1): a new name's `seq` starts at the token in
 * `.floor`. latchkey writes it when it creates the lock directory (the wall
 * clock in ms then: a lock directory removed by `rm -rf` or a tmp cleaner,
 * and made again, issues tokens above every token it issued before, unless
 * a name had made more than 1000 host grants a second on average since the
 * directory was made) and raises it to a name's last token before it
 * removes that name's directory (`latchkey prune`). A directory made for
 * latchkey by someone else starts at 0.
 */
import {
  closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, unlinkSync, writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { ERR_LOCK_BACKEND, LatchkeyError } from '../../errors.js';
import { MAX_TOKEN, SEQ_BYTES, encodeSeq, readSeq } from './records.js';
import { me, provablyDead } from '../identity.js';

export function defaultDir(): string {
  return join(tmpdir(), `latchkey-${process.getuid?.() ?? 'user'}`);
}

/**
 * Every failure of the store is ERR_LOCK_BACKEND with its cause (issue 17
 * item 8): a system error (ENOSPC, EROFS, ELOOP, EMFILE …) raised by `what`.
 * Latchkey's own errors pass unchanged.
 */
export function asBackend(err: unknown, backend: string, what: string): Error {
  if (err instanceof LatchkeyError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return new ERR_LOCK_BACKEND(backend, `${what}: ${message}`, { cause: err });
}

/** Refuse a directory that is a symlink, not ours, or writable by others. */
export function checkDir(dir: string, backend = 'file'): void {
  let st;
  try {
    st = lstatSync(dir);
  } catch (err) {
    throw asBackend(err, backend, `cannot use ${dir}`);
  }
  if (st.isSymbolicLink()) throw new ERR_LOCK_BACKEND(backend, `${dir} is a symbolic link`);
  if (!st.isDirectory()) throw new ERR_LOCK_BACKEND(backend, `${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new ERR_LOCK_BACKEND(backend, `${dir} is owned by uid ${st.uid}, not by this user (${uid})`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new ERR_LOCK_BACKEND(backend, `${dir} is writable by others (mode ${(st.mode & 0o777).toString(8)})`);
  }
}

/** The lock directory, created 0700 if missing (with its floor), checked either way. */
export function openLockDir(dir: string | undefined, backend = 'file'): string {
  return lockDirOf(dir, backend).path;
}

/**
 * A lock directory made a moment ago may replace one that was removed
 * while processes used it (rm -rf, a tmp cleaner): its first grants wait
 * this long, so that a process that held a lock in the old one hears of it
 * (its lease keeper watches the lock, milliseconds) before anyone is
 * granted the name again (issue 17 item 1). Only a directory latchkey made
 * itself (it has a `.floor`) counts: the first use of a machine pays it once.
 */
export const STORE_GRACE_MS = 100;

/**
 * openLockDir(), and the directory's (dev, ino) (another inode later means
 * it was removed and made again) and until when its grace lasts (epoch ms).
 */
export function lockDirOf(dir: string | undefined, backend = 'file'): { path: string; dev: number; ino: number; graceUntil: number } {
  const path = resolve(dir ?? defaultDir());
  let created = false;
  try {
    // Only the last level is made here, so that we know whether we made it; parents as mkdir -p.
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st === undefined) {
      mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
      try {
        mkdirSync(path, { mode: 0o700 });
        created = true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
  } catch (err) {
    throw asBackend(err, backend, `cannot create ${path}`);
  }
  checkDir(path, backend);
  if (created) writeFloor(path, Math.min(Date.now(), MAX_TOKEN), backend);
  const st = lstatSync(path);
  const floor = lstatSync(join(path, '.floor'), { throwIfNoEntry: false });
  return { path, dev: st.dev, ino: st.ino, graceUntil: floor === undefined ? 0 : floor.mtimeMs + STORE_GRACE_MS };
}

/** A directory of ours inside a checked one: made 0700 if missing, checked either way. */
export function ownDir(path: string, backend = 'file'): string {
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw asBackend(err, backend, `cannot create ${path}`);
  }
  checkDir(path, backend);
  return path;
}

export function encodeName(name: string): string {
  const prefix = name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '').slice(0, 40);
  return `${prefix}~${createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 16)}`;
}

const seqScratch = Buffer.alloc(SEQ_BYTES);

/** The lock directory's floor: the token a new name's store starts from (0 when it has none). */
export function readFloor(dir: string, backend = 'file'): number {
  const path = join(dir, '.floor');
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw asBackend(err, backend, `cannot read ${path}`);
  }
  try {
    if (!fstatSync(fd).isFile()) throw new ERR_LOCK_BACKEND(backend, `${path} is not a file (tokens could go backwards)`);
    const s = readSeq(fd, seqScratch);
    if (s === 'corrupt') throw new ERR_LOCK_BACKEND(backend, `${path} is corrupt (tokens could go backwards: it is refused, not reset)`);
    return s.token;
  } finally {
    closeSync(fd);
  }
}

/** Raise the floor to `token` (never lower it): written aside and renamed over, so a reader sees one floor or the other. */
export function writeFloor(dir: string, token: number, backend = 'file'): void {
  const path = join(dir, '.floor');
  let now = 0;
  try {
    now = readFloor(dir, backend);
  } catch {
    // a corrupt floor is replaced by a higher one
  }
  if (token <= now && lstatSync(path, { throwIfNoEntry: false }) !== undefined) return;
  const tmp = join(dir, `.floor-${randomBytes(6).toString('hex')}`);
  try {
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      encodeSeq(seqScratch, { grants: 0, flags: 0, token: Math.max(token, now), readers: 0, holder: 0 });
      writeSync(fd, seqScratch, 0, SEQ_BYTES, 0);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw asBackend(err, backend, `cannot write ${path}`);
  }
}

/**
 * The directory of `name` under `dir`: published whole if missing (name,
 * seq starting at the floor, q/, s/), checked either way; refuses a hash
 * collision. Returns its path and inode.
 */
export function openNameDir(dir: string, name: string): { path: string; ino: number } {
  const path = join(dir, encodeName(name));
  let st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined) {
    publishNameDir(dir, path, name);
    st = lstatSync(path, { throwIfNoEntry: false });
    if (st === undefined) throw new ERR_LOCK_BACKEND('file', `${path} vanished as it was made`);
  }
  checkDir(path);
  tidy(path);
  const stored = nameIn(path);
  if (stored === null) throw new ERR_LOCK_BACKEND('file', `${path} has no readable name file (it is not a lock of this latchkey: remove it when no process uses it)`);
  if (stored !== name) {
    throw new ERR_LOCK_BACKEND('file', `${path} belongs to another name (${JSON.stringify(stored.slice(0, 40))}): a hash collision`);
  }
  return { path, ino: st.ino };
}

/**
 * A name directory as this layout wants it: q/ and s/ made again if
 * something removed them (a tmp cleaner removes empty directories), and what
 * an earlier layout of latchkey left there (waiter markers `w-*`, `heir`)
 * removed. Once per name and thread, when its files are opened.
 */
function tidy(path: string): void {
  for (const sub of ['q', 's']) {
    if (lstatSync(join(path, sub), { throwIfNoEntry: false }) === undefined) ownDir(join(path, sub));
  }
  for (const e of readdirSync(path)) {
    if (e === 'heir' || e.startsWith('w-')) rmSync(join(path, e), { recursive: true, force: true });
    else if (e.startsWith('o-')) forgetIfDead(path, e.slice(2));
  }
}

/**
 * Remove the record `o-<id>` of a process that is provably dead (its id
 * says its pid and start time, identity.ts) and that no marker links any
 * more (nlink 1): nobody will ever read it. A record a marker still links is
 * left to whoever takes that marker over.
 */
export function forgetIfDead(dir: string, id: string): void {
  const mine = me();
  if (id === mine.id || id.startsWith(`${mine.id}-`)) return;
  const [pid, start = '', space] = id.split('-');
  if (space !== mine.id.split('-')[2]) return;
  if (!provablyDead({ id, pid: Number(pid), start: mine.start === '' ? '' : start, boot: '', host: mine.host })) return;
  const path = join(dir, `o-${id}`), st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined || !st.isFile() || st.nlink !== 1) return;
  rmSync(path, { force: true });
}

function publishNameDir(dir: string, path: string, name: string): void {
  const tmp = join(dir, `.new-${randomBytes(6).toString('hex')}`);
  try {
    mkdirSync(tmp, { mode: 0o700 });
    const nameFd = openSync(join(tmp, 'name'), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      writeSync(nameFd, name);
    } finally {
      closeSync(nameFd);
    }
    const seqFd = openSync(join(tmp, 'seq'), constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      encodeSeq(seqScratch, { grants: 0, flags: 0, token: readFloor(dir), readers: 0, holder: 0 });
      writeSync(seqFd, seqScratch, 0, SEQ_BYTES, 0);
    } finally {
      closeSync(seqFd);
    }
    mkdirSync(join(tmp, 'q'), { mode: 0o700 });
    mkdirSync(join(tmp, 's'), { mode: 0o700 });
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw asBackend(err, 'file', `cannot make the directory of ${JSON.stringify(name)} in ${dir}`);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const code = (err as NodeJS.ErrnoException).code;
    // Another process published it first: theirs is as good.
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw asBackend(err, 'file', `cannot publish ${path}`);
  }
}

/** A file's text, refusing to follow a symlink to it. */
function readNoFollow(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${path} is not a file`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** The full name kept in a name directory, or null when it is not one of ours. */
export function nameIn(path: string): string | null {
  try {
    return readNoFollow(join(path, 'name'));
  } catch {
    return null;
  }
}

/** unlink that treats "already gone" as done. */
export function unlinkQuiet(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    // A directory where a marker belongs (garbage; our own directory, 0700): it goes too.
    if (code === 'EISDIR' || code === 'EPERM') {
      rmSync(path, { recursive: true, force: true });
      return true;
    }
    throw err;
  }
}

/**
 * How many of something that costs descriptors a thread may keep open for
 * later (names' files, FIFO writers): `max`, or fewer under a low limit
 * (`ulimit -n`: the soft limit / 16, at least 2), so that a process with
 * few descriptors keeps most of them for its own files (issue 17 item 7).
 */
export function descriptorBudget(max: number): number {
  const soft = openFilesLimit();
  return Math.max(2, Math.min(max, Math.floor(soft / 16)));
}

let limit: number | undefined;
function openFilesLimit(): number {
  if (limit !== undefined) return limit;
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
    limit = m === null || m[1] === 'unlimited' ? 1 << 20 : Number(m[1]);
  } catch {
    limit = 1024;
  }
  return limit;
}
