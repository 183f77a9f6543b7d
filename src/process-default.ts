/**
 * Importing latchkey, the rest: the default LockTable's part of steps 2 and
 * 3 of process.ts (reserved unborn, ~0.8 MB once LockTable.default() makes
 * it). Apart, so that a program of Web Locks alone (the latchkey command:
 * cli/run.ts imports process.ts) loads neither the table nor the six
 * primitives its recovery needs (atomics/kinds.ts): ~20 ms of a one-shot
 * command's start, of the 30 % over `node -e 0` it may cost (issue 16).
 * index.ts imports this, so `import 'latchkey'` does all of process.ts, in
 * its order, then this.
 */
import { reserveTable } from './process.js'; // first: all of process.ts happens before this
import { KINDS } from './atomics/kinds.js';
import { DEFAULT_TABLE_KEY, kDefaultGeometry } from './atomics/table.js';

reserveTable(DEFAULT_TABLE_KEY, kDefaultGeometry, KINDS);
