/**
 * `latchkey run`: flock(1) over latchkey's locks. Take the lock NAME (host
 * scope unless told otherwise), run COMMAND while holding it, pass its exit
 * status through, and release the lock however it ends.
 *
 * The stages, and what a forwarded signal (child.ts) does in each:
 *   1. waiting for the lock: the wait is aborted, exit 128+n, COMMAND never runs;
 *   2. COMMAND running: the signal is sent on to it, latchkey exits when it does;
 *   3. COMMAND ended: the lock is given back and latchkey exits (a signal is moot).
 * A lock lost in stage 2 (guard.signal aborts: stolen, or a lease that ran
 * out) is reported on stderr and COMMAND is sent SIGTERM; latchkey then
 * exits EXIT_LOST. latchkey never escalates to SIGKILL: COMMAND decides how
 * long it takes to stop.
 *
 * The lock is released by the guard's unlock() when COMMAND ends, and by the
 * host tier's exit hook on any other exit; a latchkey killed by SIGKILL runs
 * neither, and the next process takes the lock as soon as it sees the pid
 * dead (file.ts, sqlite.ts: provablyDead).
 */
import '../process.js'; // what importing latchkey does, but the cluster tier (loaded for --scope cluster) and the default table
import type { LockGuard, LockMode, LockScope } from '../lock-guard.js';
import { locks } from '../locks.js';
import { HOST_TABLE_KEY, hostBackend } from '../bridge/host/host.js';
import { deferHelper } from '../bridge/helper-threads.js';
import {
  type OptionSpecs, CliError, isStoreFailure, parseCommand, parseInteger, parseSeconds, printHelp, storeFailure, usage,
} from './args.js';
import { type Running, catchSignals, forward, start, statusOf } from './child.js';
import { EXIT_CONFLICT, EXIT_LOST, EXIT_TIMEOUT, RUN_EXIT_HELP, signalStatus } from './exit-codes.js';

export const RUN_HELP = `Usage: latchkey run [options] NAME COMMAND [ARGS...]
       latchkey run [options] NAME -- COMMAND [ARGS...]
       latchkey run [options] NAME -c 'SHELL COMMAND'

Take the lock NAME, run COMMAND while holding it, and release the lock when
COMMAND ends, as flock(1) does. COMMAND runs without a shell (with -c, through
$SHELL -c, /bin/sh by default), with latchkey's stdin, stdout and stderr. By
default the lock excludes every other process of this machine that takes NAME
(scope host). NAME is any string of up to 128 UTF-8 bytes not starting with '-'.

latchkey's options come before COMMAND: the first argument after NAME that is
not one of them starts COMMAND, and the rest are COMMAND's own, options
included ('latchkey run build make -j4'). Put '--' before a COMMAND that
starts with '-'.

Options:
  -s, --shared         take the lock shared: any number of shared holders, no
                       exclusive one
  -x, --exclusive      take it exclusive: one holder at a time (the default)
  -n, --nonblock       if the lock is held, fail at once (exit 75) instead of
                       waiting; COMMAND is not run
  -w, --wait SECONDS   give up after SECONDS (decimals allowed; exit 124);
                       COMMAND is not run. Default: wait as long as it takes
  -E, --conflict-exit-code CODE
                       exit with CODE (0-255) instead of 75 or 124 when
                       --nonblock finds the lock held or --wait runs out
  -c, --command 'SHELL COMMAND'
                       run SHELL COMMAND with $SHELL -c (/bin/sh when SHELL
                       is not set), instead of COMMAND [ARGS...]
      --scope SCOPE    host (default): exclude the processes of this machine;
                       cluster: of every machine on the server that
                       LATCHKEY_CLUSTER_URL names (Redis or PostgreSQL);
                       thread: exclude only this latchkey's own threads (that
                       is, nobody; for tests)
      --ttl MS         the lease in ms (host scope; cluster scope on Redis),
                       250 to 86400000 (default 10000). latchkey renews it
                       from a thread of its own; it runs out only if
                       latchkey is frozen (SIGSTOP, a suspended VM)
  -h, --help           show this help

While COMMAND runs:
  SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to latchkey are forwarded to it,
  and latchkey exits when COMMAND does. (COMMAND stays in latchkey's process
  group, so a Ctrl-C typed in the terminal reaches it directly too.) Received
  while latchkey still waits for the lock, they end the wait: exit 128+n.
  If the lock is lost (another process stole it, or its lease ran out while
  latchkey was frozen), latchkey says so on stderr, sends COMMAND SIGTERM,
  waits for it to exit and exits 76.
  If latchkey is killed with SIGKILL, the next process takes the lock at once
  (its holder is provably dead), but COMMAND goes on running, unprotected.
  A COMMAND that takes the same lock NAME again waits for itself forever.

COMMAND's environment also has:
  LATCHKEY_NAME        NAME
  LATCHKEY_TOKEN       the grant's fencing token: larger than every earlier
                       grant's of NAME (hand it to what you guard; 'latchkey
                       status' shows the same number)
  LATCHKEY_ABANDONED   1 when the previous holder died holding the lock
                       (what it guarded may be half-written), else 0

Environment:
  LATCHKEY_BACKEND     file (default) or sqlite
  LATCHKEY_DIR         the lock directory (default $TMPDIR/latchkey-<uid>);
                       the sqlite backend keeps <dir>/locks.db
  LATCHKEY_CLUSTER_URL the server of scope cluster: redis://[[user]:password@]
                       host[:port][/db] or rediss://… (Redis 7 or Valkey 7.2,
                       npm install @redis/client), or postgres://… (npm
                       install pg). LATCHKEY_PG_URL is read when it is unset

${RUN_EXIT_HELP}`;

const kOptions = {
  shared: { type: 'boolean', short: 's' },
  exclusive: { type: 'boolean', short: 'x' },
  nonblock: { type: 'boolean', short: 'n' },
  wait: { type: 'string', short: 'w' },
  'conflict-exit-code': { type: 'string', short: 'E' },
  command: { type: 'string', short: 'c' },
  scope: { type: 'string' },
  ttl: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionSpecs;

/** A validated `latchkey run`. */
export interface RunRequest {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** What to call the command in messages (the -c text, or COMMAND). */
  readonly describe: string;
  readonly mode: LockMode;
  readonly nonblock: boolean;
  /** ms; Infinity: no --wait. */
  readonly timeout: number;
  /** The exit status for --nonblock finding the lock held, and for --wait running out (-E). */
  readonly conflictStatus: number | undefined;
  readonly scope: LockScope;
  readonly ttl: number | undefined;
}

/**
 * Where latchkey's arguments end and COMMAND's begin: at the first '--'
 * (dropped), as always; or, when there is none, at the first argument after
 * NAME that is not an option of latchkey's or an option's value. Returns the
 * index COMMAND starts at (argv.length when there is none) and whether it
 * was a '--'. (With a '--' anywhere, everything before it is latchkey's:
 * `latchkey run x make -- y` is two NAMEs, refused, not make's '--'.)
 */
export function splitCommand(argv: readonly string[]): { at: number; terminator: boolean } {
  const terminator = argv.indexOf('--');
  if (terminator >= 0) return { at: terminator, terminator: true };
  let named = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      // --wait 5 takes the next argument; --wait=5 and unknown options (refused later) do not.
      const spec = (kOptions as OptionSpecs)[a.slice(2)];
      if (spec?.type === 'string') i++;
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      // A group of short options: the first that takes a value takes the rest of the group, or the next argument.
      for (let j = 1; j < a.length; j++) {
        const spec = Object.values(kOptions as OptionSpecs).find((o) => o.short === a[j]);
        if (spec?.type === 'string') {
          if (j === a.length - 1) i++;
          break;
        }
      }
      continue;
    }
    if (named) return { at: i, terminator: false };
    named = true;
  }
  return { at: argv.length, terminator: false };
}

/** `argv` (after `run`) as a request, or null for --help; a usage error when it is not one. */
export function parseRun(argv: string[]): RunRequest | null {
  const split = splitCommand(argv);
  const ours = argv.slice(0, split.at), theirs = argv.slice(split.at + (split.terminator ? 1 : 0));
  let parsed;
  try {
    parsed = parseCommand('run', ours, kOptions);
  } catch (err) {
    // `latchkey run NAME -j4 make`: is -j4 latchkey's, or the command's? Say how to tell.
    if ((err as Error).message.includes('unknown option')) {
      const hint = split.terminator ? "everything before '--' is latchkey's" : "latchkey's options come before COMMAND; put '--' before a COMMAND that starts with '-'";
      throw usage('run', `${(err as Error).message.replace(/^run: /, '').replace(/ \(see .*$/, '')}: ${hint}`);
    }
    throw err;
  }
  const { values: v, positionals } = parsed;
  if (v.help) return null;
  if (positionals.length === 0) throw usage('run', 'missing the lock NAME');
  if (positionals.length > 1) {
    throw usage('run', `expected one lock NAME before '--', got ${positionals.length}: ${positionals.map((p) => JSON.stringify(p)).join(' ')} (to give COMMAND a '--', put one before COMMAND too)`);
  }
  const name = positionals[0]!;
  if (name === '') throw usage('run', 'the lock NAME is empty');
  if (v.command !== undefined && theirs.length > 0) throw usage('run', '-c and a COMMAND cannot be used together: give one of them');
  if (v.command === undefined && theirs.length === 0) {
    throw usage('run', split.terminator ? "missing the command after '--'" : 'missing the COMMAND to run (or -c \'SHELL COMMAND\')');
  }
  if (v.command === '') throw usage('run', 'the -c command is empty');
  if (v.shared && v.exclusive) throw usage('run', '--shared and --exclusive cannot be used together');
  if (v.nonblock && v.wait !== undefined) throw usage('run', '--nonblock and --wait cannot be used together');
  const scope = v.scope ?? 'host';
  if (scope !== 'host' && scope !== 'thread' && scope !== 'cluster') {
    throw usage('run', `--scope must be host, cluster or thread, not ${JSON.stringify(scope)}`);
  }
  const conflict = v['conflict-exit-code'];
  // As flock(1): the shell is $SHELL, else /bin/sh.
  const shell = process.env.SHELL || '/bin/sh';
  return {
    name,
    command: v.command === undefined ? theirs[0]! : shell,
    args: v.command === undefined ? theirs.slice(1) : ['-c', v.command],
    describe: v.command === undefined ? theirs[0]! : shell,
    mode: v.shared ? 'shared' : 'exclusive',
    nonblock: v.nonblock ?? false,
    timeout: v.wait === undefined ? Infinity : parseSeconds('run', '--wait', v.wait),
    conflictStatus: conflict === undefined ? undefined : parseInteger('run', '-E', conflict, 0, 255),
    scope,
    ttl: v.ttl === undefined ? undefined : parseInteger('run', '--ttl', v.ttl, 250, 86_400_000),
  };
}

export async function main(argv: string[]): Promise<number> {
  const request = parseRun(argv);
  return request === null ? printHelp(RUN_HELP) : runLocked(request);
}

/** The reason a forwarded signal aborts the wait with. */
class Stopped extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`Stopped by ${signal} while waiting for the lock`);
  }
}

async function runLocked(r: RunRequest): Promise<number> {
  // The lease keeper starts as the event loop next turns, just after COMMAND is spawned, not before it (helper-threads.ts deferHelper):
  // a steal is still heard once it runs, ~0.1 s after the request (README, host tier); this thread never blocks meanwhile.
  if (r.scope === 'host') deferHelper(HOST_TABLE_KEY, 0);
  if (r.scope === 'cluster') await import('../process-cluster.js');
  const stop = new AbortController();
  let running: Running | undefined;
  // Kept until latchkey exits: a signal after COMMAND ended is moot, and must not kill latchkey before it releases.
  catchSignals((signal) => {
    if (running !== undefined) forward(running.child, signal);
    else if (!stop.signal.aborted) stop.abort(new Stopped(signal));
  });

  const guard = await acquire(r, stop.signal);
  if (guard === 'stopped') return signalStatus((stop.signal.reason as Stopped).signal);
  if (guard === null) throw new CliError(`lock ${JSON.stringify(r.name)} is taken${holders(r)}: not running the command (--nonblock)`, r.conflictStatus ?? EXIT_CONFLICT);
  // A signal that came as the grant did: give the lock back unused.
  if (stop.signal.aborted) {
    releaseQuietly(guard);
    return signalStatus((stop.signal.reason as Stopped).signal);
  }

  const env = {
    ...process.env,
    LATCHKEY_NAME: r.name,
    LATCHKEY_TOKEN: String(guard.token),
    LATCHKEY_ABANDONED: guard.abandoned ? '1' : '0',
  };
  const child = (running = start(r.command, r.args, env));
  let lost = false;
  const onLost = () => {
    lost = true;
    process.stderr.write(`latchkey: ${lossMessage(guard.signal.reason)}; sending SIGTERM to the command\n`);
    forward(child.child, 'SIGTERM');
  };
  // A loss reported before this listener was added does not fire it: look as well.
  guard.signal.addEventListener('abort', onLost, { once: true });
  if (guard.signal.aborted && !lost) onLost();

  const outcome = await child.ended;
  guard.signal.removeEventListener('abort', onLost);
  try {
    guard.unlock();
  } catch (err) {
    if (typeof (err as { reason?: unknown }).reason === 'string') {
      // Lost, and only found out now: the command's work was not protected all along.
      if (!lost) process.stderr.write(`latchkey: ${lossMessage(err)}, before the command ended\n`);
      lost = true;
    } else {
      // The backend failed to take it back: the exit hook tries again, and the lease runs out by itself.
      process.stderr.write(`latchkey: could not release lock ${JSON.stringify(r.name)}: ${lossMessage(err)}\n`);
    }
  }
  const { status, message } = statusOf(outcome, r.describe);
  if (message !== undefined) throw new CliError(message, status);
  return lost ? EXIT_LOST : status;
}

/** The guard, null (--nonblock, held), or 'stopped' (a signal ended the wait); a CliError for a timeout or a backend that cannot be used. */
async function acquire(r: RunRequest, stop: AbortSignal): Promise<LockGuard | null | 'stopped'> {
  const wait = r.nonblock ? { ifAvailable: true } : { signal: stop, timeout: r.timeout };
  try {
    return await locks.lock(r.name, { mode: r.mode, scope: r.scope, ...(r.ttl === undefined ? {} : { ttl: r.ttl }), ...wait });
  } catch (err) {
    if (stop.aborted) return 'stopped';
    const { code, name, message } = err as { code?: unknown; name?: unknown; message: string };
    if (code === 'ERR_LOCK_TIMEOUT') {
      throw new CliError(`timed out after ${r.timeout / 1000} s waiting for lock ${JSON.stringify(r.name)}${holders(r)}`, r.conflictStatus ?? EXIT_TIMEOUT);
    }
    // Every failure of the lock store (wrapped or not) is EX_UNAVAILABLE, never a latchkey bug.
    if (isStoreFailure(err)) throw storeFailure(err, `cannot take lock ${JSON.stringify(r.name)}`);
    // The front door refused the name or an option (too long, reserved): bad arguments.
    if (err instanceof TypeError || err instanceof RangeError || name === 'NotSupportedError') throw usage('run', message);
    throw err;
  }
}

/** " (held by pid 123)" when the backend can tell who holds the name (best effort: only for the message). */
function holders(r: RunRequest): string {
  if (r.scope !== 'host') return '';
  try {
    const entries = hostBackend().query();
    if (entries instanceof Promise) return '';
    const pids = [...new Set(entries.filter((e) => e.name === r.name && e.state === 'held').map((e) => e.pid))];
    return pids.length === 0 ? '' : ` (held by pid ${pids.join(', ')})`;
  } catch {
    return '';
  }
}

function lossMessage(err: unknown): string {
  const e = err as { message?: unknown; reason?: unknown };
  const text = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.reason === 'string' && !text.includes(e.reason) ? `${text} (${e.reason})` : text;
}

function releaseQuietly(guard: LockGuard): void {
  try {
    guard.unlock();
  } catch {
    // lost meanwhile: nothing to give back
  }
}
