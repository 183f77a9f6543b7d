#!/usr/bin/env node
/**
 * The `latchkey` command: dispatch to one module per command. Each command
 * module exports `main(argv): Promise<number>` (the exit status) and is
 * loaded only when used, so that `latchkey --help` loads no lock machinery.
 * A command ends with a CliError for a failure it can name (one line on
 * stderr, its status); anything else is a latchkey bug (EXIT_SOFTWARE).
 */
import { readFileSync } from 'node:fs';
import { CliError, isStoreFailure, printHelp, storeFailure, usage } from './args.js';
import { EXIT_CODES_HELP, EXIT_SOFTWARE } from './exit-codes.js';

type Command = () => Promise<{ main(argv: string[]): Promise<number> | number }>;

const commands: Record<string, Command> = {
  run: () => import('./run.js'),
  status: () => import('./status.js'),
  demo: () => import('./demo.js'),
  bench: () => import('./bench.js'),
};

const HELP = `Usage: latchkey COMMAND [options] [ARGS...]

latchkey: locks for Node.js across worker threads, processes and machines.

Commands:
  run [options] NAME [--] COMMAND [ARGS...]
  run [options] NAME -c 'SHELL COMMAND'
               take the lock NAME (host scope, or --scope cluster), run
               COMMAND holding it (like flock(1))
  status [--json] [--top N] [--scope host|cluster] [NAME...]
               the locks held and waited for (this machine's, or the
               cluster's), and the hot ones
  demo [...]   run the live demo (node dist/demo/main.js; from a clone)
  bench [...]  run the benchmark suites (node dist/bench/run.js; from a clone)
  help [COMMAND]
               this help, or a command's (as 'latchkey COMMAND --help')

Options:
  -h, --help     show this help
  -V, --version  print latchkey's version

Environment:
  LATCHKEY_BACKEND  file (default) or sqlite
  LATCHKEY_DIR      the lock directory (default $TMPDIR/latchkey-<uid>)

${EXIT_CODES_HELP}`;

function version(): string {
  try {
    // dist/src/cli/main.js → the package's package.json
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) throw usage(null, 'missing the command');
  if (first === '-h' || first === '--help') return printHelp(HELP);
  if (first === '-V' || first === '--version') return printHelp(`latchkey ${version()}`);
  if (first === 'help') {
    if (rest.length === 0) return printHelp(HELP);
    const [topic, ...more] = rest;
    if (more.length > 0) throw usage(null, `help takes one COMMAND, got ${rest.length}`);
    const load = Object.hasOwn(commands, topic!) ? commands[topic!]! : undefined;
    if (load === undefined) throw usage(null, `unknown command ${JSON.stringify(topic)}`);
    return (await load()).main(['--help']);
  }
  if (first.startsWith('-')) throw usage(null, `unknown option ${JSON.stringify(first)}`);
  const load = Object.hasOwn(commands, first) ? commands[first]! : undefined;
  if (load === undefined) throw usage(null, `unknown command ${JSON.stringify(first)}`);
  return (await load()).main(rest);
}

/** One line: a message with a newline in it (a path, a name) must not break the line. */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}

/**
 * End with `err`: a CliError's message and status; a failure of the lock
 * store (wrapped or raw: ENOSPC, EROFS, ELOOP, SQLITE_BUSY …) as
 * EX_UNAVAILABLE; anything else is a bug (EX_SOFTWARE), with the stack
 * when NODE_DEBUG=latchkey asks for it.
 */
function fail(err: unknown): never {
  const e = isStoreFailure(err) && !(err instanceof CliError) ? storeFailure(err) : err;
  if (e instanceof CliError) {
    process.stderr.write(`latchkey: ${oneLine(e.message)}\n`);
    process.exit(e.status);
  }
  const x = e as Error;
  const detail = /\blatchkey\b/i.test(process.env.NODE_DEBUG ?? '') ? `\n${x?.stack}` : '';
  process.stderr.write(`latchkey: internal error: ${oneLine(x?.message ?? String(e))}${detail}\n`);
  process.exit(EXIT_SOFTWARE);
}

// Thrown outside the command's own promise (a timer, a watcher of the lock store): the same rules.
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

main(process.argv.slice(2)).then((status) => process.exit(status), fail);
