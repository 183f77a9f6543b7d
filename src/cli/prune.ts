/**
 * `latchkey prune`: keep a lock directory (or database) small (issue 17
 * item 7). Removes the entries of the names nobody holds or waits for, and
 * what dead processes left; never an entry in use, and never a token going
 * backwards: the store's floor is raised to a name's last token before the
 * name goes (bridge/host/backend.ts Backend.prune).
 */
import '../process.js'; // what importing latchkey does (the command uses its lock machinery)
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { PruneReport } from '../bridge/host/backend.js';
import { defaultDir } from '../bridge/host/file-dir.js';
import { hostBackend } from '../bridge/host/host.js';
import { nameOfStoreKey, storeKey } from '../bridge/keys.js';
import { type OptionSpecs, isStoreFailure, parseCommand, printHelp, storeFailure } from './args.js';
import { exitStatusHelp, kExitRows } from './exit-codes.js';
import { cell, table } from './table.js';

/** `latchkey prune`'s statuses. */
export const PRUNE_EXIT_HELP = exitStatusHelp([kExitRows.ok, kExitRows.usage, kExitRows.unavailable, kExitRows.software]);

export const PRUNE_HELP = `Usage: latchkey prune [--json] [NAME...]

Remove the host locks' entries that nobody uses: each name that no process
holds or waits for (its directory in the lock directory, or its row in the
SQLite database), the records dead processes left, and their FIFOs (back
to the pool). A name in use is left as it is and listed with the reason. A
name used again after it was removed starts above every token it had: the
store's floor is raised first. Safe while other processes use the lock
directory: one that is about to take a name as it goes makes it again.
With NAMEs, only those names.

Options:
      --json      print one JSON object: { backend, location, removed:
                  [name], kept: [{ name, why }] }  (why: held, waiting,
                  busy, or corrupt: a token store that cannot be trusted,
                  left for you to look at)
  -h, --help      show this help

Environment:
  LATCHKEY_BACKEND  file (default) or sqlite
  LATCHKEY_DIR      the lock directory (default $TMPDIR/latchkey-<uid>)

${PRUNE_EXIT_HELP}`;

const kOptions = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionSpecs;

export interface PruneResult {
  backend: string;
  location: string;
  removed: string[];
  kept: Array<{ name: string; why: string }>;
}

export async function main(argv: string[]): Promise<number> {
  const { values: v, positionals, rest } = parseCommand('prune', argv, kOptions);
  if (v.help) return printHelp(PRUNE_HELP);
  const names = [...positionals, ...(rest ?? [])];
  const result = prune(names.length === 0 ? undefined : new Set(names));
  process.stdout.write(v.json ? `${JSON.stringify(result, null, 2)}\n` : `${render(result)}\n`);
  return 0;
}

export function prune(names?: ReadonlySet<string>): PruneResult {
  const kind = process.env.LATCHKEY_BACKEND || 'file';
  // Nothing was ever locked there: nothing to prune, and nothing is created to say so.
  const dir = resolve(process.env.LATCHKEY_DIR || defaultDir());
  const store = kind === 'sqlite' ? join(dir, 'locks.db') : dir;
  if ((kind === 'file' || kind === 'sqlite') && !existsSync(store)) return { backend: kind, location: store, removed: [], kept: [] };
  let report: PruneReport, location: string;
  try {
    const b = hostBackend();
    location = b.location;
    report = b.prune(names === undefined ? undefined : new Set([...names].map(storeKey)));
  } catch (err) {
    // Every failure of the lock store (wrapped or not) is EX_UNAVAILABLE, never a latchkey bug.
    if (isStoreFailure(err)) throw storeFailure(err, `cannot prune the host locks at ${store}`);
    throw err;
  }
  const shown = (key: string) => nameOfStoreKey(key);
  return {
    backend: kind, location,
    removed: report.removed.map(shown).sort(),
    kept: report.kept.map((k) => ({ name: shown(k.name), why: k.why })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
  };
}

export function render(r: PruneResult): string {
  const out = [`${r.backend} backend at ${r.location}: ${r.removed.length} removed, ${r.kept.length} in use`];
  if (r.kept.length > 0) out.push('', table(['KEPT', 'WHY'], r.kept.map((k) => [cell(k.name), k.why]), new Set()));
  return out.join('\n');
}
