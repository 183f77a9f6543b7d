/**
 * Waiting: the bounded spin, the blocking wait and the async wait that every
 * primitive's slow path shares, and the wait counters they feed.
 */
import { F_CONTENDED, F_WAIT_MAX_NS, F_WAIT_TOTAL_NS } from './layout.js';

/**
 * Rounds of exponential backoff a blocking acquirer spends before it parks:
 * round n busy-waits about 2^n loop iterations, then re-reads the lock word
 * once. Reading in a tight loop would pull the word's cache line away from
 * the holder on every read and slow down the very unlock it waits for; the
 * backoff reads it SPIN_ROUNDS times over about 2 µs (a short critical
 * section on the other core ends well within that, a park/unpark round trip
 * costs 30-100 µs here). Figures in bench/README.md.
 */
export const SPIN_ROUNDS = 10;

let sink = 0;

/** Busy-wait about `iterations` loop turns without touching shared memory (JS has no pause instruction). */
export function relax(iterations: number): void {
  for (let i = iterations; i > 0; i--) sink = (sink + i) | 0;
}

/** A bounded spin, as parking_lot's SpinWait: `spin()` backs off once, or answers "park now" with false. */
export class SpinWait {
  #round = 0;
  spin(): boolean {
    if (this.#round >= SPIN_ROUNDS) return false;
    relax(1 << this.#round++);
    return true;
  }
}

/**
 * Watch `w[i]` until it no longer reads `value` (true) or the clock passes
 * `until` (false), re-reading it about every 100 ns: not in a tight loop,
 * which would pull the word's cache line away from the thread about to
 * change it.
 */
export function watch(w: Int32Array, i: number, value: number, until: number): boolean {
  for (;;) {
    for (let n = 0; n < 16; n++) {
      if (Atomics.load(w, i) !== value) return true;
      relax(64);
    }
    if (performance.now() >= until) return false;
  }
}

/** Milliseconds left before `deadline`, as Atomics.wait wants them (Infinity waits forever). */
export function remaining(deadline: number): number {
  return deadline === Infinity ? Infinity : Math.max(0, deadline - performance.now());
}

// A pending Atomics.waitAsync does not keep the event loop alive: a thread
// whose only work is waiting for a lock would exit with code 0. One ref'd
// interval is held while any async wait of this thread is pending.
let pendingAsync = 0;
let keepAlive: NodeJS.Timeout | undefined;

function hold(): void {
  if (pendingAsync++ === 0) {
    if (keepAlive === undefined) keepAlive = setInterval(() => {}, 0x7fffffff);
    else keepAlive.ref();
  }
}

function release(): void {
  // unref, not clear: the next async wait re-refs it without allocating.
  if (--pendingAsync === 0) keepAlive!.unref();
}

/**
 * Atomics.waitAsync with the thread kept alive, woken early when `signal`
 * aborts. Resolves 'ok', 'not-equal' or 'timed-out'; the caller re-checks
 * its state word in every case.
 *
 * An aborted waitAsync cannot be withdrawn from V8's waiter list: left
 * there, it could swallow the one wake-up a notify(1) meant for a live
 * waiter. So on abort every waiter on the address is woken; the others find
 * the state unchanged and wait again, and no zombie stays behind.
 */
export async function waitAsyncUntil(
  words: Int32Array, index: number, value: number, deadline: number, signal: AbortSignal | undefined,
): Promise<'ok' | 'not-equal' | 'timed-out'> {
  const result = Atomics.waitAsync(words, index, value, remaining(deadline));
  if (!result.async) return result.value;
  const onAbort = () => Atomics.notify(words, index);
  signal?.addEventListener('abort', onAbort, { once: true });
  hold();
  try {
    return await result.value;
  } finally {
    release();
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * The wait counters of the slot whose first word is `base` (layout.ts:
 * F_CONTENDED, F_WAIT_TOTAL_NS, F_WAIT_MAX_NS), after an acquisition that
 * could not go on at once. `ns` is how long it waited, 0 for a wait won by
 * spinning (under ~2 µs: a clock read would cost more than the wait, so it
 * adds no time). `contended` is how many acquisitions to count: 1, or 0 for
 * time alone (a barrier's completer counts its waiters for them).
 *
 * Plain float64 stores: exact when the writer holds the lock alone (mutex,
 * rwlock writer, request queue under its latch), approximate where several
 * threads finish waiting at once (read shares, permits, barrier and
 * condition waiters, once callers); an atomic float64 would cost every
 * path more than the counts are worth.
 */
export function recordWait(f64: Float64Array, base: number, ns: number, contended = 1): void {
  // Not even `+= 0` for time alone: a read-modify-write of the count could
  // undo another thread's exact one (a barrier's completer counts for all).
  if (contended !== 0) f64[(base + F_CONTENDED) >> 1] += contended;
  if (!(ns > 0)) return;
  f64[(base + F_WAIT_TOTAL_NS) >> 1] += ns;
  if (ns > f64[(base + F_WAIT_MAX_NS) >> 1]) f64[(base + F_WAIT_MAX_NS) >> 1] = ns;
}
