/**
 * FIFOs: how a process that waits for a host lock is woken, by exactly the
 * process that hands it the lock (issue 13). Each wait in progress owns a
 * FIFO; the releaser writes one message to it; an async waiter reads it
 * through libuv (a net.Socket on the FIFO: the read callback runs the next
 * look), a blocking lockSync() with readSync(2). Both backends use them
 * (file.ts, sqlite.ts).
 *
 * Files, in the lock directory's `.fifo/` (0700, checked as the lock
 * directory is):
 *   pool/<rand>          FIFOs made ahead by one background `mkfifo -m 600 a b …`
 *                        (Node cannot make a FIFO; a spawn costs 2–6 ms, so never
 *                        on a hand-over), claimed by rename(2)
 *   <owner>.<k>          a process's FIFOs: k = `<threadId>_<i>` one per wait in
 *                        progress of that thread, 'n' the process's notice FIFO
 *                        (read by the lease keeper: a grant of ours was taken)
 *
 * A FIFO is also its owner's liveness probe: the owner keeps it open for
 * reading while it lives, so opening it for writing fails with ENXIO (and a
 * write with EPIPE) once it is gone: no /proc read on the hand-off path.
 * A dead process's FIFOs hold no bytes (nobody has them open) and go back
 * to the pool (collectDead()).
 *
 * Messages (written whole, ≤ PIPE_BUF, so never interleaved):
 *   kind u8 | value f64 | n u8 | n × (length u8, latin1 name)
 * A grant names the queue entry it is for (entries are never reused, so a
 * late message of an old hand-off is never taken for a new one), then the
 * next waiters (so the next releaser need not list the queue).
 */
import {
  closeSync, constants, fstatSync, openSync, readSync, readdirSync, renameSync, writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { threadId } from 'node:worker_threads';
import type { Socket } from 'node:net';
import { me, provablyDead } from '../identity.js';
import { descriptorBudget, ownDir } from './file-dir.js';
import { ERR_LOCK_BACKEND } from '../../errors.js';

/** The gate is yours; value = token. */
export const M_GRANT = 0x47;
/** The same, and the previous holder died holding it. */
export const M_GRANT_ABANDONED = 0x41;
/** You are in (shared); value = token. */
export const M_READ = 0x52;
/** The gate is yours: wait for the readers in to leave. */
export const M_ENTER = 0x45;
/** Look again (a reader left, the gate came free). */
export const M_POKE = 0x50;
/** From the lease keeper, to a blocked lockSync(): look (poll, deadline). */
export const M_TICK = 0x54;
/** On a notice FIFO: a grant of yours was taken (a steal, a takeover). */
export const M_LOST = 0x4c;

const HEADER = 10;
/** Names a message carries at most: the entry it is for and the next waiters. */
export const HINTS = 8;
/** Write descriptors of other processes' FIFOs kept open per thread (a hand-off then costs one write); fewer under a low `ulimit -n`. */
const WRITERS_MAX = descriptorBudget(32);
/** FIFOs the pool should hold; below POOL_LOW a background mkfifo tops it up. */
const POOL_FILL = 8;
const POOL_LOW = 4;

// Loaded on first use: a process that is granted at once never needs them.
const require = createRequire(import.meta.url);
let netModule: typeof import('node:net') | undefined;
let childProcess: typeof import('node:child_process') | undefined;
const net = () => (netModule ??= require('node:net') as typeof import('node:net'));
const cp = () => (childProcess ??= require('node:child_process') as typeof import('node:child_process'));

const fail = (backend: string, detail: string, cause?: unknown) => new ERR_LOCK_BACKEND(backend, detail, cause === undefined ? undefined : { cause });

export interface Message {
  readonly kind: number;
  readonly value: number;
  readonly names: readonly string[];
}

const out = Buffer.alloc(1024);

function encode(kind: number, value: number, names: readonly string[]): number {
  out[0] = kind;
  out.writeDoubleLE(value, 1);
  let at = HEADER, n = 0;
  for (const name of names) {
    if (n === HINTS + 1 || name.length > 255 || at + 1 + name.length > out.length) break;
    out[at] = name.length;
    out.write(name, at + 1, 'latin1');
    at += 1 + name.length;
    n++;
  }
  out[9] = n;
  return at;
}

/** Whole messages in `buf`; the unparsed rest (rare: a message is written whole), or null. */
function parse(buf: Buffer, onMessage: (m: Message) => void): Buffer | null {
  let i = 0;
  for (;;) {
    if (buf.length - i < HEADER) break;
    const n = buf[i + 9]!;
    let at = i + HEADER, whole = true;
    const names: string[] = [];
    for (let k = 0; k < n; k++) {
      if (at >= buf.length || at + 1 + buf[at]! > buf.length) {
        whole = false;
        break;
      }
      names.push(buf.toString('latin1', at + 1, at + 1 + buf[at]!));
      at += 1 + buf[at]!;
    }
    if (!whole) break;
    onMessage({ kind: buf[i]!, value: buf.readDoubleLE(i + 1), names });
    i = at;
  }
  return i < buf.length ? Buffer.from(buf.subarray(i)) : null;
}

/** One FIFO of this thread. */
export class Fifo {
  /** The last grant message (kind M_GRANT, M_GRANT_ABANDONED, M_READ or M_ENTER), for the look that follows. */
  last: { kind: number; token: number; target: string; hints: readonly string[] } | null = null;
  busy = false;
  #sock: Socket | null = null;
  #syncFd = -1;
  #rest: Buffer | null = null;
  #onMessage: ((m: Message) => void) | null = null;
  readonly #scratch = Buffer.alloc(4096);

  constructor(readonly k: string, readonly path: string, readonly fd: number) {}

  #take(chunk: Buffer): void {
    this.#rest = parse(this.#rest === null ? chunk : Buffer.concat([this.#rest, chunk]), (m) => {
      if (m.kind === M_GRANT || m.kind === M_GRANT_ABANDONED || m.kind === M_READ || m.kind === M_ENTER) {
        this.last = { kind: m.kind, token: m.value, target: m.names[0] ?? '', hints: m.names.slice(1) };
      }
      this.#onMessage?.(m);
    });
  }

  /**
   * Call `onMessage` for every message from now on, read by this thread's
   * event loop (libuv), which the FIFO keeps alive while armed unless
   * `keepAlive` is false.
   */
  arm(onMessage: (m: Message) => void, keepAlive = true): void {
    this.#onMessage = onMessage;
    if (this.#sock === null) {
      const sock = new (net().Socket)({ fd: this.fd, readable: true, writable: false });
      sock.on('data', (chunk: Buffer) => this.#take(chunk));
      sock.on('error', () => {}); // a read error leaves the waiter to its poll
      this.#sock = sock;
    }
    if (keepAlive) this.#sock.ref();
    else this.#sock.unref();
  }

  /** Stop calling back; the FIFO no longer keeps the thread alive (its socket goes on reading: no epoll change per wait). */
  disarm(): void {
    this.#onMessage = null;
    this.#sock?.unref();
  }

  /** Block this thread until a message comes (a grant, a poke, the keeper's tick). */
  readBlocking(): void {
    // A second descriptor without O_NONBLOCK: libuv's first one is non-blocking.
    if (this.#syncFd < 0) this.#syncFd = openSync(this.path, constants.O_RDWR | constants.O_NOFOLLOW);
    const n = readSync(this.#syncFd, this.#scratch, 0, this.#scratch.length, null);
    if (n > 0) this.#take(Buffer.from(this.#scratch.subarray(0, n)));
  }

  /** Read what is there without blocking; whether anything was. */
  poll(): boolean {
    try {
      const n = readSync(this.fd, this.#scratch, 0, this.#scratch.length, null);
      if (n > 0) this.#take(Buffer.from(this.#scratch.subarray(0, n)));
      return n > 0;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return false;
      throw err;
    }
  }

  /** Forget what earlier waits left (pokes, ticks, stale grants). */
  reset(): void {
    this.#onMessage = null;
    while (this.#sock === null && this.poll());
    this.last = null;
    this.#rest = null;
  }

  close(): void {
    this.#onMessage = null;
    if (this.#sock !== null) this.#sock.destroy(); // closes fd
    else closeSync(this.fd);
    this.#sock = null;
    if (this.#syncFd >= 0) closeSync(this.#syncFd);
    this.#syncFd = -1;
  }
}

/** This thread's FIFOs in one lock directory, the pool, and the writers to others' FIFOs. */
export class Fifos {
  readonly dir: string;
  readonly #pool: string;
  readonly #backend: string;
  readonly #mine: Fifo[] = [];
  readonly #writers = new Map<string, number>();
  #refilling = false;
  #collected = false;
  #notice: Fifo | null = null;

  /** `owner`: whose FIFOs these are (this process; another id for a client of its own, as the bench's). */
  constructor(lockDir: string, backend: string, readonly owner = me().id) {
    this.#backend = backend;
    try {
      this.dir = ownDir(join(lockDir, '.fifo'), backend);
      this.#pool = ownDir(join(this.dir, 'pool'), backend);
    } catch (err) {
      if (err instanceof ERR_LOCK_BACKEND) throw err;
      throw fail(backend, `cannot set up ${join(lockDir, '.fifo')}: ${(err as Error).message}`, err);
    }
    // FIFOs ready before anyone waits: one background mkfifo, never keeping the process alive.
    if (this.#pooled() < POOL_LOW) this.refill();
  }

  /** The path of `owner`'s FIFO `k`. */
  path(owner: string, k: string): string {
    return join(this.dir, `${owner}.${k}`);
  }

  /** A FIFO of ours for one wait (drained of what earlier waits left). */
  claim(): Fifo {
    let f = this.#mine.find((x) => !x.busy);
    if (f === undefined) {
      f = this.#open(`${threadId}_${this.#mine.length}`);
      this.#mine.push(f);
    } else {
      f.reset();
    }
    f.busy = true;
    return f;
  }

  release(f: Fifo): void {
    f.disarm();
    f.busy = false;
  }

  /**
   * The process's notice FIFO (the lease keeper's): `onMessage` is called for
   * every notice (a steal, a takeover); it never keeps the thread alive.
   */
  openNotice(onMessage: (m: Message) => void): void {
    if (this.#notice !== null) return;
    const f = this.#open('n');
    f.arm(onMessage, false); // read for good; a thread with nothing else to do is not kept alive by it
    this.#notice = f;
  }

  #open(k: string): Fifo {
    const path = this.path(this.owner, k);
    this.#obtain(path);
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK | constants.O_NOFOLLOW);
    } catch (err) {
      throw fail(this.#backend, `cannot open the FIFO ${path}: ${(err as Error).message}`, err);
    }
    const st = fstatSync(fd);
    if (!st.isFIFO() || (process.getuid !== undefined && st.uid !== process.getuid()) || (st.mode & 0o077) !== 0) {
      closeSync(fd);
      throw fail(this.#backend, `${path} is not a private FIFO of this user`);
    }
    return new Fifo(k, path, fd);
  }

  /** Make `path` a FIFO: one from the pool (the rename is the claim), else mkfifo now (2–6 ms). */
  #obtain(path: string): void {
    if (!this.#collected) {
      this.#collected = true;
      this.collectDead();
    }
    let names: string[] = [];
    try {
      names = readdirSync(this.#pool);
    } catch {
      // made again below
    }
    if (names.length - 1 < POOL_LOW) this.refill();
    for (const n of names) {
      try {
        renameSync(join(this.#pool, n), path);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fail(this.#backend, `cannot claim a FIFO from ${this.#pool}: ${(err as Error).message}`, err);
      }
    }
    try {
      cp().execFileSync('mkfifo', ['-m', '600', path], { stdio: 'ignore' });
    } catch (err) {
      throw fail(this.#backend, `cannot make the FIFO ${path} (mkfifo): ${(err as Error).message}`, err);
    }
  }

  #pooled(): number {
    try {
      return readdirSync(this.#pool).length;
    } catch {
      return 0;
    }
  }

  /** Top the pool up in the background: one unref'd mkfifo for several. */
  refill(count = POOL_FILL): void {
    if (this.#refilling) return;
    this.#refilling = true;
    const names = Array.from({ length: count }, () => join(this.#pool, randomBytes(8).toString('hex')));
    try {
      const child = cp().spawn('mkfifo', ['-m', '600', ...names], { stdio: 'ignore' });
      child.on('exit', () => (this.#refilling = false));
      child.on('error', () => (this.#refilling = false));
      child.unref();
    } catch {
      this.#refilling = false; // #obtain() makes one itself
    }
  }

  /** Dead processes' FIFOs go back to the pool: nobody has them open, so they hold no bytes. */
  collectDead(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    const mine = me(), space = mine.id.split('-')[2];
    for (const n of names) {
      const dot = n.lastIndexOf('.');
      if (dot < 0 || n === 'pool') continue;
      const id = n.slice(0, dot), [pid, start, tag] = id.split('-');
      if (tag !== space || id === mine.id || id.startsWith(`${mine.id}-`)) continue;
      if (provablyDead({ id, pid: Number(pid), start: mine.start === '' ? '' : start ?? '', boot: '', host: mine.host })) {
        try {
          renameSync(join(this.dir, n), join(this.#pool, randomBytes(8).toString('hex')));
        } catch {
          // taken by another collector
        }
      }
    }
  }

  /** At exit: this thread's FIFOs (and the notice FIFO) go back to the pool. */
  returnAll(): void {
    for (const f of [...this.#mine, ...(this.#notice === null ? [] : [this.#notice])]) {
      try {
        f.close();
        renameSync(f.path, join(this.#pool, randomBytes(8).toString('hex')));
      } catch {
        // gone already
      }
    }
    this.#mine.length = 0;
    this.#notice = null;
    for (const fd of this.#writers.values()) closeSync(fd);
    this.#writers.clear();
  }

  /** Close the cached writers (out of descriptors: file.ts sheds what it keeps for later). */
  shed(): void {
    for (const fd of this.#writers.values()) closeSync(fd);
    this.#writers.clear();
  }

  // --- writing to others -------------------------------------------------------

  /** A write descriptor of `owner`'s FIFO `k`, cached; -1 when nobody reads it (its process is gone). */
  #writer(owner: string, k: string): number {
    const path = this.path(owner, k);
    let fd = this.#writers.get(path);
    if (fd !== undefined) return fd;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENXIO' || code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return -1;
      throw fail(this.#backend, `cannot open the FIFO ${path}: ${(err as Error).message}`, err);
    }
    if (!fstatSync(fd).isFIFO()) {
      closeSync(fd);
      return -1;
    }
    if (this.#writers.size >= WRITERS_MAX) {
      const [oldest, ofd] = this.#writers.entries().next().value as [string, number];
      this.#writers.delete(oldest);
      closeSync(ofd);
    }
    this.#writers.set(path, fd);
    return fd;
  }

  /** Whether `owner`'s FIFO `k` has a reader (its waiter is alive). */
  alive(owner: string, k: string): boolean {
    return this.#writer(owner, k) >= 0;
  }

  /** One message; false when nobody reads that FIFO (its process or thread is gone). */
  send(owner: string, k: string, kind: number, value = 0, names: readonly string[] = []): boolean {
    const fd = this.#writer(owner, k);
    if (fd < 0) return false;
    const n = encode(kind, value, names);
    try {
      writeSync(fd, out, 0, n);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') return true; // 64 KiB unread: it has messages to look at anyway
      this.#writers.delete(this.path(owner, k));
      closeSync(fd);
      if (code === 'EPIPE') return false;
      throw fail(this.#backend, `cannot write to the FIFO ${this.path(owner, k)}: ${(err as Error).message}`, err);
    }
  }
}
