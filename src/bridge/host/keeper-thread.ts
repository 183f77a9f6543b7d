/**
 * The lease keeper, worker side (helper-threads.ts starts it). Every KEEPER_TICK_MS,
 * and whenever its doorbell rings, it goes through the host table:
 * - a name whose host lock this process holds: renew the lease once a third
 *   of it is gone (host.ts renewOuter), and watch the backend, so that a
 *   steal or a takeover is noticed at once, not at the next renewal;
 * - a name an escalator waits on: watch the backend and ring the name's
 *   outer bell on every change, so the escalator retries at once;
 * - a host lock that lingers (held, serving nobody: queue/word.ts
 *   LINGER_MS): give it back once it has lingered long enough.
 * Names nobody holds or waits on are unwatched.
 */
import { H_KEEPER, H_KEEPER_BELL, KEEPER_RUNNING } from '../../atomics/layout.js';
import { LockTable } from '../../atomics/table.js';
import { A_OUTER_IDLE, LINGER_MS, lingerDue, ringOuterBell } from '../../atomics/queue/word.js';
import type { RequestQueue } from '../../atomics/queue/queue.js';
import { hostBackend, hostQueues, hostTable, renewOuter } from './host.js';

/** How often the keeper looks, at the least: a lease is renewed when a third of it is gone, and the shortest is 250 ms. */
export const KEEPER_TICK_MS = 50;

const table = hostTable();
const words = LockTable.unsafeExposeInternals(table).core.words;
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

function onChange(q: RequestQueue): void {
  ringOuterBell(q.pool, q.slot);
  // Still ours? A steal or a takeover shows here before the next renewal.
  const now = performance.now(), name = q.name as string, last = checked.get(name) ?? -Infinity;
  if (now - last < CHECK_MS) {
    if (!later.has(name)) {
      later.add(name);
      setTimeout(() => {
        later.delete(name);
        if (watched.has(name)) onChange(q);
      }, last + CHECK_MS - now);
    }
    return;
  }
  checked.set(name, now);
  renewOuter(q, true);
}

/** One pass over the host table; returns ms until a lingering grant is due. */
function round(): number {
  const seen = new Set<string>();
  let due = KEEPER_TICK_MS;
  for (const { q, held, waited } of hostQueues()) {
    const name = q.name as string;
    if (held) {
      const idle = q.pool.f64[(q.anchor + A_OUTER_IDLE) >> 1];
      if (idle !== 0) {
        const now = performance.timeOrigin + performance.now();
        if (now - idle >= LINGER_MS) q.withLatch(() => ({ value: undefined, action: lingerDue(q.pool, q.anchor, q.tid, now) }));
        else due = Math.min(due, idle + LINGER_MS - now);
      }
      renewOuter(q, false);
    }
    if (!held && !waited) continue;
    seen.add(name);
    if (!watched.has(name)) {
      watched.set(name, backend.watch(name, () => onChange(q)));
      // A release between the escalator's attempt and this watch rang nothing: have it look again.
      ringOuterBell(q.pool, q.slot);
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

Atomics.store(words, H_KEEPER, KEEPER_RUNNING);
for (;;) {
  const bell = Atomics.load(words, H_KEEPER_BELL);
  const due = round();
  const r = Atomics.waitAsync(words, H_KEEPER_BELL, bell, Math.max(0, due));
  if (r.async) await r.value;
}
