/**
 * Sending latchkey handles to other threads.
 *
 * A handle (Mutex, RWLock, Semaphore, Condition, Barrier, Once, or a whole
 * LockTable) is a thread-local view of a slot in a SharedArrayBuffer. Its
 * methods and #private state do not survive structured cloning, so a
 * handle passed to postMessage as is arrives as a plain object of its
 * public fields (`{ slot, name }`), with no methods. What does survive is
 * the buffer itself: postMessage shares a SharedArrayBuffer (no copy, no
 * transfer list). So a handle travels as a small message naming its
 * table's buffer and its name (or slot index), and the receiver rebuilds a
 * live handle on the same slot: `LockTable.attach(buffer)` (the same LockTable object for the same
 * table, once per thread) and then `.mutex(name)` etc. Nothing is copied:
 * locking the received mutex excludes the sender.
 *
 * With plain postMessage:
 * ```ts
 * // main thread
 * const m = LockTable.default().mutex('jobs');
 * worker.postMessage({ task: 'run', lock: toMessage(m) });
 * // worker
 * parentPort.on('message', ({ lock }) => {
 *   const m = fromMessage(lock);          // a Mutex on the same slot
 *   m.withLockSync(() => { ... });
 * });
 * ```
 * A message may sit anywhere inside a larger message, and any number of
 * them may: `toMessage` returns plain data.
 *
 * With comlink, register the transfer handler once in each thread (main and
 * worker), and pass handles as arguments or return values:
 * ```ts
 * import * as Comlink from 'comlink';
 * // comlink's Node adapter: its UMD file exports the function itself, while
 * // its .d.ts declares a default export, so under NodeNext take it like this:
 * import nodeAdapter from 'comlink/dist/umd/node-adapter.js';
 * const nodeEndpoint = nodeAdapter as unknown as typeof nodeAdapter.default;
 *
 * registerComlink(Comlink);
 * const api = Comlink.wrap<Api>(nodeEndpoint(worker));
 * await api.work(table.mutex('jobs'));    // arrives as a live Mutex
 * ```
 * comlink runs transfer handlers on top-level arguments and return values
 * only: a handle nested in an object crosses as a plain object. Nest
 * `toMessage(handle)` instead, and call `fromMessage` on the other side.
 */
import type { TransferListItem } from 'node:worker_threads';
import { LockTable } from '../atomics/table.js';
import { Mutex } from '../atomics/mutex.js';
import { RWLock } from '../atomics/rwlock.js';
import { Semaphore } from '../atomics/semaphore.js';
import { Condition } from '../atomics/condition.js';
import { Barrier } from '../atomics/barrier.js';
import { Once } from '../atomics/once.js';
import { ERR_INVALID_ARG_VALUE } from '../errors.js';

/** Every kind of handle that can cross threads, by the `kind` of its message. */
export interface TransferableHandles {
  table: LockTable;
  mutex: Mutex;
  rwlock: RWLock;
  semaphore: Semaphore;
  condition: Condition;
  barrier: Barrier;
  once: Once;
}

export type HandleKind = keyof TransferableHandles;
export type TransferableHandle = TransferableHandles[HandleKind];

/** The kind of a handle type (a union maps to a union). */
export type KindOf<H extends TransferableHandle> =
  H extends LockTable ? 'table'
    : H extends Mutex ? 'mutex'
      : H extends RWLock ? 'rwlock'
        : H extends Semaphore ? 'semaphore'
          : H extends Condition ? 'condition'
            : H extends Barrier ? 'barrier'
              : H extends Once ? 'once'
                : never;

/**
 * A handle as plain, structured-cloneable data. `latchkey` is the message
 * format's version. `name` is the handle's name, or its slot index when it
 * was reached by index; null for a table. `aux` is a semaphore's permits or
 * a barrier's parties, absent for the other kinds.
 */
export interface HandleMessage<K extends HandleKind = HandleKind> {
  readonly latchkey: 1;
  readonly kind: K;
  readonly buffer: SharedArrayBuffer;
  readonly name: K extends 'table' ? null : string | number;
  readonly aux?: number;
}

const kVersion = 1 as const;
const kKinds: ReadonlySet<string> = new Set<HandleKind>(['table', 'mutex', 'rwlock', 'semaphore', 'condition', 'barrier', 'once']);

function kindOf(handle: unknown): HandleKind | undefined {
  if (handle instanceof Mutex) return 'mutex';
  if (handle instanceof LockTable) return 'table';
  if (handle instanceof RWLock) return 'rwlock';
  if (handle instanceof Semaphore) return 'semaphore';
  if (handle instanceof Condition) return 'condition';
  if (handle instanceof Barrier) return 'barrier';
  if (handle instanceof Once) return 'once';
  return undefined;
}

/** Whether `value` is a handle that toMessage() accepts. */
export function isTransferableHandle(value: unknown): value is TransferableHandle {
  return kindOf(value) !== undefined;
}

/**
 * The message that rebuilds `handle` in another thread (see fromMessage).
 * Throws ERR_INVALID_ARG_VALUE for anything that is not a latchkey handle.
 */
export function toMessage<H extends TransferableHandle>(handle: H): HandleMessage<KindOf<H>>;
export function toMessage(handle: TransferableHandle): HandleMessage {
  const kind = kindOf(handle);
  if (kind === undefined) {
    throw new ERR_INVALID_ARG_VALUE('handle', handle, 'it must be a LockTable, Mutex, RWLock, Semaphore, Condition, Barrier or Once');
  }
  if (kind === 'table') return { latchkey: kVersion, kind, buffer: (handle as LockTable).buffer, name: null };
  const h = handle as Exclude<TransferableHandle, LockTable>;
  const message = { latchkey: kVersion, kind, buffer: h.table.buffer, name: h.name };
  if (h instanceof Semaphore) return { ...message, aux: h.permits };
  if (h instanceof Barrier) return { ...message, aux: h.parties };
  return message;
}

const notOurs = (msg: unknown, why: string) => new ERR_INVALID_ARG_VALUE('message', msg, `it is not a latchkey handle message (${why})`);

/** Whether `value` looks like a message of toMessage() (its shape only; fromMessage checks the rest). */
export function isHandleMessage(value: unknown): value is HandleMessage {
  return typeof value === 'object' && value !== null && (value as { latchkey?: unknown }).latchkey === kVersion
    && kKinds.has((value as { kind?: unknown }).kind as string);
}

/**
 * The live handle a toMessage() message names, in this thread: on the same
 * slot of the same table as the sender's. Checks the message's shape before
 * touching shared memory: anything that is not such a message throws a
 * TypeError with code ERR_INVALID_ARG_VALUE; a buffer that is not a lock
 * table throws ERR_LOCK_TABLE_INVALID (LockTable.attach), and a name, index,
 * permit or party count that does not fit the table throws as the table's
 * own methods do.
 */
export function fromMessage<K extends HandleKind>(msg: HandleMessage<K>): TransferableHandles[K];
export function fromMessage(msg: unknown): TransferableHandle;
export function fromMessage(msg: unknown): TransferableHandle {
  if (typeof msg !== 'object' || msg === null) throw notOurs(msg, 'not an object');
  const { latchkey, kind, buffer, name, aux } = msg as Record<string, unknown>;
  if (latchkey !== kVersion) throw notOurs(msg, `its "latchkey" field is ${String(latchkey)}, expected ${kVersion}`);
  if (typeof kind !== 'string' || !kKinds.has(kind)) throw notOurs(msg, `unknown kind ${JSON.stringify(kind)}`);
  if (!(buffer instanceof SharedArrayBuffer)) throw notOurs(msg, 'its "buffer" is not a SharedArrayBuffer');
  if (kind === 'table') {
    if (name !== null && name !== undefined) throw notOurs(msg, 'a table message has no name');
    return LockTable.attach(buffer);
  }
  if (typeof name !== 'string' && !(Number.isInteger(name) && (name as number) >= 0)) {
    throw notOurs(msg, 'its "name" is not a string or a slot index');
  }
  const counted = kind === 'semaphore' || kind === 'barrier';
  if (counted ? !(Number.isInteger(aux) && (aux as number) >= 1) : aux !== undefined) {
    throw notOurs(msg, counted ? `a ${kind} message needs a positive integer "aux"` : `a ${kind} message has no "aux"`);
  }
  const key = name as string | number, table = LockTable.attach(buffer);
  switch (kind) {
    case 'mutex': return table.mutex(key);
    case 'rwlock': return table.rwlock(key);
    case 'semaphore': return table.semaphore(key, aux as number);
    case 'condition': return table.condition(key);
    case 'barrier': return table.barrier(key, aux as number);
    case 'once': return table.once(key);
    default: throw new Error(`unreachable: kind ${kind}`);
  }
}

/**
 * comlink's TransferHandler shape (comlink's `TransferHandler<T, S>`),
 * written out so that this module needs nothing of comlink at run time.
 */
export interface ComlinkTransferHandler<T, S> {
  canHandle(value: unknown): value is T;
  serialize(value: T): [S, TransferListItem[]];
  deserialize(value: S): T;
}

/**
 * The comlink transfer handler for latchkey handles: register it under any
 * name in comlink's `transferHandlers` in every thread that sends or
 * receives handles (registerComlink does it). No transfer list: the buffer
 * is shared, not moved.
 */
export const latchkeyTransferHandler: ComlinkTransferHandler<TransferableHandle, HandleMessage> = Object.freeze({
  canHandle: isTransferableHandle,
  serialize: (handle: TransferableHandle): [HandleMessage, TransferListItem[]] => [toMessage(handle), []],
  deserialize: (msg: HandleMessage): TransferableHandle => fromMessage(msg),
});

/** The part of comlink's module that registerComlink uses. */
export interface ComlinkLike {
  readonly transferHandlers: Map<string, ComlinkTransferHandler<unknown, unknown>>;
}

/**
 * Register latchkeyTransferHandler (as 'latchkey') with `comlink`, the
 * module namespace your code imports (`import * as Comlink from 'comlink'`).
 * Call it in every thread that sends or receives handles.
 *
 * comlink is taken as an argument rather than imported here because
 * comlink keeps its handlers in a module-level Map, and one program can
 * load comlink twice: Node resolves `'comlink'` to its UMD build, bundlers
 * and deep imports to `comlink/dist/esm/comlink.mjs`, and each build has
 * its own Map. Registering into latchkey's own import of comlink could fill
 * a Map that your `wrap()`/`expose()` never reads; the namespace you pass
 * is the one they use.
 */
export function registerComlink(comlink: ComlinkLike): void {
  if (typeof comlink !== 'object' || comlink === null || !(comlink.transferHandlers instanceof Map)) {
    throw new ERR_INVALID_ARG_VALUE('comlink', comlink, 'it must be the comlink module (with a transferHandlers Map)');
  }
  comlink.transferHandlers.set('latchkey', latchkeyTransferHandler as ComlinkTransferHandler<unknown, unknown>);
}
