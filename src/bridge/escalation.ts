/**
 * The escalator's loop, written once for both tiers and both drivers: an
 * escalation (the host tier's attempts, the cluster tier's request to its
 * agent) answers each step with an outcome or with the bell value and the
 * deadline to sleep on; the blocking driver sleeps with Atomics.wait, the
 * async one without blocking the event loop, and hands an abort to the
 * escalation, which ends or cancels.
 */
import type { OuterOutcome, OuterSeat } from '../atomics/queue/outer.js';
import { abortErrorFor } from '../errors.js';

export interface Escalating {
  /** One look: an outcome, or where to sleep until something changes. */
  step(): OuterOutcome | { bell: number; until: number };
  /** The request was aborted: an outcome to end with, or undefined to go on (a cancel on its way). */
  abort(reason: unknown): OuterOutcome | undefined;
}

export function escalateSync(seat: OuterSeat, e: Escalating): OuterOutcome {
  for (;;) {
    const s = e.step();
    if (!('bell' in s)) return s;
    seat.sleep(s.bell, s.until);
  }
}

export async function escalate(seat: OuterSeat, e: Escalating, signal: AbortSignal | undefined): Promise<OuterOutcome> {
  let aborted = false;
  for (;;) {
    // The answer first: a grant that came with the abort is taken, and the front door gives it back.
    const s = e.step();
    if (!('bell' in s)) return s;
    if (signal?.aborted && !aborted) {
      aborted = true;
      const end = e.abort(abortErrorFor(signal));
      if (end !== undefined) return end;
      continue;
    }
    await seat.sleepAsync(s.bell, s.until, aborted ? undefined : signal);
  }
}
