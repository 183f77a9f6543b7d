/**
 * Every error latchkey throws: one class per code, in one table of code,
 * base class, message and fields.
 *
 * As in Node core (`lib/internal/errors.js`), each error carries a stable
 * `code`; callers and tests branch on `code` (or `instanceof` the class),
 * never on message text. The message says what failed, then a colon and the
 * state that made it fail. What the message says is also on the error as
 * fields (`lockName`, `timeout`, `reason`, `backend` …), so that a caller
 * never parses a message:
 *
 *   err instanceof LockTimeoutError && err.lockName === 'build' && err.timeout === 5000
 *
 * Base classes keep their meaning: a wrong type is a TypeError, a value out
 * of range a RangeError, the rest an Error; `instanceof LatchkeyError` is
 * true of all of them. Inspected (console.log, util.inspect), an error reads
 * `LatchkeyError [ERR_LOCK_TIMEOUT]: …` (`TypeError [ERR_INVALID_ARG_TYPE]: …`
 * for the TypeErrors), as Node's own coded errors do, with its fields below.
 *
 * The lock named in an error: the thread tier labels a lock by its name
 * (JSON-quoted) or, for a lock taken by index, `#index`, sometimes followed
 * by ` (detail)`; the constructors take that label (every call site passes
 * one) and the error keeps the name or index as `lockName`, the detail as
 * `detail`.
 */
import { format } from 'node:util';
import type { LossReason } from './loss.js';

export type ErrorCode =
  | 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE'
  | 'ERR_LOCK_TIMEOUT' | 'ERR_LOCK_NOT_OWNER' | 'ERR_LOCK_NOT_LOCKED' | 'ERR_LOCK_DEADLOCK'
  | 'ERR_LOCK_TABLE_FULL' | 'ERR_LOCK_TABLE_INVALID' | 'ERR_LOCK_SLOT_IN_USE' | 'ERR_LOCK_NO_DEFAULT_TABLE'
  | 'ERR_LOCK_BARRIER_BROKEN' | 'ERR_LOCK_COMPROMISED' | 'ERR_LOCK_BACKEND'
  | 'ABORT_ERR';

/** Marks every latchkey error, whatever its base class (see LatchkeyError[Symbol.hasInstance]). */
const kLatchkey = Symbol('latchkey.error');

/**
 * Give `err` its code, its stack header `Name [CODE]: message` (Node's
 * form: the name is changed while V8 formats the stack, then put back),
 * and mark it as latchkey's.
 */
function brand(err: Error, code: ErrorCode, name: string): void {
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: true, configurable: true });
  Object.defineProperty(err, kLatchkey, { value: true });
  Object.defineProperty(err, 'name', { value: `${name} [${code}]`, enumerable: false, writable: true, configurable: true });
  void err.stack; // formats the header now, with the code in it
  Object.defineProperty(err, 'name', { value: name, enumerable: false, writable: true, configurable: true });
}

/**
 * The base of latchkey's errors. `instanceof LatchkeyError` is true of every
 * error latchkey throws with a code, including the TypeErrors and
 * RangeErrors (which cannot extend this class and stay what they are).
 */
export class LatchkeyError extends Error {
  declare readonly code: ErrorCode;

  /** @internal */
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    brand(this, code, 'LatchkeyError');
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    // Only LatchkeyError itself recognises the TypeError/RangeError family; its subclasses use the prototype chain.
    if (this === LatchkeyError) return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[kLatchkey] === true;
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }
}

/** A lock's name, or its index for a lock taken by index, and the detail after it, from a label (see the top of this file). */
function parseLabel(label: string): { lockName: string | number; detail: string | undefined } {
  let name: string | number | undefined, rest = '';
  if (label.startsWith('#')) {
    const m = /^#(\d+)/.exec(label);
    if (m !== null) [name, rest] = [Number(m[1]), label.slice(m[0].length)];
  } else if (label.startsWith('"')) {
    // The JSON string at the start: up to the first quote that no backslash escapes.
    const m = /^"(?:[^"\\]|\\.)*"/.exec(label);
    if (m !== null) {
      try {
        [name, rest] = [JSON.parse(m[0]) as string, label.slice(m[0].length)];
      } catch {
        // not JSON after all: the whole label is the name
      }
    }
  }
  if (name === undefined) return { lockName: label, detail: undefined };
  const detail = /^ \((.*)\)$/s.exec(rest)?.[1];
  return { lockName: name, detail };
}

// --- bad input ----------------------------------------------------------------

/** ERR_INVALID_ARG_TYPE: an argument or option of the wrong type (a TypeError). */
export class InvalidArgTypeError extends TypeError {
  declare readonly code: 'ERR_INVALID_ARG_TYPE';
  /** The argument or option, as `options.timeout`. */
  declare readonly argument: string;
  /** What it must be, in words. */
  declare readonly expected: string;
  /** What was given. */
  declare readonly actual: unknown;

  constructor(argument: string, expected: string, actual: unknown) {
    super(format('The "%s" argument must be %s: received %s', argument, expected, actual));
    brand(this, 'ERR_INVALID_ARG_TYPE', 'TypeError');
    this.argument = argument;
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * ERR_INVALID_ARG_TYPE as a plain TypeError (its constructor is TypeError
 * itself, not a subclass), with the same code and fields: where a Web API
 * requires one, as the Web Locks API's WebIDL conversion of `signal` does
 * (web-platform-tests check `err.constructor === TypeError`).
 */
export function plainTypeError(argument: string, expected: string, actual: unknown): TypeError & { code: 'ERR_INVALID_ARG_TYPE' } {
  const err = new TypeError(format('The "%s" argument must be %s: received %s', argument, expected, actual));
  brand(err, 'ERR_INVALID_ARG_TYPE', 'TypeError');
  Object.assign(err, { argument, expected, actual });
  return err as TypeError & { code: 'ERR_INVALID_ARG_TYPE' };
}

/** ERR_INVALID_ARG_VALUE: an argument or option of the right type but a value it cannot take (a TypeError, as in Node). */
export class InvalidArgValueError extends TypeError {
  declare readonly code: 'ERR_INVALID_ARG_VALUE';
  declare readonly argument: string;
  declare readonly value: unknown;
  /** Why the value is refused. */
  declare readonly reason: string;

  constructor(argument: string, value: unknown, reason: string) {
    super(format('The "%s" argument is invalid: received %O, %s', argument, value, reason));
    brand(this, 'ERR_INVALID_ARG_VALUE', 'TypeError');
    this.argument = argument;
    this.value = value;
    this.reason = reason;
  }
}

/** ERR_OUT_OF_RANGE: a number, or a name's length, out of its range (a RangeError). */
export class OutOfRangeError extends RangeError {
  declare readonly code: 'ERR_OUT_OF_RANGE';
  declare readonly argument: string;
  /** The range it must be in, in words. */
  declare readonly range: string;
  declare readonly value: unknown;

  constructor(argument: string, range: string, value: unknown) {
    super(format('The "%s" argument is out of range: it must be %s, received %O', argument, range, value));
    brand(this, 'ERR_OUT_OF_RANGE', 'RangeError');
    this.argument = argument;
    this.range = range;
    this.value = value;
  }
}

/** ERR_LOCK_TABLE_INVALID: a buffer that is not a lock table of this layout and size (a TypeError). */
export class LockTableInvalidError extends TypeError {
  declare readonly code: 'ERR_LOCK_TABLE_INVALID';
  declare readonly reason: string;

  constructor(reason: string) {
    super(format('Cannot attach lock table: %s', reason));
    brand(this, 'ERR_LOCK_TABLE_INVALID', 'TypeError');
    this.reason = reason;
  }
}

// --- locks --------------------------------------------------------------------

/** ERR_LOCK_TIMEOUT: a wait gave up after `timeout` ms. */
export class LockTimeoutError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_TIMEOUT';
  /** The lock's name, or its index for a lock taken by index. */
  readonly lockName: string | number;
  /** The timeout, ms. */
  readonly timeout: number;

  /** `label`: the lock's JSON-quoted name, or `#index`. */
  constructor(label: string, timeout: number) {
    super('ERR_LOCK_TIMEOUT', format('Cannot acquire lock %s: timed out after %d ms', label, timeout));
    this.lockName = parseLabel(label).lockName;
    this.timeout = timeout;
  }
}

/** ERR_LOCK_NOT_OWNER: an unlock (or release) by a thread that does not hold it. */
export class LockNotOwnerError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_NOT_OWNER';
  readonly lockName: string | number;
  /** The thread that holds it (the table's thread id). */
  readonly owner: number;
  /** The thread that tried (the table's thread id). */
  readonly thread: number;
  readonly detail: string | undefined;

  constructor(label: string, owner: number, thread: number) {
    super('ERR_LOCK_NOT_OWNER', format('Cannot unlock %s: it is held by thread %d, not by this thread (%d)', label, owner, thread));
    ({ lockName: this.lockName, detail: this.detail } = parseLabel(label));
    this.owner = owner;
    this.thread = thread;
  }
}

/** ERR_LOCK_NOT_LOCKED: an unlock of a lock that is not held (or a guard used twice). */
export class LockNotLockedError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_NOT_LOCKED';
  readonly lockName: string | number;
  /** What made it so, when known (`this guard already released it`). */
  readonly detail: string | undefined;

  constructor(label: string) {
    super('ERR_LOCK_NOT_LOCKED', format('Cannot unlock %s: it is not locked', label));
    ({ lockName: this.lockName, detail: this.detail } = parseLabel(label));
  }
}

/** ERR_LOCK_DEADLOCK: a wait that could never end (a cycle of waiting threads, or a thread waiting for itself). */
export class LockDeadlockError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_DEADLOCK';
  readonly lockName: string | number;
  /** The cycle, or why this thread would wait for itself. */
  readonly detail: string;

  constructor(label: string, detail: string) {
    super('ERR_LOCK_DEADLOCK', format('Cannot acquire lock %s: %s', label, detail));
    this.lockName = parseLabel(label).lockName;
    this.detail = detail;
  }
}

/** ERR_LOCK_TABLE_FULL: every entry of a table (slots, threads, requests) is taken. */
export class LockTableFullError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_TABLE_FULL';
  /** What could not be added, in words. */
  readonly what: string;
  readonly capacity: number;

  constructor(what: string, capacity: number) {
    super('ERR_LOCK_TABLE_FULL', format('Cannot add %s: all %d entries of the lock table are taken', what, capacity));
    this.what = what;
    this.capacity = capacity;
  }
}

/** ERR_LOCK_SLOT_IN_USE: a slot asked for as one kind of lock holds another. */
export class LockSlotInUseError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_SLOT_IN_USE';
  readonly what: string;
  /** The kind it was asked for as. */
  readonly as: string;
  readonly reason: string;

  constructor(what: string, as: string, reason: string) {
    super('ERR_LOCK_SLOT_IN_USE', format('Cannot use %s as %s: %s', what, as, reason));
    this.what = what;
    this.as = as;
    this.reason = reason;
  }
}

/** ERR_LOCK_NO_DEFAULT_TABLE: a worker started before latchkey was imported in the main thread. */
export class LockNoDefaultTableError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_NO_DEFAULT_TABLE';

  constructor() {
    super('ERR_LOCK_NO_DEFAULT_TABLE',
      'Cannot reach the default lock table: this worker started before latchkey was imported in the main thread');
  }
}

/** ERR_LOCK_BARRIER_BROKEN: a barrier whose generation cannot complete (a party died, timed out, or was aborted). */
export class LockBarrierBrokenError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_BARRIER_BROKEN';
  readonly lockName: string | number;
  readonly reason: string;

  constructor(label: string, reason: string) {
    super('ERR_LOCK_BARRIER_BROKEN', format('Cannot pass barrier %s: it is broken (%s)', label, reason));
    this.lockName = parseLabel(label).lockName;
    this.reason = reason;
  }
}

/**
 * ERR_LOCK_COMPROMISED: a lock lost while held (a host lease that ran out and
 * was taken, a lock store that changed under it, a cluster session lost).
 * `reason` says which. (A steal is the Web Locks API's AbortError instead.)
 */
export class LockCompromisedError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_COMPROMISED';
  readonly lockName: string | number;
  reason: LossReason;
  readonly detail: string;

  constructor(label: string, detail: string, reason: LossReason = 'expired') {
    super('ERR_LOCK_COMPROMISED', format('Lock %s was lost while held: %s', label, detail));
    this.lockName = parseLabel(label).lockName;
    this.detail = detail;
    this.reason = reason;
  }
}

/**
 * ERR_LOCK_BACKEND: a lock store that cannot be used (a lock directory,
 * database or server; a driver that is not installed). `cause` is the
 * underlying error when there is one (its `code`, e.g. 'ENOSPC', as `errno`).
 */
export class LockBackendError extends LatchkeyError {
  declare readonly code: 'ERR_LOCK_BACKEND';
  /** 'file', 'sqlite', 'postgres' …, or 'host' for the host tier as a whole. */
  readonly backend: string;
  readonly detail: string;
  /** The underlying system error's code (`ENOSPC`, `EROFS` …), when the cause has one. */
  readonly errno: string | undefined;

  constructor(backend: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_LOCK_BACKEND', format('Cannot use the %s lock backend: %s', backend, detail), options);
    this.backend = backend;
    this.detail = detail;
    const code = (options?.cause as { code?: unknown } | undefined)?.code;
    this.errno = typeof code === 'string' ? code : undefined;
  }
}

// The table by code, as every call site names them (Node's style: `new ERR_LOCK_TIMEOUT(label, ms)`).
export const ERR_INVALID_ARG_TYPE = InvalidArgTypeError;
export const ERR_INVALID_ARG_VALUE = InvalidArgValueError;
export const ERR_OUT_OF_RANGE = OutOfRangeError;
export const ERR_LOCK_TIMEOUT = LockTimeoutError;
export const ERR_LOCK_NOT_OWNER = LockNotOwnerError;
export const ERR_LOCK_NOT_LOCKED = LockNotLockedError;
export const ERR_LOCK_DEADLOCK = LockDeadlockError;
export const ERR_LOCK_TABLE_FULL = LockTableFullError;
export const ERR_LOCK_TABLE_INVALID = LockTableInvalidError;
export const ERR_LOCK_SLOT_IN_USE = LockSlotInUseError;
export const ERR_LOCK_BARRIER_BROKEN = LockBarrierBrokenError;
export const ERR_LOCK_COMPROMISED = LockCompromisedError;
export const ERR_LOCK_BACKEND = LockBackendError;
export const ERR_LOCK_NO_DEFAULT_TABLE = LockNoDefaultTableError;

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
