#!/usr/bin/env node
/**
 * The `latchkey` command: dispatch to one module per command. Each command
 * module exports `main(argv): Promise<number>` (the exit status) and is
 * loaded only when used, so that `latchkey --help` loads no lock machinery.
 * A command ends with a CliError for a failure it can name (one line on
 * stderr, its status); anything else is a latchkey bug (EXIT_SOFTWARE).
 */
import { readFileSync } from 'node:fs';
import { CliError, printHelp, usage } from './args.js';
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
  run [options] NAME -- COMMAND [ARGS...]
               take the host lock NAME, run COMMAND holding it (like flock(1))
  status [--json]
               the host locks of this machine: held, waited for, hot
  demo [...]   run the live demo (node dist/demo/main.js)
  bench [...]  run the benchmark suites (node dist/bench/run.js)
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

main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`latchkey: ${oneLine(err.message)}\n`);
      process.exit(err.status);
    }
    const e = err as Error;
    // The stack only when asked for (NODE_DEBUG=latchkey, as the library's own debug lines).
    const detail = /\blatchkey\b/i.test(process.env.NODE_DEBUG ?? '') ? `\n${e?.stack}` : '';
    process.stderr.write(`latchkey: internal error: ${oneLine(e?.message ?? String(err))}${detail}\n`);
    process.exit(EXIT_SOFTWARE);
  },
);
