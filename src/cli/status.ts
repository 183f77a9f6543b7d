/**
 * `latchkey status`: the host-scope locks of this machine, held and waited
 * for, as the backend records them (bridge/host/host.ts hostBackend().query()),
 * and the hot locks (hot.ts). A plain table, or JSON with --json.
 */
import '../process.js'; // what importing latchkey does (the command uses its lock machinery)
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { HostLockEntry } from '../bridge/host/backend.js';
import { defaultDir } from '../bridge/host/file-dir.js';
import { hostBackend } from '../bridge/host/host.js';
import { type OptionSpecs, CliError, parseCommand, parseInteger, printHelp, usage } from './args.js';
import { EXIT_CODES_HELP, EXIT_UNAVAILABLE } from './exit-codes.js';
import { type HotLock, hotLocks } from './hot.js';
import { decodeName } from './names.js';
import { cell, duration, table } from './table.js';

export const STATUS_HELP = `Usage: latchkey status [--json] [--top N]

Show the host-scope locks of this machine: who holds each and who waits for
it (owner pid, how long ago it was granted or the wait began, how much of the
lease is left, the grant's token), and the hot locks: the names with the most
host grants so far.

Options:
      --json      print one JSON object instead of tables:
                  { backend, location, at, locks: [{ name, mode, state, pid,
                  owner, host, token, since, ageMs, expires, leaseLeftMs }],
                  hot: [{ name, grants }] }  (times in epoch ms; token,
                  expires and leaseLeftMs are null for a waiter)
      --top N     how many hot locks to show (default 10; 0 for none)
  -h, --help      show this help

TOKEN is the host grant's token at the backend: one per grant to a process,
and the grant count of the hot locks. (A lock's fencing token, lock.token or
LATCHKEY_TOKEN, is derived from it and larger.) Holders that are provably
dead, or whose lease has run out, are not shown: the next taker removes them.

Environment:
  LATCHKEY_BACKEND  file (default) or sqlite
  LATCHKEY_DIR      the lock directory (default $TMPDIR/latchkey-<uid>)

${EXIT_CODES_HELP}`;

const kOptions = {
  json: { type: 'boolean' },
  top: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionSpecs;

export interface StatusLock {
  name: string;
  mode: 'exclusive' | 'shared';
  state: 'held' | 'waiting';
  pid: number;
  owner: string;
  host: string;
  /** Held: the host grant's token; waiting: null. */
  token: number | null;
  /** Epoch ms the grant was made (as the backend records it) or the wait began. */
  since: number;
  ageMs: number;
  /** Held: lease end, epoch ms; waiting: null. */
  expires: number | null;
  leaseLeftMs: number | null;
}

export interface StatusReport {
  backend: string;
  location: string;
  /** Epoch ms of the report. */
  at: number;
  locks: StatusLock[];
  hot: HotLock[];
}

export async function main(argv: string[]): Promise<number> {
  const { values: v, positionals, rest } = parseCommand('status', argv, kOptions);
  if (v.help) return printHelp(STATUS_HELP);
  const extra = [...positionals, ...(rest ?? [])];
  if (extra.length > 0) throw usage('status', `unexpected argument ${JSON.stringify(extra[0])}`);
  const top = v.top === undefined ? 10 : parseInteger('status', '--top', v.top, 0, 1_000_000);
  const report = await collect(top);
  process.stdout.write(v.json ? `${JSON.stringify(report, null, 2)}\n` : `${render(report)}\n`);
  return 0;
}

export async function collect(top: number): Promise<StatusReport> {
  const kind = process.env.LATCHKEY_BACKEND || 'file', at = Date.now();
  // Nothing was ever locked there: say so, without creating the directory (or the database) to look.
  const dir = resolve(process.env.LATCHKEY_DIR || defaultDir());
  const store = kind === 'sqlite' ? join(dir, 'locks.db') : dir;
  if ((kind === 'file' || kind === 'sqlite') && !existsSync(store)) return { backend: kind, location: store, at, locks: [], hot: [] };
  let entries: HostLockEntry[], location: string;
  try {
    const b = hostBackend();
    location = b.location;
    entries = await b.query();
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ERR_LOCK_BACKEND') throw new CliError((err as Error).message, EXIT_UNAVAILABLE);
    throw err;
  }
  const now = Date.now();
  const locks = entries.map((e): StatusLock => {
    const held = e.state === 'held';
    return {
      name: decodeName(e.name), mode: e.mode, state: held ? 'held' : 'waiting', pid: e.pid, owner: e.owner, host: e.host,
      token: held ? e.token : null, since: e.since, ageMs: Math.max(0, Math.round(now - e.since)),
      expires: held ? e.expires : null, leaseLeftMs: held ? Math.max(0, Math.round(e.expires - now)) : null,
    };
  });
  locks.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) || (a.state === b.state ? 0 : a.state === 'held' ? -1 : 1) || a.since - b.since);
  return { backend: kind, location, at, locks, hot: top === 0 ? [] : hotLocks(kind, location, top) };
}

export function render(r: StatusReport): string {
  const held = r.locks.filter((l) => l.state === 'held').length, waiting = r.locks.length - held;
  const out = [`${r.backend} backend at ${r.location}: ${held} held, ${waiting} waiting`, ''];
  if (r.locks.length === 0) out.push('No host locks are held or waited for.');
  else {
    out.push(table(
      ['NAME', 'STATE', 'MODE', 'PID', 'TOKEN', 'AGE', 'LEASE LEFT'],
      r.locks.map((l) => [
        cell(l.name), l.state, l.mode, String(l.pid), l.token === null ? '-' : String(l.token),
        duration(l.ageMs), l.leaseLeftMs === null ? '-' : duration(l.leaseLeftMs),
      ]),
      new Set([3, 4]),
    ));
  }
  if (r.hot.length > 0) {
    out.push('', table(['HOT LOCK', 'GRANTS'], r.hot.map((h) => [cell(h.name), String(h.grants)]), new Set([1])));
  }
  return out.join('\n');
}
