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
 * A worker that dies because its parent worker ended (Node stops a worker's
 * workers with it) is recovered with that parent, through T_PARENT. A worker
 * terminated by a thread that never imported latchkey, or whose parent is
 * itself blocked in a synchronous wait, is recovered only when some watching
 * thread's event loop runs.
 *
 * Recovery marks the entry T_RECOVERING (one CAS, so two recoverers never
 * both run), releases every slot the thread held or was heir to, marking
 * them abandoned, and frees the entry only once the thread has stopped for
 * good: a tid is never reused while a state word still names it.
 */
import { existsSync, readlinkSync } from 'node:fs';
import { getEnvironmentData, isMainThread, setEnvironmentData, threadId, type Worker } from 'node:worker_threads';
import type { WatchedTable } from './core.js';
import {
  H_NODES, H_SLOTS, H_THREADS, KIND_MASK, KIND_SHIFT, S_USE, identityOf, isBorn, T_DEAD_MARK, T_LIVE, T_OSTID, T_PARENT, T_RECOVERER, T_RECOVERING, T_WAIT_SLOT, slotBase,
  threadBase,
} from './layout.js';
import { takeHoldings } from './holdings.js';
import { debug } from '../debug.js';
import { ERR_LOCK_TABLE_FULL } from '../errors.js';


/** Node threadIds start at 0 (the main thread); entries store id + 1 so 0 means free. */
const liveMark = (nodeThreadId: number) => nodeThreadId + 1;

/** Where each thread that loads latchkey tells the workers it starts who started them (environment data they inherit). */
const PARENT_KEY = 'latchkey:parent-thread';
/** The live mark of the thread that started this one, as far as latchkey knows (watchThreads() reads it). */
let parentMark = 0;

/** This thread's OS thread id, 0 where /proc/thread-self cannot say (read when the thread first joins a table). */
let osThreadId: number | undefined;
function ownOsThreadId(): number {
  if (osThreadId !== undefined) return osThreadId;
  try {
    return (osThreadId = Number(readlinkSync('/proc/thread-self').split('/').pop()) || 0);
  } catch {
    return (osThreadId = 0);
  }
}

/** Claim a registry entry for this thread. */
export function claimThread(words: Int32Array, threads: number): number {
  const mark = liveMark(threadId);
  for (let n = 0; n < threads; n++) {
    const tid = ((threadId + n) % threads) + 1;
    const entry = threadBase(tid);
    if (Atomics.compareExchange(words, entry + T_LIVE, 0, mark) === 0) {
      Atomics.store(words, entry + T_PARENT, parentMark);
      Atomics.store(words, entry + T_OSTID, ownOsThreadId());
      return tid;
    }
  }
  throw new ERR_LOCK_TABLE_FULL('a thread to the registry', threads);
}

/**
 * Every table this thread knows of, by identity (layout H_ID): those it has
 * joined, and the default table even if it never touched it, so a thread
 * that only imported latchkey still recovers the workers it starts.
 */
const watched = new Map<string, WatchedTable>();

/**
 * Watch this thread's workers and its own end, from the moment latchkey is
 * loaded (src/process.ts calls it once per thread):
 * - who started this thread is read (before it is overwritten for the
 *   workers this thread starts: they inherit environment data);
 * - every worker this thread starts, whoever starts it, is recovered at its
 *   'exit' event, which fires after it and every worker it started stopped;
 * - a worker that returns, throws or calls process.exit() releases its own
 *   locks from its exit hook. If its parent watches the table, the entry
 *   stays claimed until the parent's 'exit' event (after the thread has
 *   truly stopped) frees it: an 'exit' listener that runs after this one
 *   could still take a lock.
 */
export function watchThreads(): void {
  const inherited = getEnvironmentData(PARENT_KEY);
  parentMark = !isMainThread && typeof inherited === 'number' ? liveMark(inherited) : 0;
  setEnvironmentData(PARENT_KEY, threadId);
  process.on('worker', (worker: Worker) => {
    const mark = liveMark(worker.threadId);
    worker.once('exit', () => {
      for (const table of tables()) recoverThread(table, mark, true);
    });
  });
  if (!isMainThread) {
    process.once('exit', () => {
      for (const table of tables()) {
        if (ownsEntry(table)) recoverThread(table, liveMark(threadId), !parentWatches(table));
      }
    });
  }
}

function ownsEntry(core: WatchedTable): boolean {
  return hasEntry(core, liveMark(threadId));
}

function parentWatches(core: WatchedTable): boolean {
  return parentMark !== 0 && hasEntry(core, parentMark);
}

function hasEntry(core: WatchedTable, mark: number): boolean {
  for (let tid = 1; tid <= core.threads; tid++) {
    if (Atomics.load(core.words, threadBase(tid) + T_LIVE) === mark) return true;
  }
  return false;
}

function freeEntry(w: Int32Array, entry: number): void {
  Atomics.store(w, entry + T_RECOVERER, 0);
  Atomics.store(w, entry + T_PARENT, 0);
  Atomics.store(w, entry + T_OSTID, 0);
  Atomics.store(w, entry + T_LIVE, 0);
}

/**
 * Recover thread `tid` now if it is provably dead: its OS thread is gone
 * from /proc/self/task (Linux; elsewhere this answers false). For a thread
 * that waits for one whose 'exit' event it would itself deliver: blocked,
 * it would wait forever. True if it was recovered.
 */
export function recoverIfGone(core: WatchedTable, tid: number): boolean {
  const entry = threadBase(tid), os = Atomics.load(core.words, entry + T_OSTID), mark = Atomics.load(core.words, entry + T_LIVE);
  if (os === 0 || mark <= 0 || existsSync(`/proc/self/task/${os}`)) return false;
  debug('thread tid %d is gone (OS thread %d): recovering it without waiting for its exit event', tid, os);
  recoverThread(core, mark, true);
  return true;
}

/**
 * The thread `recoverer` died: the recoveries it had begun and not
 * finished (killed in the middle, or put off and lost with its event loop)
 * start again. Every step of a recovery may run twice: repairs rebuild from
 * the nodes, and released words are released only if still owned.
 */
function resumeOrphaned(core: WatchedTable, recoverer: number): number {
  const w = core.words, self = liveMark(threadId);
  let released = 0;
  for (let tid = 1; tid <= core.threads; tid++) {
    const entry = threadBase(tid);
    if (Atomics.load(w, entry + T_LIVE) !== T_RECOVERING) continue;
    // One CAS: of two threads that would resume it, one does.
    if (Atomics.compareExchange(w, entry + T_RECOVERER, recoverer, self) !== recoverer) continue;
    const dead = Atomics.load(w, entry + T_DEAD_MARK);
    debug('resuming the recovery of tid %d, left unfinished by dead thread %d', tid, recoverer - 1);
    released += recoverEntry(core, tid, dead, true);
    if (dead !== recoverer) released += recoverChildren(core, dead);
  }
  return released;
}

/** Recoveries this thread had to put off, with the entries they keep reserved. */
const deferred: Array<{ w: Int32Array; entry: number; retries: Array<() => boolean> }> = [];
let deferredTimer: NodeJS.Timeout | undefined;

/**
 * Finish a recovery that had to wait, soon: from this thread's event loop
 * (the threads it waits for may be dead too, and recovered by an event
 * still in the queue), or from a blocking wait of this thread, which calls
 * finishDeferred(). The entry stays T_RECOVERING, its tid unused, meanwhile.
 */
function finishLater(w: Int32Array, entry: number, retries: Array<() => boolean>): void {
  deferred.push({ w, entry, retries });
  deferredTimer ??= setTimeout(finishDeferred, 1).unref(); // an exiting process needs no recovery
}

/** Whether this thread has recoveries to finish: a blocking wait should wake now and then for them. */
export const recoveriesDeferred = (): boolean => deferred.length > 0;

/** Try the recoveries this thread put off again. */
export function finishDeferred(): void {
  deferredTimer = undefined;
  for (let i = deferred.length - 1; i >= 0; i--) {
    const d = deferred[i]!;
    d.retries = d.retries.filter((retry) => !retry());
    if (d.retries.length > 0) continue;
    freeEntry(d.w, d.entry);
    deferred.splice(i, 1);
  }
  if (deferred.length > 0) deferredTimer = setTimeout(finishDeferred, 1).unref();
}

/** Recover dead threads' locks in `table` (identified by `id`) from now on. */
export function watchTable(id: string, table: WatchedTable): void {
  watched.set(id, table);
}

/** Process-wide tables reserved unborn (memory.ts): watched from their birth, by whichever thread bears them. */
const reserved: Array<{ buffer: SharedArrayBuffer; kinds: WatchedTable['kinds']; recover: WatchedTable['recover'] }> = [];

/**
 * Recover dead threads in the reserved table `buffer` once it is born,
 * even if this thread never joins it: a thread recovers the workers it
 * started in every table they may have used.
 */
export function watchReserved(buffer: SharedArrayBuffer, kinds: WatchedTable['kinds'], recover?: WatchedTable['recover']): void {
  reserved.push({ buffer, kinds, recover });
}

/** The tables to scan for a dead thread: the watched ones, and the reserved ones born since. */
function tables(): Iterable<WatchedTable> {
  for (let i = reserved.length - 1; i >= 0; i--) {
    const { buffer, kinds, recover } = reserved[i]!;
    if (!isBorn(buffer)) continue;
    reserved.splice(i, 1);
    const words = new Int32Array(buffer, 0, buffer.byteLength / 4), id = identityOf(words);
    if (watched.has(id)) continue;
    watched.set(id, {
      words, f64: new Float64Array(buffer, 0, words.length / 2), slots: words[H_SLOTS]!, threads: words[H_THREADS]!,
      nodes: words[H_NODES]!, id, kinds, label: (slot) => `#${slot}`, recover,
    });
  }
  return watched.values();
}

/**
 * Release everything the thread whose entry reads `mark` holds in this
 * table, marking it abandoned. `stopped`: the thread has stopped for good
 * (its Worker's 'exit' event), so its entry is freed and the workers it
 * started, which Node stopped with it, are recovered too.
 */
export function recoverThread(core: WatchedTable, mark: number, stopped: boolean): number {
  const w = core.words, self = liveMark(threadId);
  // What a dead thread left half recovered (never this thread's own: it finishes its put-off ones itself).
  let released = stopped && mark !== self ? resumeOrphaned(core, mark) : 0;
  for (let tid = 1; tid <= core.threads; tid++) {
    const entry = threadBase(tid);
    if (Atomics.compareExchange(w, entry + T_LIVE, mark, T_RECOVERING) !== mark) continue;
    // Who recovers it: should this thread die before it is done, its own recovery resumes this one.
    Atomics.store(w, entry + T_DEAD_MARK, mark);
    Atomics.store(w, entry + T_RECOVERER, self);
    released += recoverEntry(core, tid, mark, stopped);
  }
  if (stopped) released += recoverChildren(core, mark);
  return released;
}

/** The recovery of entry `tid` (T_RECOVERING, and this thread its T_RECOVERER), whose thread had the mark `mark`. */
function recoverEntry(core: WatchedTable, tid: number, mark: number, stopped: boolean): number {
  const w = core.words, entry = threadBase(tid);
  let released = 0;
  const kindOf = (base: number) => core.kinds[(Atomics.load(w, base + S_USE) & KIND_MASK) >>> KIND_SHIFT];
  for (let slot = 0; slot < core.slots; slot++) {
    const base = slotBase(core.threads, slot);
    if (kindOf(base)?.recoverOwned?.(w, base, tid)) {
      released++;
      debug('recovered %s from dead thread %d (tid %d): abandoned', core.label(slot), mark - 1, tid);
    }
  }
  for (const [slot, count] of takeHoldings(core, tid)) {
    const base = slotBase(core.threads, slot);
    kindOf(base)?.recoverHeld?.(w, base, tid, count);
    released++;
    debug('gave back %d of %s held by dead thread %d (tid %d)', count, core.label(slot), mark - 1, tid);
  }
  const retries: Array<() => boolean> = [];
  if (core.recover !== undefined) {
    const r = core.recover(core, tid, mark === liveMark(threadId));
    released += r.released;
    if (r.retry !== undefined) retries.push(r.retry);
  }
  Atomics.store(w, entry + T_WAIT_SLOT, 0);
  if (!stopped) {
    // On the dying thread itself: what waits is left to its parent's recovery.
    Atomics.store(w, entry + T_RECOVERER, 0);
    Atomics.store(w, entry + T_LIVE, mark);
    return released;
  }
  if (retries.length > 0) finishLater(w, entry, retries);
  else freeEntry(w, entry);
  return released;
}

/** The workers that stopped with the thread of `mark` (Node stops a worker's workers with it). */
function recoverChildren(core: WatchedTable, mark: number): number {
  const w = core.words;
  let released = 0;
  for (let tid = 1; tid <= core.threads; tid++) {
    const entry = threadBase(tid), child = Atomics.load(w, entry + T_LIVE);
    if (child > 0 && Atomics.load(w, entry + T_PARENT) === mark) released += recoverThread(core, child, true);
  }
  return released;
}
