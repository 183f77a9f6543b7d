// What the front door's test files share: unique names, deferred promises,
// a held lock to queue behind, and looks at the queue.
import { locks } from '../src/index.js';
import type { Lock, LockRequestOptions } from '../src/index.js';

/** Names no other test of the file uses (the lock manager is process-wide). */
export function namer(prefix: string): (tag?: string) => string {
  let unique = 0;
  return (tag = 'n') => `${prefix}:${tag}:${++unique}`;
}

export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (reason: unknown) => void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void, reject!: (reason: unknown) => void;
  const promise = new Promise<T>((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}

/** Let queued work run: several turns of the event loop, no timers. */
export async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

/**
 * Hold `name` until release(v) is called; resolves once the callback runs.
 * `done` is the request()'s own promise, `settled` the same, recorded in
 * outcome() (a rejection is never unhandled); `events` gets 'callback-end'
 * when the callback returns.
 */
export async function hold(name: string, options: LockRequestOptions = {}) {
  const granted = deferred<Lock | null>(), until = deferred<unknown>();
  const events: string[] = [];
  const done = locks.request(name, options, async (lock) => {
    granted.resolve(lock);
    const v = await until.promise;
    events.push('callback-end');
    return v;
  });
  let outcome: unknown = 'pending';
  const settled = done.then((v) => (outcome = { value: v }), (e: unknown) => (outcome = { error: e }));
  const lock = await granted.promise;
  return { lock, done, settled, events, outcome: () => outcome, release: (v?: unknown) => until.resolve(v) };
}

/** Whether `name` could be taken right now in `mode` (an ifAvailable request). */
export const available = (name: string, mode: 'exclusive' | 'shared' = 'exclusive') =>
  locks.request(name, { mode, ifAvailable: true }, (lock) => lock !== null);

export const pendingOf = async (name: string) => (await locks.query()).pending.filter((l) => l.name === name);
