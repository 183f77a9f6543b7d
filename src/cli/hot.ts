/**
 * The hot locks: the names with the most host grants, read from the
 * backend's storage, since the Backend interface (bridge/host/backend.ts) has
 * no call for it. Every host grant of a name takes the name's last token
 * + 1, from 1, so the last token is the number of host grants so far (one
 * host grant covers every local grant a process's threads pass among
 * themselves under it: bridge/host/host.ts, cohorting).
 *
 *   file    <dir>/<encoded name>/seq: float64s, the first the last token
 *           (bridge/host/file.ts, SEQ_TOKEN); the full name in `name` beside it
 *   sqlite  the `names` table: name, token (bridge/host/sqlite.ts)
 */
import { closeSync, constants, openSync, readSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { loadDriver } from '../bridge/drivers.js';
import { nameIn } from '../bridge/host/file-dir.js';
import { nameOfStoreKey } from '../bridge/keys.js';

export interface HotLock {
  readonly name: string;
  /** Host grants of the name so far (its last fencing token at the backend). */
  readonly grants: number;
}

/** The `top` names (Infinity: all) with the most grants at the backend `kind` kept at `location`, most first. */
export function hotLocks(kind: string, location: string, top: number): HotLock[] {
  const all = kind === 'file' ? fileGrants(location) : kind === 'sqlite' ? sqliteGrants(location, top) : [];
  return all.filter((h) => h.grants > 0).sort((a, b) => b.grants - a.grants || (a.name < b.name ? -1 : 1)).slice(0, top);
}

function fileGrants(dir: string): HotLock[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const out: HotLock[] = [];
  const seq = new Float64Array(1);
  for (const entry of entries) {
    const path = join(dir, entry), name = nameIn(path);
    if (name === null) continue; // not a name directory
    let fd: number;
    try {
      fd = openSync(join(path, 'seq'), constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch {
      continue; // a name never granted (or being set up)
    }
    try {
      seq[0] = 0;
      readSync(fd, seq, 0, seq.byteLength, 0);
    } catch {
      continue; // not a file (a directory where it belongs): not counted; taking the lock reports it
    } finally {
      closeSync(fd);
    }
    if (Number.isFinite(seq[0])) out.push({ name: nameOfStoreKey(name), grants: seq[0]! });
  }
  return out;
}

function sqliteGrants(file: string, top: number): HotLock[] {
  let db: Database.Database;
  try {
    const Sqlite = loadDriver<typeof Database>('better-sqlite3', 'sqlite');
    db = new Sqlite(file, { readonly: true, fileMustExist: true });
  } catch {
    return [];
  }
  try {
    const rows = db.prepare<[number], { name: string; token: number }>(
      'SELECT name, token FROM names WHERE token > 0 ORDER BY token DESC, name LIMIT ?').all(Number.isFinite(top) ? top : -1); // -1: no limit
    return rows.map((r) => ({ name: nameOfStoreKey(r.name), grants: r.token }));
  } catch {
    return []; // no names table yet
  } finally {
    db.close();
  }
}
