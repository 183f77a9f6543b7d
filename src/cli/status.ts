/**
 * `latchkey status`: the host-scope locks of this machine, held and waited
 * for, as the backend records them (bridge/host/host.ts hostBackend().query()),
 * and the hot locks (hot.ts); or, with --scope cluster, the cluster-scope
 * locks of every machine, as the server records them (through this
 * process's cluster agent: bridge/cluster/cluster.ts clusterQuery()). A
 * plain table, or JSON with --json.
 */
import '../process-cluster.js'; // what importing latchkey does, but the default table (the command uses the host and cluster tiers)
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { HostLockEntry } from '../bridge/host/backend.js';
import { defaultDir } from '../bridge/host/file-dir.js';
import { hostBackend } from '../bridge/host/host.js';
import { clusterBackend, clusterQuery, clusterUrl } from '../bridge/cluster/cluster.js';
import { TOKEN_SPAN } from '../atomics/queue/word.js';
import { type OptionSpecs, isStoreFailure, parseCommand, parseInteger, printHelp, storeFailure, usage } from './args.js';
import { STATUS_EXIT_HELP } from './exit-codes.js';
import { type HotLock, hotLocks } from './hot.js';
import { nameOfStoreKey } from '../bridge/keys.js';
import { cell, duration, table } from './table.js';

export const STATUS_HELP = `Usage: latchkey status [--json] [--top N] [--scope SCOPE] [NAME...]

Show the host-scope locks of this machine: who holds each and who waits for
it (owner pid, how long ago it was granted or the wait began, how much of the
lease is left, the grant's fencing token), and the hot locks: the names with
the most host grants so far. With NAMEs, only those locks (exact names).
With --scope cluster, the cluster-scope locks of every machine on the server
LATCHKEY_CLUSTER_URL names (the host column says which machine).

Options:
      --json      print one JSON object instead of tables:
                  { backend, location, at, locks: [{ name, mode, state, pid,
                  owner, host, token, hostToken, since, ageMs, expires,
                  leaseLeftMs }], hot: [{ name, grants }] }  (times in epoch
                  ms; token, hostToken, expires and leaseLeftMs are null for
                  a waiter)
      --top N     how many hot locks to show (default 10; 0 for none; host
                  scope only)
      --scope S   host (default) or cluster
  -h, --help      show this help

TOKEN is the fencing token the holder was granted (lock.token, and
LATCHKEY_TOKEN in 'latchkey run'): the host grant's first. The threads of a
process that share one host grant (cohorting) get the tokens after it, up to
${TOKEN_SPAN - 1} more. hostToken, in --json, is the backend's count of the grant
(TOKEN is hostToken x ${TOKEN_SPAN}). Holders that are provably dead, or whose
lease has run out, are not shown: the next taker removes them.

Environment:
  LATCHKEY_BACKEND  file (default) or sqlite
  LATCHKEY_DIR      the lock directory (default $TMPDIR/latchkey-<uid>)
  LATCHKEY_CLUSTER_URL  with --scope cluster: redis://… or postgres://…
                    (LATCHKEY_PG_URL is read when it is unset)

${STATUS_EXIT_HELP}`;

const kOptions = {
  json: { type: 'boolean' },
  top: { type: 'string' },
  scope: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionSpecs;

export interface StatusLock {
  name: string;
  mode: 'exclusive' | 'shared';
  state: 'held' | 'waiting';
  pid: number;
  owner: string;
  host: string;
  /** Held: the fencing token the holder was granted (the host grant's first: hostToken × TOKEN_SPAN); waiting: null. */
  token: number | null;
  /** Held: the backend's token of the host grant (a count of the name's host grants); waiting: null. */
  hostToken: number | null;
  /** Epoch ms the grant was made (as the backend records it) or the wait began. */
  since: number;
  ageMs: number;
  /** Held: lease end, epoch ms; waiting: null. */
  expires: number | null;
  leaseLeftMs: number | null;
}

export interface StatusReport {
  /** Which locks: this machine's host scope, or every machine's cluster scope. */
  scope: 'host' | 'cluster';
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
  const names = [...positionals, ...(rest ?? [])];
  const top = v.top === undefined ? 10 : parseInteger('status', '--top', v.top, 0, 1_000_000);
  const scope = v.scope ?? 'host';
  if (scope !== 'host' && scope !== 'cluster') throw usage('status', `--scope must be host or cluster, not ${JSON.stringify(scope)}`);
  const wanted = names.length === 0 ? undefined : new Set(names);
  const report = scope === 'cluster' ? await collectCluster(wanted) : await collect(top, wanted);
  process.stdout.write(v.json ? `${JSON.stringify(report, null, 2)}\n` : `${render(report)}\n`);
  return 0;
}

/** The report; with `names`, of those names only (their locks, and their hot-lock counts). */
export async function collect(top: number, names?: ReadonlySet<string>): Promise<StatusReport> {
  const kind = process.env.LATCHKEY_BACKEND || 'file', at = Date.now();
  // Nothing was ever locked there: say so, without creating the directory (or the database) to look.
  const dir = resolve(process.env.LATCHKEY_DIR || defaultDir());
  const store = kind === 'sqlite' ? join(dir, 'locks.db') : dir;
  if ((kind === 'file' || kind === 'sqlite') && !existsSync(store)) return { scope: 'host', backend: kind, location: store, at, locks: [], hot: [] };
  let entries: HostLockEntry[], location: string;
  try {
    const b = hostBackend();
    location = b.location;
    entries = await b.query();
  } catch (err) {
    // Every failure of the lock store (wrapped or not) is EX_UNAVAILABLE, never a latchkey bug.
    if (isStoreFailure(err)) throw storeFailure(err, `cannot read the host locks at ${store}`);
    throw err;
  }
  const wanted = (name: string) => names === undefined || names.has(name);
  const now = Date.now();
  const locks = entries.filter((e) => wanted(nameOfStoreKey(e.name))).map((e): StatusLock => {
    const held = e.state === 'held';
    return {
      name: nameOfStoreKey(e.name), mode: e.mode, state: held ? 'held' : 'waiting', pid: e.pid, owner: e.owner, host: e.host,
      // What the holder sees (lock.token, LATCHKEY_TOKEN): the host token × TOKEN_SPAN + its pass in the cohort, from 0.
      token: held ? e.token * TOKEN_SPAN : null, hostToken: held ? e.token : null, since: e.since, ageMs: Math.max(0, Math.round(now - e.since)),
      expires: held ? e.expires : null, leaseLeftMs: held ? Math.max(0, Math.round(e.expires - now)) : null,
    };
  });
  locks.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) || (a.state === b.state ? 0 : a.state === 'held' ? -1 : 1) || a.since - b.since);
  const hot = top === 0 ? [] : names === undefined ? hotLocks(kind, location, top) : hotLocks(kind, location, Infinity).filter((h) => wanted(h.name)).slice(0, top);
  return { scope: 'host', backend: kind, location, at, locks, hot };
}

/** The cluster-scope report (every machine's locks, as the server keeps them); `names` as for collect(). */
export async function collectCluster(names?: ReadonlySet<string>): Promise<StatusReport> {
  let location: string, entries: Awaited<ReturnType<typeof clusterQuery>>;
  try {
    const u = new URL(clusterUrl());
    location = `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
    entries = await clusterQuery();
  } catch (err) {
    if (isStoreFailure(err)) throw storeFailure(err, 'cannot read the cluster locks');
    throw err;
  }
  const now = Date.now();
  const locks = entries.filter((e) => names === undefined || names.has(nameOfStoreKey(e.name))).map((e): StatusLock => {
    const held = e.state === 'held', expires = held && e.expires !== undefined && e.expires > 0 ? e.expires : null;
    return {
      name: nameOfStoreKey(e.name), mode: e.mode, state: held ? 'held' : 'waiting', pid: e.pid, owner: e.owner, host: e.host,
      token: held ? e.token * TOKEN_SPAN : null, hostToken: held ? e.token : null, since: e.since, ageMs: Math.max(0, Math.round(now - e.since)),
      expires, leaseLeftMs: expires === null ? null : Math.max(0, Math.round(expires - now)),
    };
  });
  locks.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) || (a.state === b.state ? 0 : a.state === 'held' ? -1 : 1) || a.since - b.since);
  return { scope: 'cluster', backend: clusterBackend(), location, at: now, locks, hot: [] };
}

export function render(r: StatusReport): string {
  const held = r.locks.filter((l) => l.state === 'held').length, waiting = r.locks.length - held;
  const out = [`${r.backend} backend at ${r.location}: ${held} held, ${waiting} waiting`, ''];
  const cluster = r.scope === 'cluster';
  if (r.locks.length === 0) out.push(`No ${r.scope} locks are held or waited for.`);
  else {
    // Cluster scope: the holder's machine too.
    out.push(table(
      ['NAME', 'STATE', 'MODE', ...(cluster ? ['HOST'] : []), 'PID', 'TOKEN', 'AGE', 'LEASE LEFT'],
      r.locks.map((l) => [
        cell(l.name), l.state, l.mode, ...(cluster ? [cell(l.host)] : []), String(l.pid), l.token === null ? '-' : String(l.token),
        duration(l.ageMs), l.leaseLeftMs === null ? '-' : duration(l.leaseLeftMs),
      ]),
      cluster ? new Set([4, 5]) : new Set([3, 4]),
    ));
  }
  if (r.hot.length > 0) {
    out.push('', table(['HOT LOCK', 'GRANTS'], r.hot.map((h) => [cell(h.name), String(h.grants)]), new Set([1])));
  }
  return out.join('\n');
}
