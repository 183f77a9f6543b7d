/**
 * Option parsing for every acquire. Runs before any shared word is touched:
 * bad input throws (or, from an async API, rejects) with a stable code and
 * leaves the table as it was.
 */
import { ERR_INVALID_ARG_TYPE, ERR_OUT_OF_RANGE, abortErrorFor } from '../errors.js';

export interface LockOptions {
  /**
   * How long to wait, in milliseconds, before giving up with
   * `ERR_LOCK_TIMEOUT`. `0` tries once and fails at once if the lock is held.
   * Fractions are honoured to the resolution of the platform's clock.
   * @default Infinity
   */
  timeout?: number;
  /**
   * Cancels the wait. An already-aborted signal fails before the lock is
   * touched; an abort while an async acquire waits rejects it at once with an
   * `AbortError` (its `cause` is the signal's reason) and leaves nothing
   * behind in the slot. A blocking `…Sync` call checks the signal before it
   * waits: a blocked thread cannot run the code that would abort it.
   * @default undefined
   */
  signal?: AbortSignal;
}

/** A validated acquire: an absolute deadline on the performance.now() clock. */
export interface Wait {
  readonly deadline: number;
  readonly timeout: number;
  readonly signal: AbortSignal | undefined;
}

export const kNoWait: Wait = Object.freeze({ deadline: Infinity, timeout: Infinity, signal: undefined });

export function parseLockOptions(options: LockOptions | undefined): Wait {
  if (options === undefined) return kNoWait;
  if (options === null || typeof options !== 'object') {
    throw new ERR_INVALID_ARG_TYPE('options', 'an object', options);
  }
  const { timeout = Infinity, signal } = options;
  if (typeof timeout !== 'number') throw new ERR_INVALID_ARG_TYPE('options.timeout', 'a number', timeout);
  if (!(timeout >= 0)) throw new ERR_OUT_OF_RANGE('options.timeout', '>= 0', timeout);
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new ERR_INVALID_ARG_TYPE('options.signal', 'an AbortSignal', signal);
  }
  if (signal?.aborted) throw abortErrorFor(signal);
  return { deadline: performance.now() + timeout, timeout, signal };
}

export function checkName(name: unknown, argument = 'name'): asserts name is string {
  if (typeof name !== 'string') throw new ERR_INVALID_ARG_TYPE(argument, 'a string', name);
}

export function checkInteger(value: unknown, argument: string, min: number, max: number): asserts value is number {
  if (typeof value !== 'number') throw new ERR_INVALID_ARG_TYPE(argument, 'a number', value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ERR_OUT_OF_RANGE(argument, `an integer from ${min} to ${max}`, value);
  }
}
