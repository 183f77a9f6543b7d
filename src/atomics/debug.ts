/**
 * The one debug log: `NODE_DEBUG=latchkey` (util.debuglog). Here, in the
 * thread tier, because the thread tier imports nothing above it; observe.ts
 * re-exports it for everyone else.
 */
import { debuglog } from 'node:util';

export const debug = debuglog('latchkey');
