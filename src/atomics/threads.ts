/**
 * The thread registry and owner-death recovery.
 *
 * Every thread that touches a table claims one registry entry; its index + 1
 * is the small id (`tid`) written into the state words it holds. A thread
 * that dies holding locks is found two ways, whichever comes first:
 * - its own `process.on('exit')` (a worker that returns, throws or calls
 *   process.exit), which runs on the dying thread;
 * - the 'exit' event of its Worker object in the thread that started it
 *   (`worker.terminate()` runs no code in the worker). latchkey listens for
 *   `process.on('worker')` in every thread that imported it, so this covers
 *   workers started by code that never heard of latchkey.
 * A worker terminated by a parent thread that never imported latchkey, or
 * whose parent is itself blocked in a synchronous wait, is recovered only
 * when that parent's event loop runs.
 *
 * Recovery marks the entry T_RECOVERING (one CAS, so two recoverers never
 * both run), releases every slot the thread held or was heir to, marking
 * them abandoned, and only then frees the entry: a tid is never reused while
 * a state word still names it.
 */
import { debuglog } from 'node:util';
import { isMainThread, threadId, type Worker } from 'node:worker_threads';
import type { TableCore } from './core.js';
import {
  KIND_MASK, KIND_MUTEX, KIND_SHIFT, S_USE, T_LIVE, T_RECOVERING, T_WAIT_SLOT, slotBase, threadBase,
} from './layout.js';
import { recoverMutex } from './mutex-word.js';
import { ERR_LOCK_TABLE_FULL } from '../errors.js';

const debug = debuglog('latchkey');

/** Node threadIds start at 0 (the main thread); entries store id + 1 so 0 means free. */
const liveMark = (nodeThreadId: number) => nodeThreadId + 1;

/** Claim a registry entry for this thread. */
export function claimThread(words: Int32Array, threads: number): number {
  const mark = liveMark(threadId);
  for (let n = 0; n < threads; n++) {
    const tid = ((threadId + n) % threads) + 1;
    if (Atomics.compareExchange(words, threadBase(tid) + T_LIVE, 0, mark) === 0) return tid;
  }
  throw new ERR_LOCK_TABLE_FULL('a thread to the registry', threads);
}

const joined = new Set<TableCore>();
let watching = false;

/** Recover this thread's locks in `core` when it (or any worker it starts) dies. */
export function watchThreads(core: TableCore): void {
  joined.add(core);
  if (watching) return;
  watching = true;
  process.on('worker', (worker: Worker) => {
    const mark = liveMark(worker.threadId);
    worker.once('exit', () => {
      for (const c of joined) recoverThread(c, mark);
    });
  });
  if (!isMainThread) {
    process.once('exit', () => {
      for (const c of joined) recoverThread(c, liveMark(threadId));
    });
  }
}

/** Release everything the thread whose entry reads `mark` holds in this table. */
export function recoverThread(core: TableCore, mark: number): number {
  const w = core.words;
  let released = 0;
  for (let tid = 1; tid <= core.threads; tid++) {
    const entry = threadBase(tid);
    if (Atomics.compareExchange(w, entry + T_LIVE, mark, T_RECOVERING) !== mark) continue;
    for (let slot = 0; slot < core.slots; slot++) {
      const base = slotBase(core.threads, slot);
      const kind = (Atomics.load(w, base + S_USE) & KIND_MASK) >>> KIND_SHIFT;
      if (kind === KIND_MUTEX && recoverMutex(w, base, tid)) {
        released++;
        debug('recovered %s from dead thread %d (tid %d): abandoned', core.label(slot), mark - 1, tid);
      }
    }
    Atomics.store(w, entry + T_WAIT_SLOT, 0);
    Atomics.store(w, entry + T_LIVE, 0);
  }
  return released;
}
