/** `latchkey demo`: the live demo (demo/main.ts), run with this node and the remaining arguments. */
import { SCRIPT_EXIT_HELP } from './exit-codes.js';
import { forwardTo } from './forward.js';

export const DEMO_HELP = `Usage: latchkey demo [DEMO OPTIONS...]

Run latchkey's live demo (node dist/demo/main.js) with these arguments:
processes with piscina pools of worker threads update a shared cache under
host locks; a worker thread and then a whole process are killed inside an
update, their locks come back abandoned, and the cache is audited at the end.
The demo's own options (see demo/main.ts):
  --processes P   processes (default 3, at least 2)
  --threads T     worker threads per process (default 3)
  --seconds S     how long to run (default 4)
  --backend B     sqlite (default) or file
  --quiet         no progress bar
'latchkey demo -- --help' passes --help to the demo itself. The demo runs
from a clone of the repository (it is 'npm start' there); the published
package does not include it.

Signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT) are forwarded to the demo, and its
exit status is latchkey's (the demo: 0 when the audit is exact, 1 when not,
2 for bad flags).

${SCRIPT_EXIT_HELP}`;

export function main(argv: string[]): Promise<number> {
  return forwardTo('demo', '../../demo/main.js', DEMO_HELP, argv);
}
