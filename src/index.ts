/// <reference types="node" preserve="true" />
/**
 * latchkey: locks that are correct across the worker threads of a process
 * and across the processes of a machine.
 * This file is the public surface; everything else is internal. What
 * importing it does is listed, in order, in process.ts (then
 * process-cluster.ts and process-default.ts). Its declarations use Node's
 * types (AbortSignal, Worker …): the reference above makes a
 * TypeScript consumer load @types/node (the package lists it as an
 * optional peer) whatever its tsconfig's `types` says.
 */
import './process.js';
import './process-cluster.js';
import './process-default.js';
export { LockTable } from './atomics/table.js';
export { Mutex, MutexGuard } from './atomics/mutex.js';
export { RWLock, RWLockReadGuard, RWLockWriteGuard } from './atomics/rwlock.js';
export { Semaphore, SemaphoreGuard } from './atomics/semaphore.js';
export { Condition } from './atomics/condition.js';
export { Barrier } from './atomics/barrier.js';
export { Once } from './atomics/once.js';
export {
  AbortError, LatchkeyError, InvalidArgTypeError, InvalidArgValueError, OutOfRangeError, LockTimeoutError, LockNotOwnerError,
  LockNotLockedError, LockDeadlockError, LockTableFullError, LockTableInvalidError, LockSlotInUseError, LockNoDefaultTableError,
  LockBarrierBrokenError, LockCompromisedError, LockBackendError,
} from './errors.js';
export { locks } from './locks.js';
export { Lock, LockGuard } from './lock-guard.js';
export type { LockRequestOptions, LockInfo, LockManagerSnapshot, IfAvailable, Waits } from './locks.js';
export type {
  LockEventBase, AcquireEvent, ReleaseEvent, ContentionEvent, TimeoutEvent, AbortEvent, StealEvent, LostEvent, HostEvent, RequestContext,
} from './observe.js';
export type { LockMode, LockScope, LossReason } from './lock-guard.js';
export type { OnceRun } from './atomics/once.js';
export type { LockTableOptions, LockStats } from './atomics/table.js';
export type { LockOptions } from './atomics/options.js';
export type { ErrorCode } from './errors.js';
export { GuardedCache } from './workers/cache.js';
export { toMessage, fromMessage, isHandleMessage, isTransferableHandle, latchkeyTransferHandler, registerComlink } from './workers/transfer.js';
export type { GuardedCacheOptions } from './workers/cache.js';
export type {
  HandleKind, HandleMessage, TransferableHandle, TransferableHandles, KindOf, ComlinkTransferHandler, ComlinkLike,
} from './workers/transfer.js';
