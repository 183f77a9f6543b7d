/**
 * Waiting: the bounded spin, the blocking wait and the async wait that every
 * primitive's slow path shares.
 */

/**
 * How many times a blocking acquirer re-reads a held lock before it parks.
 * On 2 cores a short critical section in another thread often ends within a
 * few hundred nanoseconds, far sooner than a park/unpark round trip (~30 µs).
 * Measured in bench/: see bench/README.md.
 */
export const SPIN_LIMIT = 64;

/** A bounded spin, as parking_lot's SpinWait: `spin()` answers "park now?" with false. */
export class SpinWait {
  #rounds = 0;
  spin(): boolean {
    if (this.#rounds >= SPIN_LIMIT) return false;
    this.#rounds++;
    return true;
  }
  reset(): void {
    this.#rounds = 0;
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
