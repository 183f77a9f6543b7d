/**
 * GuardedCache: a single-flight cache for worker pools. However many
 * threads (scope 'thread') or processes (scope 'host') ask for a missing
 * key at once, one of them computes it while the others wait, and then
 * they all get that value.
 *
 * ```ts
 * const users = new GuardedCache<User>('users', { ttl: 60_000 });
 * const user = await users.get(id, () => db.loadUser(id)); // in any worker
 * ```
 *
 * Tiers, in the order get() tries them:
 *
 * 1. A local lru-cache per GuardedCache object (so, per thread): a hit
 *    costs a Map lookup and returns the same object each time.
 * 2. The shared store, read without a lock: one file per key, which appears
 *    whole (written to a temporary file, then renamed), so a reader sees the
 *    old record, the new one, or none, never half of one.
 * 3. The key's lock, `locks.request('cache:<name>:<hash>', { scope })`:
 *    the holder reads the store again (whoever held the lock before may have
 *    just filled it), and only when the key is still missing computes it,
 *    writes it to the store and releases the lock. The next holder finds it.
 *
 * A compute that throws (or rejects) stores nothing: the error reaches the
 * caller whose compute it was, the lock is released, and each waiter in turn
 * computes the key itself. A thread that dies computing releases the lock
 * too (latchkey recovers a dead holder's locks), and the next waiter
 * computes.
 *
 * The store: `<lock dir>/cache/<name>/`, where the lock directory is
 * `$LATCHKEY_DIR`, or `$TMPDIR/latchkey-<uid>` (the same one host locks
 * use). Directories are made 0700, files 0600, and a directory that is a
 * symlink, belongs to another user or is writable by others is refused
 * (ERR_LOCK_BACKEND). Each file is named by the SHA-256 of its key (in
 * base64url) and holds `v8.serialize({ key, expires, value })`. The store
 * outlives the process: a later run that opens a cache of the same name in
 * the same lock directory reads what earlier runs computed, until their
 * `ttl` runs out. Call `clear()` at start-up for a fresh cache. Expired
 * files are replaced when their key is computed again and removed by
 * `clear()`.
 *
 * Values must be structured-cloneable (what `v8.serialize` and postMessage
 * accept: primitives, plain objects, arrays, Map, Set, Date, RegExp, typed
 * arrays, Error ...). Each thread gets its own copy, read from the store,
 * including the thread that computed it: class instances come back as plain
 * objects, and a value that cannot be cloned (a function, a symbol, a
 * socket) makes that get() reject with v8's DataCloneError.
 *
 * Lock names: one lock per key, `cache:<name>:<SHA-256 of the key>` (at
 * most 114 bytes, under the 128 a name may have); the front door's tables
 * give an idle name's slot back, so a cache may have any number of keys.
 * A compute may get() other keys of its cache (their own locks); one that
 * get()s its own key waits for itself.
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstat, readFile, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import { BroadcastChannel } from 'node:worker_threads';
import { LRUCache } from 'lru-cache';
import { locks } from '../locks.js';
import type { LockScope } from '../lock-guard.js';
import { defaultDir, openLockDir, ownDir } from '../bridge/host/file-dir.js';
import { ERR_INVALID_ARG_TYPE, ERR_INVALID_ARG_VALUE, ERR_OUT_OF_RANGE } from '../errors.js';

export interface GuardedCacheOptions {
  /**
   * How long an entry lives after it was computed, in ms: in every thread's
   * local cache and in the store, measured on the wall clock (Date.now()),
   * which all processes share. Infinity: entries never expire, and live in
   * the store until `delete()` or `clear()` (also across runs). A get()
   * after expiry computes the key again (once, as any miss).
   *
   * Cost: none beyond a number kept with each entry; a finite ttl makes the
   * local lru-cache track ages (an array of max numbers).
   * @default Infinity
   */
  ttl?: number;
  /**
   * Most entries each thread keeps in its local lru-cache; the least
   * recently used is dropped first. A dropped entry stays in the store, and
   * the next get() of it reads the file (no compute).
   *
   * Cost: lru-cache allocates index arrays of `max` entries up front, and
   * each thread holds up to `max` values in its heap.
   * @default 1000
   */
  max?: number;
  /**
   * Who computes a missing key once: `'thread'`, one thread of this
   * process (the other threads wait on a thread-scope lock); `'host'`, one
   * process of this machine (a host-scope lock, through the lock
   * directory). Both use the same store. Every GuardedCache of one name
   * must agree on `scope`, or two of them may compute one key.
   *
   * Cost, on misses only: a thread-scope lock takes microseconds; a
   * host-scope lock goes through the lock directory's files (and starts
   * the process's lease keeper thread on first use).
   * @default 'thread'
   */
  scope?: LockScope;
}

const kDefaultOptions = Object.freeze({ ttl: Infinity, max: 1000, scope: 'thread' as LockScope });
/** What the name may be: it is a directory name and part of a lock name (128 bytes at most). */
const kNamePattern = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;
/** Temporary files older than this are a crashed writer's, and clear() removes them. */
const kStaleTempMs = 60_000;

/** One record in the store. */
interface StoreRecord {
  key: string;
  /** Date.now() ms after which it is stale; Infinity for never. */
  expires: number;
  value: unknown;
}

/** What a delete() or clear() tells the other GuardedCache objects of this process. */
type Invalidation = { key: string } | { clear: true };

const isMissing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';

export class GuardedCache<V> {
  readonly name: string;
  readonly scope: LockScope;
  readonly ttl: number;
  readonly max: number;
  /** The store's directory, `<lock dir>/cache/<name>`. */
  readonly dir: string;
  /** Values boxed: lru-cache cannot hold undefined or null, and V may be either. */
  readonly #local: LRUCache<string, { value: V }>;
  readonly #channel: BroadcastChannel;
  readonly #base: string;
  #ready: Promise<void> | undefined;

  /**
   * A cache named `name` (1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with
   * a dot): every GuardedCache of that name, in any thread (and, with scope
   * 'host', any process) using the same lock directory, shares its store
   * and its single flight.
   */
  constructor(name: string, options: GuardedCacheOptions = {}) {
    if (typeof name !== 'string') throw new ERR_INVALID_ARG_TYPE('name', 'a string', name);
    if (!kNamePattern.test(name)) {
      throw new ERR_INVALID_ARG_VALUE('name', name, 'it must be 1 to 64 of A-Z a-z 0-9 . _ - and not start with a dot');
    }
    if (options === null || typeof options !== 'object') throw new ERR_INVALID_ARG_TYPE('options', 'an object', options);
    const { ttl = kDefaultOptions.ttl, max = kDefaultOptions.max, scope = kDefaultOptions.scope } = options;
    if (typeof ttl !== 'number') throw new ERR_INVALID_ARG_TYPE('options.ttl', 'a number', ttl);
    if (ttl !== Infinity && !(Number.isSafeInteger(ttl) && ttl >= 1)) {
      throw new ERR_OUT_OF_RANGE('options.ttl', 'a positive integer number of ms, or Infinity', ttl);
    }
    if (typeof max !== 'number') throw new ERR_INVALID_ARG_TYPE('options.max', 'a number', max);
    if (!(Number.isInteger(max) && max >= 1 && max <= 2 ** 30)) throw new ERR_OUT_OF_RANGE('options.max', 'an integer from 1 to 2^30', max);
    if (scope !== 'thread' && scope !== 'host') throw new ERR_INVALID_ARG_VALUE('options.scope', scope, "it must be 'thread' or 'host'");
    this.name = name;
    this.scope = scope;
    this.ttl = ttl;
    this.max = max;
    this.#base = resolve(process.env.LATCHKEY_DIR || defaultDir());
    this.dir = join(this.#base, 'cache', name);
    // Entries loaded from the store carry their own remaining ttl (set() below).
    this.#local = new LRUCache<string, { value: V }>(ttl === Infinity ? { max } : { max, ttl });
    this.#channel = new BroadcastChannel(`latchkey:cache:${name}`);
    // Never keeps a thread alive: it only drops local copies when another thread deletes.
    this.#channel.unref();
    this.#channel.onmessage = (event) => this.#drop((event as { data: Invalidation }).data);
  }

  /**
   * The value of `key`: from this thread's local cache, else from the store,
   * else computed by `compute` in exactly one thread (scope 'thread') or
   * process (scope 'host') while the other callers wait for it. Rejects
   * with compute's error in the caller whose compute threw (the waiters
   * then compute themselves, one at a time); with a DataCloneError when the
   * value is not structured-cloneable; never throws synchronously.
   */
  get(key: string, compute: () => V | PromiseLike<V>): Promise<V> {
    if (typeof key !== 'string') return Promise.reject(new ERR_INVALID_ARG_TYPE('key', 'a string', key));
    if (typeof compute !== 'function') return Promise.reject(new ERR_INVALID_ARG_TYPE('compute', 'a function', compute));
    const hit = this.#local.get(key);
    if (hit !== undefined) return Promise.resolve(hit.value);
    return this.#miss(key, compute);
  }

  /**
   * Drop `key` from the store and from the local caches of this process's
   * threads (told by BroadcastChannel: they drop it a moment later, and a
   * get() running meanwhile may still return the old value). Other
   * processes' local copies live until their ttl. Resolves true when the
   * store had the key.
   */
  async delete(key: string): Promise<boolean> {
    if (typeof key !== 'string') throw new ERR_INVALID_ARG_TYPE('key', 'a string', key);
    this.#forget({ key });
    await this.#open();
    const { file, lock } = this.#where(key);
    const remove = () => unlink(file).then(() => true, (err) => (isMissing(err) ? false : Promise.reject(err)));
    // Under the key's lock: a compute of the key finishes first, then its file goes.
    const removed = await locks.request(lock, { scope: this.scope }, remove);
    this.#local.delete(key);
    return removed;
  }

  /**
   * Drop every entry: the store's files and the local caches of this
   * process's threads (as delete() does). Entries computed while it runs
   * may survive it. Not locked: it never waits for a compute.
   */
  async clear(): Promise<void> {
    this.#forget({ clear: true });
    await this.#open();
    const now = Date.now();
    for (const entry of await readdir(this.dir)) {
      const path = join(this.dir, entry);
      if (entry.startsWith('.tmp-')) {
        // A writer may be between its write and its rename: only a crashed writer's file is old.
        const st = await lstat(path).catch(() => undefined);
        if (st === undefined || now - st.mtimeMs < kStaleTempMs) continue;
      }
      await unlink(path).catch((err) => (isMissing(err) ? undefined : Promise.reject(err)));
    }
    this.#local.clear();
  }

  /**
   * Stop listening for other threads' deletes (the channel is unref'd, so
   * an open cache never keeps a thread alive; close() just frees it), and
   * drop this object's local copies. The store stays, and get() still works.
   */
  close(): void {
    this.#channel.close();
    this.#local.clear();
  }

  async #miss(key: string, compute: () => V | PromiseLike<V>): Promise<V> {
    await this.#open();
    const { file, lock } = this.#where(key);
    // Lock-free read first: a file appears whole (rename), so this sees a complete record or none.
    const found = await this.#read(file, key);
    if (found !== undefined) return this.#keep(key, found);
    return locks.request(lock, { scope: this.scope }, async () => {
      // Read again under the lock: the previous holder may have filled it just now.
      const again = await this.#read(file, key);
      return again !== undefined ? this.#keep(key, again) : this.#fill(key, file, compute);
    });
  }

  /** Compute `key`, write it to the store, keep it here; only the holder of the key's lock calls this. */
  async #fill(key: string, file: string, compute: () => V | PromiseLike<V>): Promise<V> {
    const value = await compute();
    const record: StoreRecord = { key, expires: this.ttl === Infinity ? Infinity : Date.now() + this.ttl, value };
    const bytes = serialize(record); // throws DataCloneError for a value that cannot cross threads
    const tmp = join(this.dir, `.tmp-${randomBytes(8).toString('hex')}`);
    try {
      await writeFile(tmp, bytes, { mode: 0o600, flag: 'wx' });
      await rename(tmp, file); // atomic: readers see the old record or this one
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
    // Every thread gets a clone, the computing one too: the same value everywhere.
    return this.#keep(key, deserialize(bytes) as StoreRecord);
  }

  /** The fresh record of `key` in the store, or undefined (missing, expired, unreadable, or another key's). */
  async #read(file: string, key: string): Promise<StoreRecord | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    let record: StoreRecord;
    try {
      record = deserialize(bytes) as StoreRecord;
    } catch {
      return undefined; // a torn file (a crash before the rename reached the disk): computed again
    }
    if (typeof record !== 'object' || record === null || record.key !== key || typeof record.expires !== 'number') return undefined;
    return record.expires > Date.now() ? record : undefined;
  }

  #keep(key: string, record: StoreRecord): V {
    const value = record.value as V;
    if (record.expires === Infinity) this.#local.set(key, { value });
    else this.#local.set(key, { value }, { ttl: Math.max(1, Math.ceil(record.expires - Date.now())) });
    return value;
  }

  /** The key's file and lock name. */
  #where(key: string): { file: string; lock: string } {
    // UTF-16 code units, not UTF-8: distinct keys with lone surrogates stay distinct.
    // base64url (43 characters, file-name safe): with the longest cache name the lock name is 114 bytes.
    const hash = createHash('sha256').update(key, 'utf16le').digest('base64url');
    return { file: join(this.dir, hash), lock: `cache:${this.name}:${hash}` };
  }

  /** Drop local copies here, and tell the other GuardedCache objects of this name in the process. */
  #forget(msg: Invalidation): void {
    this.#drop(msg);
    this.#channel.postMessage(msg);
  }

  #drop(msg: Invalidation): void {
    if ('clear' in msg) this.#local.clear();
    else this.#local.delete(msg.key);
  }

  #open(): Promise<void> {
    // The lock directory's rules (bridge/host/file-dir.ts): ours, 0700, not a symlink.
    this.#ready ??= (async () => {
      ownDir(join(openLockDir(this.#base), 'cache'));
      ownDir(this.dir);
    })().catch((err) => {
      this.#ready = undefined; // try again next time
      throw err;
    });
    return this.#ready;
  }
}
