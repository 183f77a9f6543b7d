/**
 * The lease keeper, worker side (helper-threads.ts starts it). Every KEEPER_TICK_MS,
 * and whenever its doorbell rings, it goes through the host table:
 * - a name whose host lock this process holds: renew the lease once a third
 *   of it is gone (host.ts renewOuter), and watch the backend, so that a
 *   steal or a takeover is noticed at once, not at the next renewal;
 * - a name an escalator waits on: watch the backend and ring the name's
 *   outer bell on every change, so the escalator retries at once;
 * - a host lock that lingers (held, serving nobody: atomics/queue/word.ts
 *   LINGER_MS): give it back once it has lingered long enough.
 * Names nobody holds or waits on are unwatched.
 */
import { HELPER_RUNNING } from '../../atomics/queue/table.js';
import type { OuterSeat } from '../../atomics/queue/outer.js';
import { hostBackend, hostSeats, hostTable, renewOuter } from './host.js';
import { storeKey } from '../keys.js';

/** How often the keeper looks, at the least: a lease is renewed when a third of it is gone, and the shortest is 250 ms. */
export const KEEPER_TICK_MS = 50;

const helper = hostTable().helper;
const watched = new Map<string, () => void>();
const backend = hostBackend();

// This thread exists to wait: keep it alive while the process lives (the
// main thread unref'd it, so it never keeps the process alive).
setInterval(() => {}, 0x7fffffff);

/** When each held name was last checked on a change: at most one check per CHECK_MS, whatever the traffic. */
const checked = new Map<string, number>();
const CHECK_MS = 10;

/** Names whose check waits for CHECK_MS to pass: a change inside it is checked then, not dropped. */
const later = new Set<string>();

function onChange(seat: OuterSeat): void {
  seat.ring();
  // Still ours? A steal or a takeover shows here before the next renewal.
  const now = performance.now(), name = seat.name, last = checked.get(name) ?? -Infinity;
  if (now - last < CHECK_MS) {
    if (!later.has(name)) {
      later.add(name);
      setTimeout(() => {
        later.delete(name);
        if (watched.has(name)) onChange(seat);
      }, last + CHECK_MS - now);
    }
    return;
  }
  checked.set(name, now);
  if (seat.state === 'held') renewOuter(seat, true);
}

/** One pass over the host table; returns ms until a lingering grant is due. */
function round(): number {
  const seen = new Set<string>();
  let due = KEEPER_TICK_MS;
  for (const seat of hostSeats()) {
    const name = seat.name, held = seat.state === 'held';
    if (held) {
      const until = seat.lingersUntil;
      if (until !== 0) {
        const now = performance.timeOrigin + performance.now();
        if (now >= until) seat.releaseIfIdle(now);
        else due = Math.min(due, until - now);
      }
      renewOuter(seat, false);
    }
    if (!held && !seat.waited) continue;
    seen.add(name);
    if (!watched.has(name)) {
      watched.set(name, backend.watch(storeKey(name), () => onChange(seat)));
      // A release between the escalator's attempt and this watch rang nothing: have it look again.
      seat.ring();
    }
  }
  for (const [name, unwatch] of watched) {
    if (seen.has(name)) continue;
    unwatch();
    watched.delete(name);
    checked.delete(name);
  }
  return due;
}

helper.set(HELPER_RUNNING);
for (;;) {
  const bell = helper.bell;
  const due = round();
  await helper.sleep(bell, Math.max(0, due));
}
