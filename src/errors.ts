/**
 * Every error latchkey throws, in one table of code, base class and message.
 *
 * As in Node core (`lib/internal/errors.js`), each error carries a stable
 * `code`; callers and tests branch on `code`, never on message text. The
 * message says what failed, then a colon and the state that made it fail.
 */
import { format } from 'node:util';

export interface LatchkeyError extends Error {
  readonly code: ErrorCode;
}

type Base = ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor;

function E<Args extends unknown[]>(code: string, template: string, base: Base) {
  return class extends (base as ErrorConstructor) {
    readonly code: string = code;
    constructor(...args: Args) {
      super(format(template, ...args));
      // `name` stays the base class's ('Error', 'TypeError' ...), as in Node.
      Object.defineProperty(this, 'name', { value: base.name, enumerable: false, writable: true, configurable: true });
    }
    get [Symbol.toStringTag]() {
      return `${base.name} [${code}]`;
    }
  };
}

export const ERR_INVALID_ARG_TYPE = E<[argument: string, expected: string, actual: unknown]>(
  'ERR_INVALID_ARG_TYPE', 'The "%s" argument must be %s: received %s', TypeError);
export const ERR_INVALID_ARG_VALUE = E<[argument: string, value: unknown, reason: string]>(
  'ERR_INVALID_ARG_VALUE', 'The "%s" argument is invalid: received %O, %s', TypeError);
export const ERR_OUT_OF_RANGE = E<[argument: string, range: string, value: unknown]>(
  'ERR_OUT_OF_RANGE', 'The "%s" argument is out of range: it must be %s, received %O', RangeError);

export const ERR_LOCK_TIMEOUT = E<[name: string, ms: number]>(
  'ERR_LOCK_TIMEOUT', 'Cannot acquire lock %s: timed out after %d ms', Error);
export const ERR_LOCK_NOT_OWNER = E<[name: string, owner: number, self: number]>(
  'ERR_LOCK_NOT_OWNER', 'Cannot unlock %s: it is held by thread %d, not by this thread (%d)', Error);
export const ERR_LOCK_NOT_LOCKED = E<[name: string]>(
  'ERR_LOCK_NOT_LOCKED', 'Cannot unlock %s: it is not locked', Error);
export const ERR_LOCK_DEADLOCK = E<[name: string, detail: string]>(
  'ERR_LOCK_DEADLOCK', 'Cannot acquire lock %s: %s', Error);
export const ERR_LOCK_TABLE_FULL = E<[what: string, capacity: number]>(
  'ERR_LOCK_TABLE_FULL', 'Cannot add %s: all %d entries of the lock table are taken', Error);
export const ERR_LOCK_TABLE_INVALID = E<[reason: string]>(
  'ERR_LOCK_TABLE_INVALID', 'Cannot attach lock table: %s', TypeError);
export const ERR_LOCK_SLOT_IN_USE = E<[what: string, as: string, reason: string]>(
  'ERR_LOCK_SLOT_IN_USE', 'Cannot use %s as %s: %s', Error);
export const ERR_LOCK_BARRIER_BROKEN = E<[name: string, reason: string]>(
  'ERR_LOCK_BARRIER_BROKEN', 'Cannot pass barrier %s: it is broken (%s)', Error);
export const ERR_LOCK_COMPROMISED = E<[name: string, detail: string]>(
  'ERR_LOCK_COMPROMISED', 'Lock %s was lost while held: %s', Error);
export const ERR_LOCK_BACKEND = E<[backend: string, detail: string]>(
  'ERR_LOCK_BACKEND', 'Cannot use the %s lock backend: %s', Error);
export const ERR_LOCK_NO_DEFAULT_TABLE = E<[]>(
  'ERR_LOCK_NO_DEFAULT_TABLE',
  'Cannot reach the default lock table: this worker started before latchkey was imported in the main thread',
  Error);

export type ErrorCode =
  | 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE'
  | 'ERR_LOCK_TIMEOUT' | 'ERR_LOCK_NOT_OWNER' | 'ERR_LOCK_NOT_LOCKED' | 'ERR_LOCK_DEADLOCK'
  | 'ERR_LOCK_TABLE_FULL' | 'ERR_LOCK_TABLE_INVALID' | 'ERR_LOCK_SLOT_IN_USE' | 'ERR_LOCK_NO_DEFAULT_TABLE'
  | 'ERR_LOCK_BARRIER_BROKEN' | 'ERR_LOCK_COMPROMISED' | 'ERR_LOCK_BACKEND'
  | 'ABORT_ERR';

/**
 * Cancellation, shaped like the DOMException Node's own APIs reject with:
 * `name` is 'AbortError', `code` is 'ABORT_ERR', `cause` is the signal's reason.
 */
export class AbortError extends Error {
  readonly code = 'ABORT_ERR' as const;
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AbortError';
  }
}

export function abortErrorFor(signal: AbortSignal): AbortError {
  return new AbortError('The operation was aborted', { cause: signal.reason });
}
