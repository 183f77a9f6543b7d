/**
 * The exit statuses of the `latchkey` command, in one place: every command
 * returns one of these (or the status of the command it ran), and every
 * --help prints the table below.
 *
 * The choices follow the tools a user already knows: sysexits(3) for
 * latchkey's own failures (as FreeBSD lockf(1) does), coreutils timeout(1)
 * for a wait that ran out, and the shell's 126 / 127 / 128+n for a command
 * that could not be run or died of a signal.
 */
import { constants } from 'node:os';

/** The command's own status is passed through: 0-255 as it exited. */
export const EXIT_OK = 0;
/** EX_USAGE: bad arguments, an unknown command or option. */
export const EXIT_USAGE = 64;
/**
 * EX_UNAVAILABLE: the lock store cannot be used: LATCHKEY_BACKEND unknown,
 * LATCHKEY_DIR refused, a file or database that cannot be read or written
 * (ENOSPC, EROFS, ELOOP …), a driver not installed, a server not reached.
 * Every failure of the store is this, never EXIT_SOFTWARE.
 */
export const EXIT_UNAVAILABLE = 69;
/** EX_SOFTWARE: latchkey failed unexpectedly (a bug: please report it). */
export const EXIT_SOFTWARE = 70;
/** EX_TEMPFAIL: `run --nonblock` found the lock held; the command was not run. */
export const EXIT_CONFLICT = 75;
/**
 * The lock was lost while the command ran (its lease was stolen, or ran out
 * while latchkey could not renew it): the command was sent SIGTERM, and
 * latchkey exits with this whatever the command's own status.
 */
export const EXIT_LOST = 76;
/** As coreutils timeout(1): `run --wait S` gave up after S seconds; the command was not run. */
export const EXIT_TIMEOUT = 124;
/** As the shell: the command was found but could not be executed (EACCES, ENOEXEC …). */
export const EXIT_CANNOT_EXECUTE = 126;
/** As the shell: the command was not found. */
export const EXIT_NOT_FOUND = 127;
/** As the shell: 128 + n when the command died of signal n, or latchkey was stopped by signal n before it ran it. */
export const EXIT_SIGNAL_BASE = 128;

export function signalStatus(signal: NodeJS.Signals): number {
  return EXIT_SIGNAL_BASE + (constants.signals[signal] ?? 0);
}

/** One row of an exit-status table: the status as printed, and what it means. */
type Row = readonly [status: string, meaning: string];

/** Every status, by what it is; each command's --help lists the rows that command can end with. */
export const kExitRows = {
  passed: ['N', "the command's own exit status"],
  ok: ['0', 'success'],
  usage: ['64', 'bad arguments (EX_USAGE)'],
  unavailable: ['69', 'the lock store cannot be used: lock directory, database or server (EX_UNAVAILABLE)'],
  software: ['70', 'latchkey failed unexpectedly: a bug, please report it (EX_SOFTWARE)'],
  conflict: ['75', '--nonblock: the lock is held; the command was not run (EX_TEMPFAIL; -E changes it)'],
  lost: ['76', 'the lock was lost while the command ran; the command was sent SIGTERM'],
  timeout: ['124', '--wait: timed out; the command was not run (-E changes it)'],
  cannotExecute: ['126', 'the command cannot be executed'],
  notFound: ['127', 'the command was not found'],
  scriptMissing: ['127', 'the script is not there (it runs from a clone of the repository)'],
  signal: ['128+n', 'the command died of signal n, or latchkey got signal n before it ran it'],
  scriptSignal: ['128+n', 'the script died of signal n'],
} as const satisfies Record<string, Row>;

/** An "Exit status:" table of `rows`. */
export function exitStatusHelp(rows: readonly Row[]): string {
  const width = Math.max(...rows.map(([code]) => code.length));
  return ['Exit status:', ...rows.map(([code, meaning]) => `  ${code.padEnd(Math.max(width, 7))}  ${meaning}`)].join('\n');
}

const r = kExitRows;
/** `latchkey run`'s statuses. */
export const RUN_EXIT_HELP = exitStatusHelp([r.passed, r.usage, r.unavailable, r.software, r.conflict, r.lost, r.timeout, r.cannotExecute, r.notFound, r.signal]);
/** `latchkey status`'s. */
export const STATUS_EXIT_HELP = exitStatusHelp([r.ok, r.usage, r.unavailable, r.software]);
/** `latchkey demo` and `latchkey bench`: the script's own status passed through. */
export const SCRIPT_EXIT_HELP = exitStatusHelp([[r.passed[0], "the script's own exit status"], r.software, r.scriptMissing, r.scriptSignal]);

/** The table `latchkey --help` ends with: every status of every command. */
export const EXIT_CODES_HELP = `Exit status:
  N        the command's own exit status (run, demo, bench)
  0        success (status, --help, --version)
  64       bad arguments (EX_USAGE)
  69       the lock store cannot be used: lock directory, database or server (EX_UNAVAILABLE)
  70       latchkey failed unexpectedly: a bug, please report it (EX_SOFTWARE)
  75       run --nonblock: the lock is held; the command was not run (EX_TEMPFAIL; run -E changes it)
  76       run: the lock was lost while the command ran; the command was sent SIGTERM
  124      run --wait: timed out; the command was not run (run -E changes it)
  126      the command cannot be executed
  127      the command (or demo/bench's script) was not found
  128+n    the command died of signal n, or latchkey got signal n before it ran it`;
