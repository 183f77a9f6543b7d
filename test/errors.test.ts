// Errors: exported classes (instanceof), their data as fields, the base
// classes kept (TypeError / RangeError), and how an inspected error reads.
// Each error here is thrown by the library itself, not constructed by hand.
import { inspect } from 'node:util';
import { describe, expect, test } from 'vitest';
import {
  InvalidArgTypeError, LatchkeyError, LockBackendError, LockDeadlockError, LockNotLockedError, LockTable, LockTableFullError,
  LockTableInvalidError, LockTimeoutError, OutOfRangeError, locks,
} from '../src/index.js';

function caught(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a throw');
}

/** The first line of util.inspect: the stack header. */
const header = (err: unknown) => inspect(err).split('\n')[0];

describe('latchkey errors', () => {
  test('an acquire() that times out: LockTimeoutError with lockName and timeout; inspected as LatchkeyError [ERR_LOCK_TIMEOUT]', async () => {
    const table = LockTable.create({ slots: 8 });
    // A semaphore of one permit, taken: an async acquire by this thread waits (a blocking one would be a deadlock).
    const s = table.semaphore('permits', 1);
    const g = s.acquireSync(1);
    const err = await s.acquire(1, { timeout: 5 }).catch((e: unknown) => e as Error);
    g.release();
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect(err).toBeInstanceOf(LatchkeyError);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ code: 'ERR_LOCK_TIMEOUT', name: 'LatchkeyError', lockName: 'permits', timeout: 5 });
    expect(header(err)).toBe('LatchkeyError [ERR_LOCK_TIMEOUT]: Cannot acquire lock "permits": timed out after 5 ms');
    expect(inspect(err)).toMatch(/lockName: 'permits',\n\s+timeout: 5\n/);
    expect(String(err)).toBe('LatchkeyError: Cannot acquire lock "permits": timed out after 5 ms');
  });

  test('a front-door request that times out: LockTimeoutError naming the lock', async () => {
    const name = `errors-timeout-${process.pid}`;
    const g = await locks.lock(name);
    const err = await locks.request(name, { timeout: 10 }, () => 'never').catch((e: unknown) => e);
    g.unlock();
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect(err).toMatchObject({ code: 'ERR_LOCK_TIMEOUT', lockName: name, timeout: 10 });
  });

  test('bad input keeps its base class: TypeError and RangeError, with argument and value', () => {
    const table = LockTable.create({ slots: 8 });
    const type = caught(() => table.mutex('x').lockSync({ timeout: '10' as never }));
    expect(type).toBeInstanceOf(TypeError);
    expect(type).toBeInstanceOf(InvalidArgTypeError);
    expect(type).toBeInstanceOf(LatchkeyError);
    expect(type).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError', argument: 'options.timeout', actual: '10' });
    expect(header(type)).toMatch(/^TypeError \[ERR_INVALID_ARG_TYPE\]: The "options.timeout" argument must be/);

    const range = caught(() => table.mutex('x').lockSync({ timeout: -1 }));
    expect(range).toBeInstanceOf(RangeError);
    expect(range).toBeInstanceOf(OutOfRangeError);
    expect(range).toBeInstanceOf(LatchkeyError);
    expect(range).toMatchObject({ code: 'ERR_OUT_OF_RANGE', name: 'RangeError', argument: 'options.timeout', value: -1 });
    expect(header(range)).toMatch(/^RangeError \[ERR_OUT_OF_RANGE\]: /);

    const invalid = caught(() => LockTable.attach(new SharedArrayBuffer(64)));
    expect(invalid).toBeInstanceOf(TypeError);
    expect(invalid).toBeInstanceOf(LockTableInvalidError);
    expect(invalid).toMatchObject({ code: 'ERR_LOCK_TABLE_INVALID' });
    expect(typeof (invalid as LockTableInvalidError).reason).toBe('string');
  });

  test('instanceof tells the classes apart; other errors are not LatchkeyErrors', () => {
    const table = LockTable.create({ slots: 8 });
    const err = caught(() => table.mutex('x').lockSync({ timeout: -1 }));
    expect(err).not.toBeInstanceOf(InvalidArgTypeError);
    expect(err).not.toBeInstanceOf(LockTimeoutError);
    expect(new Error('x')).not.toBeInstanceOf(LatchkeyError);
    expect(new TypeError('x')).not.toBeInstanceOf(LatchkeyError);
    expect(null).not.toBeInstanceOf(LatchkeyError);
  });

  test('unlock twice: LockNotLockedError with lockName and the detail', () => {
    const table = LockTable.create({ slots: 8 });
    const g = table.mutex('twice').lockSync();
    g.unlock();
    const err = caught(() => g.unlock());
    expect(err).toBeInstanceOf(LockNotLockedError);
    expect(err).toMatchObject({ code: 'ERR_LOCK_NOT_LOCKED', lockName: 'twice', detail: 'this guard already released it' });
    const byIndex = table.mutex(5).lockSync();
    byIndex.unlock();
    expect(caught(() => byIndex.unlock())).toMatchObject({ code: 'ERR_LOCK_NOT_LOCKED', lockName: 5 });
  });

  test('a thread that waits for its own lock: LockDeadlockError with lockName and detail', () => {
    const table = LockTable.create({ slots: 8 });
    const g = table.mutex('self').lockSync();
    const err = caught(() => table.mutex('self').lockSync());
    g.unlock();
    expect(err).toBeInstanceOf(LockDeadlockError);
    expect(err).toMatchObject({ code: 'ERR_LOCK_DEADLOCK', lockName: 'self', detail: 'this thread already holds it' });
  });

  test('a full table: LockTableFullError with its capacity', () => {
    const table = LockTable.create({ slots: 2 });
    table.mutex('a');
    table.mutex('b');
    const err = caught(() => table.mutex('c'));
    expect(err).toBeInstanceOf(LockTableFullError);
    expect(err).toMatchObject({ code: 'ERR_LOCK_TABLE_FULL', capacity: 2 });
  });

  test('a backend that cannot be used: LockBackendError with backend, detail and the cause\'s errno', async () => {
    const err = new LockBackendError('file', 'cannot write', { cause: Object.assign(new Error('no space'), { code: 'ENOSPC' }) });
    expect(err).toMatchObject({ code: 'ERR_LOCK_BACKEND', backend: 'file', detail: 'cannot write', errno: 'ENOSPC' });
    expect(header(err)).toBe('LatchkeyError [ERR_LOCK_BACKEND]: Cannot use the file lock backend: cannot write');
    // And one the library throws: an unknown backend kind.
    const { spawnSync } = await import('node:child_process');
    const script = `import('${new URL('../dist/src/index.js', import.meta.url).href}').then(async ({ locks, LockBackendError }) => {
      const err = await locks.request('x', { scope: 'host' }, () => {}).catch((e) => e);
      console.log(JSON.stringify({ isClass: err instanceof LockBackendError, code: err.code, backend: err.backend }));
    })`;
    const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, LATCHKEY_BACKEND: 'carrier-pigeon' }, encoding: 'utf8' });
    expect(JSON.parse(r.stdout)).toEqual({ isClass: true, code: 'ERR_LOCK_BACKEND', backend: 'carrier-pigeon' });
  });
});
