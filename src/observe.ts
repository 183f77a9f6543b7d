/**
 * What latchkey tells an observer: `NODE_DEBUG=latchkey` lines through
 * util.debuglog, and diagnostics_channel channels an APM tool can subscribe
 * to. Both cost one property read on the hot path while nobody listens.
 *
 * Channels (messages are plain objects):
 *   latchkey:acquire     { name, mode, scope, token, abandoned, waitedMs }
 *                        a front-door lock was granted; waitedMs is 0 when
 *                        it was granted at once
 *   latchkey:release     { name, mode, scope, token, heldMs }
 *   latchkey:contention  { name, mode, scope } a request has to wait
 *   latchkey:host        { event, name, ... } the host tier: 'takeover' (a
 *                        dead or expired holder's lock taken), 'renew',
 *                        'lost', 'handoff' (an outer grant given back to
 *                        the backend for other processes)
 */
import { channel } from 'node:diagnostics_channel';
import { debug } from './debug.js';

export { debug };
export const acquireChannel = channel('latchkey:acquire');
export const releaseChannel = channel('latchkey:release');
export const contentionChannel = channel('latchkey:contention');
export const hostChannel = channel('latchkey:host');

/** Whether anybody listens to the front door (a channel subscriber, or NODE_DEBUG). */
export const observed = (): boolean => debug.enabled || acquireChannel.hasSubscribers || releaseChannel.hasSubscribers
  || contentionChannel.hasSubscribers;

/** A host-tier event: to the channel and the debug log. */
export function hostEvent(event: string, name: string, detail: Record<string, unknown> = {}): void {
  if (hostChannel.hasSubscribers) hostChannel.publish({ event, name, ...detail });
  if (debug.enabled) debug('host %s %s %o', event, JSON.stringify(name), detail);
}
