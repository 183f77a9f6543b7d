/**
 * The commands that run one of the project's scripts with the same node
 * (demo, bench): everything after the command goes to the script as it is,
 * except -h / --help before any `--`, which is latchkey's; a first `--` is
 * dropped, so that `latchkey demo -- --help` asks the script itself.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CliError, asksForHelp, printHelp } from './args.js';
import { runForwarding } from './child.js';
import { EXIT_NOT_FOUND } from './exit-codes.js';

/** `script` is relative to this file (dist/src/cli/): '../../demo/main.js' is dist/demo/main.js. */
export async function forwardTo(command: string, script: string, help: string, argv: string[]): Promise<number> {
  if (asksForHelp(argv)) return printHelp(help);
  const path = fileURLToPath(new URL(script, import.meta.url));
  if (!existsSync(path)) {
    // The installed package ships neither (they need the repository's dev dependencies): they run from a clone.
    throw new CliError(`${command}: ${path} is missing: 'latchkey ${command}' runs from a clone of the repository, after 'npm install' there (the published package does not include it)`, EXIT_NOT_FOUND);
  }
  const args = argv[0] === '--' ? argv.slice(1) : argv;
  return runForwarding(process.execPath, [path, ...args], path);
}
