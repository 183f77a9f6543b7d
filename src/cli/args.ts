/**
 * What every command shares: the error that ends a command with a status
 * and a one-line message, node:util parseArgs with its errors turned into
 * usage errors, and the number parsers for option values.
 */
import { parseArgs } from 'node:util';
import { EXIT_UNAVAILABLE, EXIT_USAGE } from './exit-codes.js';

/** Ends a command: main.ts prints `latchkey: <message>` (one line) on stderr and exits with `status`. */
export class CliError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = 'CliError';
  }
}

/** A usage error of `command` (exit 64), pointing at its --help. */
export function usage(command: string | null, message: string): CliError {
  const help = command === null ? 'latchkey --help' : `latchkey ${command} --help`;
  return new CliError(`${command === null ? '' : `${command}: `}${message} (see '${help}')`, EXIT_USAGE);
}

/** One option of a command, as node:util parseArgs takes it. */
export type OptionSpec = { type: 'boolean' | 'string'; short?: string };
export type OptionSpecs = Record<string, OptionSpec>;
type Values<O extends OptionSpecs> = { [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string };

export interface Parsed<O extends OptionSpecs> {
  values: Values<O>;
  /** Positionals before `--`. */
  positionals: string[];
  /** Everything after the first `--`, or null when there was none. */
  rest: string[] | null;
}

/**
 * Parse `args` strictly (an unknown option, a missing value or a value
 * given to a flag is a usage error), splitting the positionals at `--`.
 */
export function parseCommand<O extends OptionSpecs>(command: string, args: string[], options: O): Parsed<O> {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true, tokens: true });
  } catch (err) {
    throw usage(command, parseArgsMessage(err as Error));
  }
  const terminator = parsed.tokens.find((t) => t.kind === 'option-terminator');
  const positionals: string[] = [], rest: string[] = [];
  for (const t of parsed.tokens) {
    if (t.kind !== 'positional') continue;
    (terminator !== undefined && t.index > terminator.index ? rest : positionals).push(t.value);
  }
  return { values: parsed.values as Values<O>, positionals, rest: terminator === undefined ? null : rest };
}

/** parseArgs's message, first sentence, as the rest of a line: "unknown option '--foo'". */
function parseArgsMessage(err: Error): string {
  const first = err.message.split(/\.\s/)[0]!.replace(/\.$/, '');
  return first.charAt(0).toLowerCase() + first.slice(1);
}

/** Whether -h / --help comes before any `--`: the wrappers (demo, bench) look for it without parsing the rest. */
export function asksForHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '-h' || a === '--help') return true;
  }
  return false;
}

/** A decimal number of seconds (`0.3`, `5`, `.5`), >= 0: ms. */
export function parseSeconds(command: string, option: string, text: string): number {
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(text)) throw usage(command, `${option} must be a number of seconds >= 0, not ${JSON.stringify(text)}`);
  const ms = Number(text) * 1000;
  // Beyond this the wait's timers would overflow; it is 24.8 days.
  if (ms > 0x7fffffff) throw usage(command, `${option} must be at most 2147483 seconds, not ${text}`);
  return ms;
}

/** A decimal integer from `min` to `max`. */
export function parseInteger(command: string, option: string, text: string, min: number, max: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) throw usage(command, `${option} must be an integer from ${min} to ${max}, not ${JSON.stringify(text)}`);
  return n;
}

/** Write a command's help (stdout, it was asked for) and succeed. */
export function printHelp(text: string): number {
  process.stdout.write(`${text}\n`);
  return 0;
}

/**
 * Whether `err` is a failure of the lock store rather than a bug of
 * latchkey's: ERR_LOCK_BACKEND, or a system or SQLite error that reached
 * here without being wrapped (a file that cannot be opened, a disk that is
 * full or read-only, too many open files, a database that is busy or
 * corrupt). Those end a command with EXIT_UNAVAILABLE, never EXIT_SOFTWARE.
 */
export function isStoreFailure(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, errno, syscall } = err as { code?: unknown; errno?: unknown; syscall?: unknown };
  if (code === 'ERR_LOCK_BACKEND') return true;
  if (typeof code === 'string' && (/^E[A-Z0-9]+$/.test(code) || code.startsWith('SQLITE_'))) return true;
  return typeof errno === 'number' || typeof syscall === 'string';
}

/** A store failure as a CliError (exit 69): its message, and the system error's code when the message lacks it. */
export function storeFailure(err: unknown, what = 'the lock store cannot be used'): CliError {
  const e = err as { code?: unknown; message?: unknown };
  const message = typeof e.message === 'string' ? e.message : String(err);
  if (e.code === 'ERR_LOCK_BACKEND') return new CliError(message, EXIT_UNAVAILABLE);
  return new CliError(`${what}: ${message}`, EXIT_UNAVAILABLE);
}
