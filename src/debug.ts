/**
 * `NODE_DEBUG=latchkey`: the one debug log of every tier (util.debuglog).
 * A leaf, as errors.ts is: it imports nothing of the project, so the thread
 * tier may use it without reaching upward; observe.ts re-exports it beside
 * the diagnostics channels.
 */
import { debuglog } from 'node:util';

export const debug = debuglog('latchkey');
