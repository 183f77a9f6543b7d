/**
 * The file backend's directories: where they are, who may own them, and
 * how a lock name becomes a file name that cannot leave its directory.
 *
 * Layout (`<dir>` defaults to `$TMPDIR/latchkey-<uid>`):
 * ```
 * <dir>/                 0700, owned by this user, not a symlink
 *   <prefix>~<hash>/     one directory per name, 0700
 *     name               the full name (UTF-8), written once
 *     seq                the name's counters (file.ts)
 *     o-<owner>          a process's record for this name (file.ts)
 *     x, s-…, w-…, heir, b   hard links to records (file.ts)
 * ```
 * `<prefix>` is the name with everything but [A-Za-z0-9._-] replaced
 * (at most 40 characters, no leading dot), for people who look; `<hash>`
 * (SHA-256, 16 hex digits) keeps distinct names apart, and the `name` file
 * proves it: a name whose directory holds another name is refused.
 */
import { constants, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { ERR_LOCK_BACKEND } from '../../errors.js';

export function defaultDir(): string {
  return join(tmpdir(), `latchkey-${process.getuid?.() ?? 'user'}`);
}

/** Refuse a directory that is a symlink, not ours, or writable by others. */
export function checkDir(dir: string): void {
  const st = lstatSync(dir);
  if (st.isSymbolicLink()) throw new ERR_LOCK_BACKEND('file', `${dir} is a symbolic link`);
  if (!st.isDirectory()) throw new ERR_LOCK_BACKEND('file', `${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new ERR_LOCK_BACKEND('file', `${dir} is owned by uid ${st.uid}, not by this user (${uid})`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new ERR_LOCK_BACKEND('file', `${dir} is writable by others (mode ${(st.mode & 0o777).toString(8)})`);
  }
}

/** The lock directory, created 0700 if missing, checked either way. */
export function openLockDir(dir: string | undefined): string {
  const path = resolve(dir ?? defaultDir());
  try {
    mkdirSync(path, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new ERR_LOCK_BACKEND('file', `cannot create ${path}: ${(err as Error).message}`);
  }
  checkDir(path);
  return path;
}

/** A directory of ours inside a checked one: made 0700 if missing, checked either way. */
export function ownDir(path: string): string {
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new ERR_LOCK_BACKEND('file', `cannot create ${path}: ${(err as Error).message}`);
    }
  }
  checkDir(path);
  return path;
}

export function encodeName(name: string): string {
  const prefix = name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '').slice(0, 40);
  return `${prefix}~${createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 16)}`;
}

/** The directory of `name` under `dir`, created and checked; refuses a hash collision. */
export function openNameDir(dir: string, name: string): string {
  const path = ownDir(join(dir, encodeName(name)));
  const file = join(path, 'name');
  let stored = nameIn(path);
  if (stored === null) {
    // First use: write it whole under a temporary name, then rename (a reader never sees half a name).
    const tmp = join(path, `.name-${randomBytes(6).toString('hex')}`);
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      writeSync(fd, name);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    stored = readNoFollow(file);
  }
  if (stored !== name) {
    throw new ERR_LOCK_BACKEND('file', `${path} belongs to another name (${JSON.stringify(stored.slice(0, 40))}): a hash collision`);
  }
  return path;
}

/** A file's text, refusing to follow a symlink to it. */
function readNoFollow(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
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
