/** `latchkey bench`: the benchmark suites (bench/run.ts), what `npm run bench` runs once built. */
import { SCRIPT_EXIT_HELP } from './exit-codes.js';
import { forwardTo } from './forward.js';

export const BENCH_HELP = `Usage: latchkey bench [BENCH OPTIONS...]

Run latchkey's benchmark suites (node dist/bench/run.js) with these
arguments, as 'npm run bench' does after a build: every latchkey figure beside
its anchor measured in the same run, written to bench/results/latest.json and
latest.md. The suites' own options include:
  --quick         short runs, for a smoke test (prints, writes nothing)
'latchkey bench -- --help' passes --help to the suites themselves. The
suites run from a clone of the repository (they need its dev dependencies);
the published package does not include them.

Signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT) are forwarded, and the suites' exit
status is latchkey's.

${SCRIPT_EXIT_HELP}`;

export function main(argv: string[]): Promise<number> {
  return forwardTo('bench', '../../bench/run.js', BENCH_HELP, argv);
}
