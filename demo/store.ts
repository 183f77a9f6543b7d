/**
 * The demo's shared cache: one JSON file per key in a directory every
 * process of the demo shares, updated by read-modify-write: only the host
 * lock on the key keeps two writers apart. Each file is replaced whole
 * (write aside, rename: a process SIGKILLed mid-write leaves no torn
 * file), and each update goes in two steps, so a writer killed in between
 * leaves a `pending` intent behind; the next holder is told `abandoned`
 * and rolls it back (the dead writer never counted the update).
 *
 * An entry also keeps, per writing process, how many updates it made, and
 * the fencing token of the last one: a write under a smaller token than
 * the stored one would be a fencing failure (counted, must stay 0).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';

export interface Entry {
  /** The cached value: how many updates it has seen. */
  value: number;
  /** Updates per process id. */
  by: Record<string, number>;
  /** Token of the last update. */
  token: number;
  /** A started update: what `value` would become. */
  pending?: { value: number; pid: number };
  /** Half-made updates rolled back so far. */
  repairs: number;
}

export const KEYS = 8;
export const keyName = (k: number) => `cache:${k}`;
const fileOf = (dir: string, k: number) => join(dir, `entry-${k}.json`);

export function readEntry(dir: string, k: number): Entry {
  try {
    return JSON.parse(readFileSync(fileOf(dir, k), 'utf8')) as Entry;
  } catch {
    return { value: 0, by: {}, token: 0, repairs: 0 };
  }
}

export function writeEntry(dir: string, k: number, e: Entry): void {
  const aside = `${fileOf(dir, k)}.${process.pid}.${threadId}`;
  writeFileSync(aside, JSON.stringify(e));
  renameSync(aside, fileOf(dir, k));
}

/**
 * One update under the host lock of key `k`, token `token`. `die`, if
 * given, runs between the two steps (the demo's killed holders). Returns
 * true for a fencing failure: the stored token was not below ours.
 */
export function update(dir: string, k: number, token: number, abandoned: boolean, die?: () => void): boolean {
  const e = readEntry(dir, k);
  if (e.pending !== undefined) {
    // Only a holder that died leaves an intent: the lock must have said so.
    if (!abandoned) throw new Error(`key ${k}: a pending update by ${e.pending.pid}, and the lock did not say its holder died`);
    delete e.pending;
    e.repairs += 1;
  }
  const fencingFailure = e.token >= token;
  e.pending = { value: e.value + 1, pid: process.pid };
  writeEntry(dir, k, e);
  die?.();
  e.value = e.pending.value;
  e.by[process.pid] = (e.by[process.pid] ?? 0) + 1;
  e.token = token;
  delete e.pending;
  writeEntry(dir, k, e);
  return fencingFailure;
}
