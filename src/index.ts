/**
 * latchkey: locks that are correct across the worker threads of a process.
 * This file is the public surface; everything else is internal.
 */
export { LockTable } from './atomics/table.js';
export { Mutex, MutexGuard } from './atomics/mutex.js';
export { AbortError } from './errors.js';
export type { LockTableOptions, LockStats } from './atomics/table.js';
export type { LockOptions } from './atomics/options.js';
export type { ErrorCode, LatchkeyError } from './errors.js';
