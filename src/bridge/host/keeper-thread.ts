/**
 * The lease keeper, worker side (helper-threads.ts starts it, at the first
 * host request; the first grant does not wait for it). It is on no wake-up
 * path: a release wakes the next process through that process's FIFO. What
 * it does:
 * - renews the leases of the host locks the process holds, off every
 *   holder's event loop (host.ts renewOuter, once a third of a lease is
 *   gone), and checks that each is still ours;
 * - hears at once when one was taken (a steal, a takeover after a freeze):
 *   the process's notice FIFO, and a watch on each held name's store
 *   (which also sees the store removed: issue 17 item 1);
 * - gives back a grant that lingers (held, serving nobody: the cohort's
 *   linger, atomics/queue/word.ts) once it has lingered long enough, or at
 *   once when another process waits for it;
 * - ticks the FIFO of every blocked lockSync() of the process every POLL_MS
 *   and at its deadline (a blocking read ends only with a message).
 */
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { BroadcastChannel } from 'node:worker_threads';
import { HELPER_RUNNING } from '../../atomics/queue/table.js';
import type { OuterSeat } from '../../atomics/queue/outer.js';
import { POLL_MS, TICK_CHANNEL, type TickRequest, hostBackend, hostSeats, hostTable, renewOuter } from './host.js';
import { M_TICK } from './fifo.js';
import { storeKey } from '../keys.js';
import { debug } from '../../observe.js';

/** How often the keeper looks, at the least: a lease is renewed when a third of it is gone, and the shortest is 250 ms. */
export const KEEPER_TICK_MS = 50;

const helper = hostTable().helper;
const backend = hostBackend();

// This thread exists to wait: keep it alive while the process lives (the
// main thread unref'd it, so it never keeps the process alive).
setInterval(() => {}, 0x7fffffff);

/** Check every held grant now: a notice or a watch said one may be gone. */
function checkHeld(): void {
  for (const seat of hostSeats()) if (seat.state === 'held') renewOuter(seat, true);
}

// Steals and takeovers of our grants, told by whoever did them.
try {
  backend.notices(() => checkHeld());
} catch (err) {
  debug('the lease keeper cannot read its notice FIFO (renewals still find losses): %s', (err as Error).message);
}

// --- lockSync ticks ------------------------------------------------------------------

const tick = Buffer.from([M_TICK, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const ticking = new Map<string, { fd: number; every: NodeJS.Timeout; at?: NodeJS.Timeout }>();

function sendTick(id: string): void {
  const t = ticking.get(id);
  if (t === undefined) return;
  try {
    writeSync(t.fd, tick);
  } catch {
    stopTicks(id); // nobody reads it any more
  }
}

function stopTicks(id: string): void {
  const t = ticking.get(id);
  if (t === undefined) return;
  ticking.delete(id);
  clearInterval(t.every);
  if (t.at !== undefined) clearTimeout(t.at);
  try {
    closeSync(t.fd);
  } catch {
    // closed already
  }
}

const ticks = new BroadcastChannel(TICK_CHANNEL);
ticks.onmessage = (event) => {
  const m = (event as { data: TickRequest }).data;
  if (m.done === true) {
    stopTicks(m.id);
    return;
  }
  let fd: number;
  try {
    fd = openSync(m.fifo, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (err) {
    debug('cannot tick %s: %s', m.fifo, (err as Error).message);
    return;
  }
  const every = setInterval(() => sendTick(m.id), POLL_MS);
  const left = m.deadline - Date.now();
  const at = Number.isFinite(left) ? setTimeout(() => sendTick(m.id), Math.max(0, left) + 1) : undefined;
  ticking.set(m.id, { fd, every, at });
};

// --- rounds ----------------------------------------------------------------------------

/** Held names' watches: a change there is checked at once. */
const watched = new Map<string, () => void>();

/** One pass over the host table; returns ms until a lingering grant is due. */
function round(): number {
  try {
    backend.checkStore();
  } catch (err) {
    debug('the lease keeper cannot look at the lock store: %s', (err as Error).message);
  }
  const seen = new Set<string>();
  let due = KEEPER_TICK_MS;
  for (const seat of hostSeats()) {
    if (seat.state !== 'held') continue;
    const name = seat.name;
    const until = seat.lingersUntil;
    if (until !== 0) {
      const now = performance.timeOrigin + performance.now();
      if (now >= until || waitedElsewhere(seat)) seat.releaseIfIdle(Infinity);
      else due = Math.min(due, until - now);
    }
    if (seat.state !== 'held') continue;
    renewOuter(seat, false);
    seen.add(name);
    if (!watched.has(name)) {
      try {
        watched.set(name, backend.watch(storeKey(name), () => {
          if (seat.state === 'held') renewOuter(seat, true);
        }));
      } catch {
        watched.set(name, () => {});
      }
      // A steal or a takeover before the watch (or before this thread ran at all) is found now.
      renewOuter(seat, true);
    }
  }
  for (const [name, unwatch] of watched) {
    if (seen.has(name)) continue;
    unwatch();
    watched.delete(name);
  }
  return due;
}

/** Whether another process waits for a lingering grant (then it goes at once). */
function waitedElsewhere(seat: OuterSeat): boolean {
  try {
    return backend.waiting(storeKey(seat.name));
  } catch {
    return false;
  }
}

helper.set(HELPER_RUNNING);
for (;;) {
  const bell = helper.bell;
  const due = round();
  await helper.sleep(bell, Math.max(0, due));
}
