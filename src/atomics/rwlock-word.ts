/**
 * The reader-writer lock's words and everything that is not a fast path: the
 * wait protocols of readers and writers (one each, shared by the blocking and
 * the async driver), the contended releases, downgrade and upgrade, recovery
 * of a dead thread, and the holders that deadlock detection walks.
 *
 * S_STATE:
 * ```
 *  bit  31          30        29       28     21   20      12   11         0
 *     [ ABANDONED | WPARKED | PARKED | queued    | readers    | writer tid  ]
 * ```
 * writer     tid of the writer that has announced itself; 0 when none. From
 *            then on no new reader comes in; it holds the lock once
 *            `readers` is 0.
 * readers    threads holding read shares (9 bits: at most 511). A thread
 *            counts once however many shares it holds; the number of its
 *            shares is in its holdings (holdings.ts).
 * queued     threads with a reader waiting for the announced writer to
 *            leave (8 bits: at most 255). While queued > 0 and writer = 0 no
 *            writer may announce itself: they come in first.
 * PARKED     a thread may sleep on S_STATE (queued readers, writers waiting
 *            to announce themselves). Whoever clears it notifies.
 * WPARKED    a writer may sleep on S_BELL (the heir, or the announced writer
 *            waiting for the readers to leave). Whoever clears it rings.
 * ABANDONED  the last writer died holding the lock; the next thread in,
 *            reader or writer, is told (`guard.abandoned`) and clears it. Set
 *            only while no reader is in, and cleared by every reader that
 *            comes in, so a writer that takes it holds the lock at once.
 * S_AUX      tid of the heir: a writer that has waited FAIR_MS. While set,
 *            no other writer announces itself.
 * S_BELL     bumped, waking everyone on it, when the heir or the announced
 *            writer may go on.
 * Holdings   a thread's entry for the slot (holdings.ts): its shares (low
 *            29 bits), QUEUED_HOLD while it counts in `queued`, PENDING
 *            while it is changing `readers`. Recovery of a dead thread gives
 *            back what the entry names.
 *
 * | writer, readers, queued | meaning                          | a reader arriving       | a writer arriving            |
 * |-------------------------|----------------------------------|-------------------------|------------------------------|
 * | 0, 0, 0                 | free                             | readers+1 (fast: 0 → 1) | writer := tid (fast: 0 → tid)|
 * | 0, r, 0                 | read-locked                      | readers+1               | announces, waits readers = 0 |
 * | 0, r, q                 | read turn: q threads coming in   | readers+1               | waits for queued = 0         |
 * | w, r > 0, q             | w announced, r readers still in  | queued+1, waits         | waits for writer = 0         |
 * | w, 0, q                 | write-locked by w                | queued+1, waits         | waits for writer = 0         |
 *
 * Invariants (no lost wake-ups, no grant twice):
 * - A waiter publishes PARKED or WPARKED with a CAS against the word it
 *   examined, then sleeps on exactly the value it published (S_STATE) or on
 *   the bell value it read before that CAS (S_BELL). Any transition that
 *   might let it on clears the flag in its own CAS and then notifies/rings.
 * - A thread's share is two words (`readers` and its holdings entry), and
 *   worker.terminate() can stop a thread after any Atomics call (measured:
 *   half the kills of a CAS-then-store loop land between the two). So the
 *   entry is marked PENDING before the CAS that changes `readers` and
 *   unmarked after it. Recovery gives back a share the entry names without
 *   the mark; with the mark, nobody can tell whether the CAS happened, so it
 *   gives back nothing, and the announced writer's census (census()) later
 *   takes back a share the word counts but no entry names. Never the other
 *   way round: a share given back twice would let a writer in beside a
 *   live reader. `queued` errs the other way: the mark is set before the
 *   CAS, so a death in between costs a live thread its place (fairness), and
 *   never leaks one (which would keep every writer out). Counts are clamped
 *   at 0.
 *
 * # Fairness (phase-fair, after Brandenburg & Anderson's PF locks)
 * - Readers do not starve writers: once a writer has announced itself no
 *   new reader thread comes in, so it waits for the readers in at that
 *   moment, one read section each. (A thread that already holds a share may
 *   take more: it is in already, and making it wait would deadlock it.)
 * - Writers do not starve readers: a reader that finds a writer announced
 *   queues, and when that writer leaves (unlock, downgrade, timeout, death)
 *   every queued thread comes in before any writer may announce itself. So
 *   a reader waits for at most one writer: its drain and its write section.
 * - Writers among themselves barge, as in the Mutex, until one has waited
 *   FAIR_MS (1 ms) and becomes the heir (S_AUX); no other writer announces
 *   itself before it. A writer thus waits about 1 ms + one write section +
 *   one read turn per writer ahead of it + the read sections in progress
 *   when it announces itself.
 * - Past 511 reader threads in or 255 queued, a reader polls every POLL_MS
 *   (1 ms) without a place in the queue. The default table has 256 threads.
 * - A share left by a thread killed inside an update costs the next writer
 *   up to CENSUS_MS (5 ms) more.
 */
import type { KindOps, TableCore, WatchedTable } from './core.js';
import {
  NO_PAIR, addHolding, foundPair, freePair, holdIn, holdingOf, ownHolding, pairToHold, removeHolding, setCount, vacantPair,
} from './holdings.js';
import { S_AUX, S_BELL, S_STATE, T_WAIT_SLOT, threadBase } from './layout.js';
import type { Wait } from './options.js';
import { ABORT, NOT_CONTENDED, type Reason, Waiter, parkAsync, parkSync } from './park.js';
import { SpinWait, recordWait, watch } from './wait.js';
import { ERR_LOCK_DEADLOCK, ERR_LOCK_NOT_LOCKED, ERR_LOCK_NOT_OWNER } from '../errors.js';

export const OWNER_MASK = 0xfff;
export const READERS_SHIFT = 12;
export const READERS_MAX = 0x1ff;
export const READERS_MASK = READERS_MAX << READERS_SHIFT;
export const ONE_READER = 1 << READERS_SHIFT;
export const QUEUED_SHIFT = 21;
export const QUEUED_MAX = 0xff;
export const QUEUED_MASK = QUEUED_MAX << QUEUED_SHIFT;
export const ONE_QUEUED = 1 << QUEUED_SHIFT;
export const PARKED = 1 << 29;
export const WPARKED = 1 << 30;
export const ABANDONED = 1 << 31;
export const FAIR_MS = 1;
export const POLL_MS = 1;
/** How long in all a blocking waiter watches the word before it sleeps (see RwWaiter.spin). */
export const SPIN_MS = 0.02;
/** In a thread's holdings for the slot: set while the thread counts in `queued`. */
export const QUEUED_HOLD = 1 << 30;
/** In a thread's holdings for the slot: set while it changes `readers` (see the invariants above). */
export const PENDING = 1 << 29;
/** In a thread's holdings for the slot: its read shares. */
export const SHARES_MASK = PENDING - 1;
/** How often the announced writer counts the readers the word names against the threads' holdings. */
export const CENSUS_MS = 5;

/*
 * Module-local copies for the read fast paths: an imported or exported
 * binding is a module cell, a load and a hole check at each use in a
 * caller's loop.
 */
const NONE = NO_PAIR, STATE = S_STATE, READER = ONE_READER, MARK = PENDING, SHARES = SHARES_MASK;

export const readersOf = (s: number) => (s & READERS_MASK) >>> READERS_SHIFT;
export const queuedOf = (s: number) => (s & QUEUED_MASK) >>> QUEUED_SHIFT;

function ring(w: Int32Array, base: number): void {
  Atomics.add(w, base + S_BELL, 1);
  Atomics.notify(w, base + S_BELL); // everyone: the heir and the announced writer both sleep here
}

/** The wake-ups owed by a transition s → next that cleared PARKED and/or WPARKED. */
function wake(w: Int32Array, base: number, s: number, next: number, all: boolean): void {
  if ((s & PARKED) !== 0 && (next & PARKED) === 0) Atomics.notify(w, base + S_STATE, all ? Infinity : 1);
  if ((s & WPARKED) !== 0 && (next & WPARKED) === 0) ring(w, base);
}

/**
 * The announced writer leaves (unlock, withdrawal, recovery). Every queued
 * reader may come in now, and no writer may announce itself until they
 * have: so wake all of them.
 */
function writerLeaves(w: Int32Array, base: number, s: number, keep: number): boolean {
  const next = (s & ~(OWNER_MASK | PARKED | WPARKED)) | keep;
  if (Atomics.compareExchange(w, base + S_STATE, s, next) !== s) return false;
  wake(w, base, s, next, queuedOf(s) !== 0);
  return true;
}

/**
 * Take a share with the fast path's CAS (0 → one reader) if this thread
 * holds none and the word is 0. Returns false, changing nothing, otherwise.
 */
export function tryFirstShare(core: TableCore, slot: number, base: number): boolean {
  const w = core.words, st = base + STATE, mine = ownHolding(core, slot), at = vacantPair();
  // A plain read of the word: the CAS checks it; a stale value only sends this to the slow path.
  if (mine !== 0 || foundPair() !== NONE || at === NONE || w[st] !== 0) return false;
  holdIn(w, at, slot, 1 | MARK); // marked before the CAS (see the invariants)
  if (Atomics.compareExchange(w, st, 0, READER) === 0) {
    setCount(w, at, 1);
    return true;
  }
  freePair(w, at); // not in after all
  return false;
}

/** Give back one share of this thread. False, changing nothing, if it holds none. */
export function readUnlock(core: TableCore, slot: number, base: number): boolean {
  const w = core.words, count = ownHolding(core, slot), at = foundPair();
  if ((count & SHARES) === 0) return false;
  const left = count - 1;
  if ((left & SHARES) !== 0) { // another share of this thread is still out: the word does not change
    setCount(w, at, left);
    return true;
  }
  // The thread's last share: marked, then the word, then the holdings entry.
  setCount(w, at, count | MARK);
  const old = Atomics.sub(w, base + STATE, READER);
  if (left === 0) freePair(w, at);
  else setCount(w, at, left);
  // The last reader out lets the announced writer in.
  if (readersOf(old) === 1 && (old & OWNER_MASK) !== 0 && (old & WPARKED) !== 0) {
    if ((Atomics.and(w, base + S_STATE, ~WPARKED) & WPARKED) !== 0) ring(w, base);
  }
  return true;
}

/** This thread gives up its place in the queue. */
function unqueue(core: TableCore, slot: number, base: number): void {
  const w = core.words, st = base + S_STATE;
  for (;;) {
    const s = Atomics.load(w, st);
    if ((s & QUEUED_MASK) === 0) break; // taken back by a recovery
    let next = s - ONE_QUEUED;
    // The last queued thread gone: writers waiting for the read turn to end may go on.
    if ((next & QUEUED_MASK) === 0 && (s & OWNER_MASK) === 0) next &= ~(PARKED | WPARKED);
    if (Atomics.compareExchange(w, st, s, next) !== s) continue;
    wake(w, base, s, next, false);
    break;
  }
  // After the word: a death in between costs another thread its place, not a share.
  removeHolding(core, slot, QUEUED_HOLD);
}

/**
 * Take a share with no writer announced, from the word `s` and this thread's
 * holdings `mine` (no share in it; just scanned by ownHolding()). Returns
 * `abandoned`, or undefined when the CAS lost a race (re-read and retry).
 */
function enter(core: TableCore, slot: number, base: number, s: number, mine: number): boolean | undefined {
  const w = core.words, queued = (mine & QUEUED_HOLD) !== 0, fresh = foundPair() === NONE;
  const at = pairToHold(core, slot); // ERR_LOCK_TABLE_FULL here changes nothing
  let next = (s & ~ABANDONED) + ONE_READER;
  if (queued && (s & QUEUED_MASK) !== 0) {
    next -= ONE_QUEUED;
    if ((next & QUEUED_MASK) === 0) next &= ~(PARKED | WPARKED); // the read turn is over
  }
  // Marked before the CAS (see the invariants).
  if (fresh) holdIn(w, at, slot, mine | PENDING);
  else setCount(w, at, mine | PENDING);
  if (Atomics.compareExchange(w, base + S_STATE, s, next) !== s) {
    if (fresh) freePair(w, at);
    else setCount(w, at, mine);
    return undefined;
  }
  // The place in the queue, if any, becomes the share.
  setCount(w, at, queued ? mine - QUEUED_HOLD + 1 : mine + 1);
  wake(w, base, s, next, false);
  return (s & ABANDONED) !== 0;
}

/** One attempt at a share without waiting. Returns `abandoned`, or undefined if a writer is announced or the word is full. */
export function tryReadSlow(core: TableCore, slot: number, base: number): boolean | undefined {
  const mine = ownHolding(core, slot);
  if ((mine & SHARES_MASK) !== 0) {
    setCount(core.words, foundPair(), mine + 1); // already in: one more share, even past an announced writer
    return false;
  }
  for (;;) {
    const s = Atomics.load(core.words, base + S_STATE);
    if ((s & OWNER_MASK) !== 0 || readersOf(s) === READERS_MAX) return undefined;
    const abandoned = enter(core, slot, base, s, mine);
    if (abandoned !== undefined) return abandoned;
  }
}

/** One attempt at the write lock without waiting. Returns `abandoned`, or undefined. */
export function tryWriteSlow(core: TableCore, base: number): boolean | undefined {
  const w = core.words, st = base + S_STATE;
  for (;;) {
    const s = Atomics.load(w, st);
    if ((s & (OWNER_MASK | READERS_MASK | QUEUED_MASK)) !== 0 || Atomics.load(w, base + S_AUX) !== 0) return undefined;
    if (Atomics.compareExchange(w, st, s, (s & ~ABANDONED) | core.tid) === s) return (s & ABANDONED) !== 0;
  }
}

/**
 * One thread's wait for a read share or the write lock, as park.ts drives
 * it (blocking or async).
 */
abstract class RwWaiter extends Waiter {
  abandoned = false;
  /** Slept on S_STATE at least once: may have taken a notify(1) meant for another. */
  slept = false;
  /** The state word as check() last saw it. */
  protected s = 0;
  protected readonly w: Int32Array;
  protected readonly st: number;
  protected readonly tid: number;
  #spin: SpinWait | null;
  #spinUntil = 0;

  constructor(core: TableCore, slot: number, protected readonly base: number, wait: Wait, blocking: boolean) {
    super(core, slot, wait, blocking);
    this.w = core.words;
    this.st = base + S_STATE;
    this.tid = core.tid;
    this.#spin = blocking ? new SpinWait() : null;
  }

  /**
   * Before the first park: back off a few rounds, then watch the word for
   * up to SPIN_MS in all. The spin matters more here than in the Mutex: a
   * writer that sleeps while readers drain keeps every new reader out for
   * a whole wake-up (30-100 µs) after the last one leaves, and a reader
   * that sleeps behind a short write section loses as much.
   */
  override spin(): boolean {
    if (this.#spin === null) return false;
    if (this.#spin.spin()) return true;
    if (this.#spinUntil === 0) this.#spinUntil = performance.now() + SPIN_MS;
    if (watch(this.w, this.st, this.s, this.#spinUntil)) return true;
    this.#spin = null;
    return false;
  }

  /** Publish PARKED *before* sleeping on S_STATE, else the releaser may skip notify. False: the word moved. */
  protected parkOnState(s: number, until: number): boolean {
    if ((s & PARKED) === 0) {
      if (Atomics.compareExchange(this.w, this.st, s, s | PARKED) !== s) return false;
      s |= PARKED;
    }
    this.index = this.st;
    this.value = s;
    this.until = until;
    this.slept = true;
    return true;
  }
}

const localWaiters = new WeakMap<TableCore, Map<number, number>>();

/** A reader. Its thread takes one place in the queue, shared by all its waiting readers. */
class ReaderWaiter extends RwWaiter {
  readonly #local: Map<number, number>;
  /** No room in the word (readers or queued at their maximum): poll. */
  #full = false;
  #finished = false;

  constructor(core: TableCore, slot: number, base: number, wait: Wait, blocking: boolean) {
    super(core, slot, base, wait, blocking);
    let local = localWaiters.get(core);
    if (local === undefined) localWaiters.set(core, (local = new Map()));
    local.set(slot, (local.get(slot) ?? 0) + 1);
    this.#local = local;
  }

  check(): boolean {
    const { core, slot, base, w, st } = this;
    for (;;) {
      const mine = ownHolding(core, slot);
      if ((mine & SHARES_MASK) !== 0) { // another reader of this thread got in
        setCount(w, foundPair(), mine + 1);
        return this.#finish(true);
      }
      const s = (this.s = Atomics.load(w, st));
      this.#full = false;
      if ((s & OWNER_MASK) === 0) {
        if (readersOf(s) < READERS_MAX) {
          const abandoned = enter(core, slot, base, s, mine);
          if (abandoned === undefined) continue;
          this.abandoned = abandoned;
          return this.#finish(true);
        }
        this.#full = true;
      } else if ((mine & QUEUED_HOLD) === 0) {
        if (queuedOf(s) === QUEUED_MAX) this.#full = true;
        // A place in the queue makes the next read turn wait for us: not for a
        // try, nor past the deadline (a reader must not hold a writer back in vain).
        else if (!this.expired()) {
          // The mark first: a death before the CAS then costs another thread
          // its place (fairness), where a place leaked would keep every writer out.
          addHolding(core, slot, QUEUED_HOLD);
          if (Atomics.compareExchange(w, st, s, s + ONE_QUEUED) !== s) removeHolding(core, slot, QUEUED_HOLD);
          continue;
        }
      }
      return false;
    }
  }

  publish(now: number): boolean {
    if (!this.#full) return this.parkOnState(this.s, Infinity);
    // No room in the word: poll, without a place in the queue.
    this.index = this.st;
    this.value = this.s;
    this.until = now + POLL_MS;
    return true;
  }

  override leave(): boolean {
    return this.#finish(false); // a reader takes its share only inside check()
  }

  #finish(acquired: boolean): boolean {
    if (this.#finished) return acquired;
    this.#finished = true;
    const left = this.#local.get(this.slot)! - 1;
    if (left === 0) this.#local.delete(this.slot);
    else this.#local.set(this.slot, left);
    // The thread's last waiting reader gone: its place in the queue goes too.
    if (left === 0 && (ownHolding(this.core, this.slot) & QUEUED_HOLD) !== 0) unqueue(this.core, this.slot, this.base);
    if (!acquired && this.slept) Atomics.notify(this.w, this.st, 1); // pass on a wake-up we may have taken
    return acquired;
  }
}

/** A writer: barges until FAIR_MS, then heir; announces itself, then waits for the readers inside to leave. */
class WriterWaiter extends RwWaiter {
  heir = false;
  announced = false;
  /** S_AUX (the heir) as check() last saw it. */
  #heirSeen = 0;
  #census = 0;
  readonly #aux: number;
  readonly #bell: number;

  constructor(core: TableCore, slot: number, base: number, wait: Wait, blocking: boolean) {
    super(core, slot, base, wait, blocking);
    this.exclusive = true;
    this.#aux = base + S_AUX;
    this.#bell = base + S_BELL;
  }

  check(): boolean {
    const { w, st, tid } = this, aux = this.#aux;
    for (;;) {
      const s = (this.s = Atomics.load(w, st));
      // Announced: no new reader comes in, those inside leave one by one.
      if ((s & OWNER_MASK) === tid) return (s & READERS_MASK) === 0;
      const heir = (this.#heirSeen = Atomics.load(w, aux));
      if ((s & (OWNER_MASK | QUEUED_MASK)) !== 0 || (heir !== 0 && heir !== tid)) return false;
      // With readers inside, announcing makes them (and the readers queued
      // behind us) wait for us: not past the deadline.
      if ((s & READERS_MASK) !== 0 && this.expired()) return false;
      // Having slept, keep PARKED set: others may still sleep behind us.
      if (Atomics.compareExchange(w, st, s, (s & ~ABANDONED) | tid | (this.slept ? PARKED : 0)) !== s) continue;
      this.announced = true;
      this.abandoned = (s & ABANDONED) !== 0;
      if (this.heir) { // after announcing, so that no writer barges in between
        this.heir = false;
        Atomics.compareExchange(w, aux, tid, 0);
      }
    }
  }

  publish(now: number): boolean {
    const { w, tid } = this, s = this.s;
    if ((s & OWNER_MASK) === tid) {
      // Announced, readers inside. One that died inside an update would keep
      // us out forever: count them against the holdings now and then.
      if (this.#census === 0) this.#census = this.start + CENSUS_MS;
      if (now >= this.#census) {
        this.#census = now + CENSUS_MS;
        if (census(this.core, this.slot, this.base)) return false;
      }
      return this.#parkOnBell(s, this.#census);
    }
    const heir = this.#heirSeen;
    if (!this.heir && heir === 0 && now - this.start >= FAIR_MS) {
      if (Atomics.compareExchange(w, this.#aux, 0, tid) === 0) this.heir = true;
      return false;
    }
    if (this.heir) return this.#parkOnBell(s, Infinity);
    // Wake at FAIR_MS to claim the heir's place before the next release.
    if (!this.parkOnState(s, heir === 0 && now - this.start < FAIR_MS ? this.start + FAIR_MS : Infinity)) return false;
    // An heir that withdraws after our read of S_AUX clears PARKED, which
    // changes the word we sleep on; one that withdrew before shows here.
    return Atomics.load(w, this.#aux) === heir;
  }

  #parkOnBell(s: number, until: number): boolean {
    const w = this.w, st = this.st;
    // Read the bell before publishing WPARKED: the waker changes the state
    // first and rings after, so a ring after this read ends the wait at once.
    const bell = Atomics.load(w, this.#bell);
    if ((s & WPARKED) === 0) {
      if (Atomics.compareExchange(w, st, s, s | WPARKED) !== s) return false;
    } else if (Atomics.load(w, st) !== s) {
      return false;
    }
    this.index = this.#bell;
    this.value = bell;
    this.until = until;
    return true;
  }

  override leave(reason: Reason): boolean {
    const { w, st, tid, base } = this;
    if (this.heir) {
      this.heir = false;
      Atomics.compareExchange(w, this.#aux, tid, 0);
      // Writers that stood back for the heir sleep on S_STATE: change the word so none sleeps through this.
      if ((Atomics.and(w, st, ~PARKED) & PARKED) !== 0) Atomics.notify(w, st);
    }
    if (this.announced) {
      this.announced = false;
      for (;;) {
        const s = Atomics.load(w, st);
        if ((s & OWNER_MASK) !== tid) break;
        if ((s & READERS_MASK) === 0) { // the last reader left first: it is ours
          if (reason !== ABORT) return true;
          // Abort wins: give it back, news of a dead holder included.
          writeUnlockSlow(this.core, this.slot, base, this.abandoned ? ABANDONED : 0);
          return false;
        }
        if (writerLeaves(w, base, s, 0)) break; // the readers queued behind us come in
      }
    }
    if (this.slept) Atomics.notify(w, st, 1); // pass on a wake-up we may have taken
    return false;
  }
}

function checkReader(core: TableCore, slot: number, base: number): void {
  if ((Atomics.load(core.words, base + S_STATE) & OWNER_MASK) === core.tid) {
    throw new ERR_LOCK_DEADLOCK(core.label(slot), core.acquiring[slot] === 1
      ? 'this thread is waiting for the write lock, and a reader would wait behind it'
      : 'this thread holds the write lock (downgrade() turns it into a read lock)');
  }
}

function checkWriter(core: TableCore, slot: number, base: number, sync: boolean): void {
  if (core.acquiring[slot] === 1) throw new ERR_LOCK_DEADLOCK(core.label(slot), 'this thread is already waiting for the write lock');
  if ((Atomics.load(core.words, base + S_STATE) & OWNER_MASK) === core.tid) {
    throw new ERR_LOCK_DEADLOCK(core.label(slot), 'this thread already holds the write lock');
  }
  const mine = ownHolding(core, slot);
  if ((mine & SHARES_MASK) !== 0) {
    throw new ERR_LOCK_DEADLOCK(core.label(slot), 'this thread holds a read share and would wait for itself (release it, or try tryUpgrade())');
  }
  if (sync && (mine & QUEUED_HOLD) !== 0) {
    throw new ERR_LOCK_DEADLOCK(core.label(slot), 'a reader of this thread is queued, and queued readers go before any writer');
  }
}

/** Blocking acquire after the fast path failed. Returns `abandoned`. */
export function acquireSync(core: TableCore, slot: number, base: number, wait: Wait, write: boolean): boolean {
  if (write) checkWriter(core, slot, base, true);
  else checkReader(core, slot, base);
  const waiter = write ? new WriterWaiter(core, slot, base, wait, true) : new ReaderWaiter(core, slot, base, wait, true);
  const ns = parkSync(waiter);
  if (ns !== NOT_CONTENDED) recordWait(core.f64, base, ns); // exact for writers; readers race here (approximate)
  return waiter.abandoned;
}

/** Async acquire after the fast path failed. Resolves `abandoned`. */
export async function acquireAsync(core: TableCore, slot: number, base: number, wait: Wait, write: boolean): Promise<boolean> {
  // Everything up to the first await in parkAsync runs synchronously inside readLock()/writeLock().
  if (write) checkWriter(core, slot, base, false);
  else checkReader(core, slot, base);
  const waiter = write ? new WriterWaiter(core, slot, base, wait, false) : new ReaderWaiter(core, slot, base, wait, false);
  const ns = await parkAsync(waiter);
  if (ns !== NOT_CONTENDED) recordWait(core.f64, base, ns);
  return waiter.abandoned;
}

/** Release the write lock after the one-CAS fast path failed. `keep` is ABANDONED to pass that news on. */
export function writeUnlockSlow(core: TableCore, slot: number, base: number, keep = 0): void {
  const w = core.words, st = base + S_STATE, tid = core.tid;
  for (;;) {
    const s = Atomics.load(w, st), owner = s & OWNER_MASK;
    if (owner !== tid) {
      if (owner === 0) throw new ERR_LOCK_NOT_LOCKED(core.label(slot));
      throw new ERR_LOCK_NOT_OWNER(core.label(slot), owner, tid);
    }
    if ((s & READERS_MASK) !== 0) throw new ERR_LOCK_NOT_LOCKED(`${core.label(slot)} (this thread still waits for its readers to leave)`);
    if (writerLeaves(w, base, s, keep)) return;
  }
}

/** Write lock → one read share, in one CAS: no writer can get in between. */
export function downgrade(core: TableCore, slot: number, base: number): void {
  const w = core.words, st = base + S_STATE, mine = ownHolding(core, slot), fresh = foundPair() === NONE;
  const at = pairToHold(core, slot); // ERR_LOCK_TABLE_FULL here leaves the lock as it was
  // Marked before the CAS (see the invariants).
  if (fresh) holdIn(w, at, slot, (mine + 1) | PENDING);
  else setCount(w, at, (mine + 1) | PENDING);
  for (;;) {
    const s = Atomics.load(w, st);
    const next = (s & ~(OWNER_MASK | PARKED | WPARKED)) + ONE_READER;
    if (Atomics.compareExchange(w, st, s, next) !== s) continue;
    setCount(w, at, mine + 1);
    // It is a read turn now: the readers queued behind the write lock come in with this share.
    wake(w, base, s, next, queuedOf(s) !== 0);
    return;
  }
}

/**
 * The read share of a thread holding no other → the write lock, if nobody
 * else is in, queued, heir or announced. Never waits. True on success.
 */
export function tryUpgrade(core: TableCore, slot: number, base: number): boolean {
  const w = core.words, st = base + S_STATE;
  if (ownHolding(core, slot) !== 1 || Atomics.load(w, base + S_AUX) !== 0) return false;
  const at = foundPair(), s = Atomics.load(w, st);
  if ((s & ~PARKED) !== ONE_READER) return false;
  setCount(w, at, 1 | PENDING); // marked before the CAS (see the invariants)
  if (Atomics.compareExchange(w, st, s, (s & PARKED) | core.tid) === s) {
    freePair(w, at); // the share is gone
    return true;
  }
  setCount(w, at, 1);
  return false;
}

/**
 * Readers the word counts that no thread's holdings name: shares of threads
 * that died between marking their entry PENDING and clearing the mark
 * (their recovery cannot tell whether the word changed). Only the announced
 * writer counts, while it waits for the readers: no reader can come in
 * then, so `readers` only falls, and a word that reads the same before and
 * after the scan lost nobody during it. Any PENDING entry means a thread is
 * inside an update: count again later. True if it gave some back.
 */
function census(core: TableCore, slot: number, base: number): boolean {
  const w = core.words, st = base + S_STATE, s = Atomics.load(w, st);
  let recorded = 0;
  for (let tid = 1; tid <= core.threads; tid++) {
    const count = holdingOf(core, tid, slot);
    if ((count & PENDING) !== 0) return false;
    if ((count & SHARES_MASK) !== 0) recorded++;
  }
  const lost = readersOf(s) - recorded;
  if (lost <= 0 || (s & OWNER_MASK) !== core.tid) return false;
  return Atomics.compareExchange(w, st, s, s - lost * ONE_READER) === s;
}

/** Release the write lock the dead thread `dead` held or announced, and its claim as heir. True if it had announced itself. */
export function recoverWriter(w: Int32Array, base: number, dead: number): boolean {
  const st = base + S_STATE;
  if (Atomics.compareExchange(w, base + S_AUX, dead, 0) === dead) {
    // Writers that stood back for it sleep on S_STATE: change the word, then wake them (see WriterWaiter.step).
    Atomics.and(w, st, ~PARKED);
    Atomics.notify(w, st);
  }
  let released = false;
  for (;;) {
    const s = Atomics.load(w, st);
    if ((s & OWNER_MASK) !== dead) break;
    // With readers still inside it was waiting for them and wrote nothing: not abandoned.
    if (!writerLeaves(w, base, s, (s & READERS_MASK) === 0 ? ABANDONED : 0)) continue;
    released = true;
    break;
  }
  // It may have taken a wake-up with it (a notify(1) it never passed on),
  // or died between its last Atomics.sub and the ring: wake every sleeper once.
  Atomics.notify(w, st);
  Atomics.notify(w, base + S_BELL);
  return released;
}

/** Give back the dead thread's shares and its place in the queue (`count` is its holdings entry). */
export function recoverReader(w: Int32Array, base: number, _dead: number, count: number): void {
  // Marked PENDING, it died inside an update of `readers` and nobody can
  // tell whether the word changed: the announced writer's census settles it.
  const st = base + S_STATE, shares = (count & PENDING) === 0 && (count & SHARES_MASK) !== 0;
  const queued = (count & QUEUED_HOLD) !== 0;
  if (!shares && !queued) return;
  for (;;) {
    const s = Atomics.load(w, st);
    let next = s;
    // Clamped at 0: a thread killed inside a window (see the invariants) may have left less.
    if (shares && (s & READERS_MASK) !== 0) next -= ONE_READER;
    if (queued && (s & QUEUED_MASK) !== 0) next -= ONE_QUEUED;
    if (next === s || Atomics.compareExchange(w, st, s, next) === s) break;
  }
  Atomics.notify(w, st);
  ring(w, base);
}

/**
 * Who the waiters of this slot wait for: the writer (unless it is itself
 * blocked here waiting for the readers, who are then listed) and every
 * thread holding a share.
 */
export function rwlockHolders(table: WatchedTable, base: number, slot: number): number[] {
  const w = table.words, s = Atomics.load(w, base + S_STATE), owner = s & OWNER_MASK, out: number[] = [];
  if (owner !== 0 && ((s & READERS_MASK) === 0 || Atomics.load(w, threadBase(owner) + T_WAIT_SLOT) !== slot + 1)) out.push(owner);
  if ((s & READERS_MASK) !== 0) {
    for (let tid = 1; tid <= table.threads; tid++) {
      if ((holdingOf(table, tid, slot) & SHARES_MASK) !== 0) out.push(tid);
    }
  }
  return out;
}

/** What recovery and deadlock detection need of a rwlock (kinds.ts, KIND_RWLOCK). */
export const rwlockKind: KindOps = { recoverOwned: recoverWriter, recoverHeld: recoverReader, holders: rwlockHolders };
