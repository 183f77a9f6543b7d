/**
 * latchkey: locks that are correct across the worker threads of a process.
 * This file is the public surface; everything else is internal.
 */
export { LockTable } from './atomics/table.js';
export { Mutex, MutexGuard } from './atomics/mutex.js';
export { RWLock, RWLockReadGuard, RWLockWriteGuard } from './atomics/rwlock.js';
export { Semaphore, SemaphoreGuard } from './atomics/semaphore.js';
export { Condition } from './atomics/condition.js';
export { Barrier } from './atomics/barrier.js';
export { Once } from './atomics/once.js';
export { AbortError } from './errors.js';
export type { OnceRun } from './atomics/once.js';
export type { LockTableOptions, LockStats } from './atomics/table.js';
export type { LockOptions } from './atomics/options.js';
export type { ErrorCode, LatchkeyError } from './errors.js';
