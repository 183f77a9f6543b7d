/**
 * The mutex state word (slot word S_STATE) and everything that is not the
 * fast path: the wait protocol shared by the blocking and async acquire, the
 * contended unlock, and the recovery of a dead holder.
 *
 * ```
 *  bit 31      26   25          24       23       12  11        0
 *     [ unused   | ABANDONED | PARKED | heir tid    | owner tid   ]
 * ```
 *
 * owner      tid of the holder; 0 when free.
 * heir       tid of a waiter that has waited FAIR_MS or more; while it is
 *            set, nobody but the heir can take the lock.
 * PARKED     a thread may be asleep on S_STATE: unlock must notify.
 * ABANDONED  the last holder died holding the lock; the next owner is told
 *            (`guard.abandoned`) and clears the bit.
 *
 * | state                 | meaning                         | unlock does                        |
 * |-----------------------|---------------------------------|------------------------------------|
 * | 0                     | free                            | (lock: CAS 0 → tid, the fast path) |
 * | tid                   | held, nobody asleep             | CAS tid → 0, the fast path         |
 * | tid │ PARKED          | held, sleepers may exist        | store 0, notify(S_STATE, 1)        |
 * | tid │ heir<<12 │ …    | held, a starving waiter is next | owner := heir in one CAS, ring bell|
 * | ABANDONED │ …         | free, its holder died           | (lock: slow path, reports it)      |
 *
 * Invariants (no lost wake-ups, no grant to the dead):
 * - A waiter sets PARKED with a CAS and then sleeps on exactly the value it
 *   wrote; Atomics.wait compares and enqueues atomically, so an unlock that
 *   clears PARKED after that CAS always finds it to notify.
 * - Only an unlock clears PARKED, and it notifies when it does. A thread that
 *   slept and then takes the lock sets PARKED again, since others may still
 *   sleep: at worst one notify finds nobody (Drepper, "Futexes are tricky").
 * - heir is written by the heir itself (claim, withdraw), by the unlock that
 *   hands over to it, and by the recovery of its dead thread, each one CAS
 *   that requires heir == that tid. Once recovery has cleared a dead heir,
 *   no later CAS can hand the lock to it.
 *
 * # Fairness
 * Barging by default: an unlock frees the word and any thread may take it,
 * which keeps the lock hot in the cache of whoever runs (throughput). A
 * waiter that has waited FAIR_MS (1 ms) wakes by itself and claims the heir
 * bits; from then on the lock is handed to it directly on the next
 * unlock, and newcomers cannot barge. One heir at a time: a second starving
 * waiter claims the bits after the first is served. So a waiter among N
 * contenders is served within about 1 ms + N × (longest critical section +
 * one wake-up), as in Go's sync.Mutex starvation mode (1 ms) and
 * parking_lot's eventual fairness (0.5 ms on average).
 */
import type { KindOps, TableCore } from './core.js';
import { S_BELL, S_STATE } from './layout.js';
import type { Wait } from './options.js';
import { ABORT, NOT_CONTENDED, type Reason, Waiter, parkAsync, parkSync } from './park.js';
import { SpinWait, recordWait, watch } from './wait.js';
import { ERR_LOCK_DEADLOCK, ERR_LOCK_NOT_LOCKED, ERR_LOCK_NOT_OWNER } from '../errors.js';

export const OWNER_MASK = 0xfff;
export const HEIR_SHIFT = 12;
export const HEIR_MASK = 0xfff << HEIR_SHIFT;
export const PARKED = 1 << 24;
export const ABANDONED = 1 << 25;
export const FAIR_MS = 1;
/** How long a blocking heir spins for the hand-over before it sleeps (about one wake-up). */
export const HEIR_SPIN_NS = 20_000;

const heirOf = (s: number) => (s & HEIR_MASK) >>> HEIR_SHIFT;

/**
 * One thread's wait for a contended mutex, as park.ts drives it (blocking
 * or async): take the lock when it is free, or when it is handed over to
 * this thread as heir; else publish PARKED and sleep on S_STATE, or, as
 * heir, sleep on S_BELL until the hand-over.
 */
class MutexWaiter extends Waiter {
  heir = false;
  /** Slept on S_STATE at least once: may have taken a wake-up meant for another (see leave). */
  slept = false;
  abandoned = false;
  /** The state word as check() last saw it. */
  #s = 0;
  /** The backoff before the first park (blocking waits); null once spent. */
  #spin: SpinWait | null;
  readonly #w: Int32Array;
  readonly #st: number;
  readonly #bell: number;
  readonly #tid: number;
  readonly #base: number;

  constructor(core: TableCore, slot: number, base: number, wait: Wait, blocking: boolean) {
    super(core, slot, wait, blocking);
    this.exclusive = true;
    this.#w = core.words;
    this.#st = base + S_STATE;
    this.#bell = base + S_BELL;
    this.#tid = core.tid;
    this.#base = base;
    this.#spin = blocking ? new SpinWait() : null;
  }

  check(): boolean {
    const w = this.#w, st = this.#st, tid = this.#tid;
    for (;;) {
      const s = Atomics.load(w, st);
      if (this.heir) {
        // Handed over: the unlocker wrote owner = tid and cleared heir in one CAS.
        if ((s & OWNER_MASK) === tid && heirOf(s) !== tid) return this.#tookOver(s);
        // Free with us as heir cannot arise (heir is claimed only while held, and
        // every release hands over), but if it did, take it rather than sleep.
        if ((s & OWNER_MASK) === 0 && Atomics.compareExchange(w, st, s, tid | (s & (PARKED | ABANDONED))) === s) continue;
      } else if ((s & (OWNER_MASK | HEIR_MASK)) === 0) {
        // Free. Having slept, keep PARKED set: others may still be asleep.
        if (Atomics.compareExchange(w, st, s, tid | (this.slept ? PARKED : s & PARKED)) !== s) continue;
        this.abandoned = (s & ABANDONED) !== 0;
        return true;
      }
      this.#s = s;
      return false;
    }
  }

  override spin(): boolean {
    // The heir spins before it sleeps: the hand-over usually comes within
    // one short critical section, and a sleeping heir would hold the lock
    // idle for a whole wake-up (~30-100 µs) after it is handed over.
    if (this.heir) return watch(this.#w, this.#st, this.#s, performance.now() + HEIR_SPIN_NS / 1e6);
    // Others spin briefly, backing off, before their first park: a short
    // critical section on the other core ends sooner than a park/unpark
    // round trip. Never while others already sleep: they are ahead of us.
    if (this.#spin !== null && (this.#s & PARKED) === 0 && this.#spin.spin()) return true;
    this.#spin = null;
    return false;
  }

  publish(now: number): boolean {
    const w = this.#w, st = this.#st;
    let s = this.#s;
    if (!this.heir && heirOf(s) === 0 && now - this.start >= FAIR_MS) {
      // Having slept, we may have been woken by the unlock that cleared
      // PARKED: set it again, or the sleepers behind us are forgotten.
      if (Atomics.compareExchange(w, st, s, s | (this.#tid << HEIR_SHIFT) | (this.slept ? PARKED : 0)) === s) this.heir = true;
      return false;
    }
    if (this.heir) {
      // Read the bell before re-reading the state: the unlocker changes the
      // state first and rings after, so a hand-over between the two reads
      // changes the bell and the wait returns at once.
      const bell = Atomics.load(w, this.#bell);
      if (Atomics.load(w, st) !== s) return false;
      this.index = this.#bell;
      this.value = bell;
      this.until = Infinity;
      return true;
    }
    if ((s & PARKED) === 0) {
      // Publish PARKED *before* sleeping, else the unlocker may skip notify.
      if (Atomics.compareExchange(w, st, s, s | PARKED) !== s) return false;
      s |= PARKED;
    }
    this.index = st;
    this.value = s;
    this.slept = true;
    // Wake at FAIR_MS, still waiting, to claim the heir bits *before* the
    // next unlock, so that unlock hands over instead of freeing the word.
    this.until = heirOf(s) === 0 && now - this.start < FAIR_MS ? this.start + FAIR_MS : Infinity;
    return true;
  }

  override leave(reason: Reason): boolean {
    if (this.heir && this.#withdraw()) {
      if (reason !== ABORT) return true; // handed over just in time: ours
      // Abort wins: give it back, and if it came from a dead holder, pass that news on.
      unlockSlow(this.core, this.slot, this.#base, this.abandoned ? ABANDONED : 0);
    }
    // Leave without the lock. A waiter that slept may have been woken by the
    // unlock that cleared PARKED: pass that wake-up on, or the next sleeper
    // stays asleep behind a free lock.
    if (this.slept) Atomics.notify(this.#w, this.#st, 1);
    return false;
  }

  /** Leave the heir position. True if the lock was handed over first: this thread holds it. */
  #withdraw(): boolean {
    const w = this.#w, st = this.#st, tid = this.#tid;
    for (;;) {
      const s = Atomics.load(w, st);
      if (heirOf(s) === tid) {
        if (Atomics.compareExchange(w, st, s, s & ~HEIR_MASK) !== s) continue;
        this.heir = false;
        return false;
      }
      this.heir = false;
      return (s & OWNER_MASK) === tid && this.#tookOver(s);
    }
  }

  #tookOver(s: number): true {
    this.heir = false;
    if ((s & ABANDONED) !== 0) {
      this.abandoned = true;
      Atomics.and(this.#w, this.#st, ~ABANDONED);
    }
    return true;
  }
}

function checkNotMine(core: TableCore, slot: number, base: number): void {
  if ((Atomics.load(core.words, base + S_STATE) & OWNER_MASK) === core.tid) {
    throw new ERR_LOCK_DEADLOCK(core.label(slot), 'this thread already holds it');
  }
  if (core.acquiring[slot] === 1) {
    throw new ERR_LOCK_DEADLOCK(core.label(slot), 'this thread is already waiting for it');
  }
}

/** Blocking acquire after the fast path failed. Returns `abandoned`. */
export function lockSlowSync(core: TableCore, slot: number, base: number, wait: Wait): boolean {
  checkNotMine(core, slot, base);
  const waiter = new MutexWaiter(core, slot, base, wait, true);
  const ns = parkSync(waiter);
  if (ns !== NOT_CONTENDED) recordWait(core.f64, base, ns); // by the new holder: exact
  return waiter.abandoned;
}

/** Async acquire after the fast path failed. Resolves `abandoned`. */
export async function lockSlowAsync(core: TableCore, slot: number, base: number, wait: Wait): Promise<boolean> {
  // Everything up to the first await in parkAsync runs synchronously inside lock().
  checkNotMine(core, slot, base);
  const waiter = new MutexWaiter(core, slot, base, wait, false);
  const ns = await parkAsync(waiter);
  if (ns !== NOT_CONTENDED) recordWait(core.f64, base, ns);
  return waiter.abandoned;
}

/**
 * One attempt after the fast path's CAS failed: the word may be free with
 * PARKED or ABANDONED set. Returns `abandoned`, or undefined when held.
 */
export function tryLockSlow(core: TableCore, base: number): boolean | undefined {
  const w = core.words, st = base + S_STATE;
  for (;;) {
    const s = Atomics.load(w, st);
    if ((s & (OWNER_MASK | HEIR_MASK)) !== 0) return undefined;
    if (Atomics.compareExchange(w, st, s, core.tid | (s & PARKED)) === s) return (s & ABANDONED) !== 0;
  }
}

/**
 * Unlock after the one-CAS fast path failed: flags set, or not ours. `keep`
 * is ABANDONED when a lock that came from a dead holder is given back unused.
 */
export function unlockSlow(core: TableCore, slot: number, base: number, keep = 0): void {
  const w = core.words, st = base + S_STATE, tid = core.tid;
  for (;;) {
    const s = Atomics.load(w, st);
    const owner = s & OWNER_MASK;
    if (owner !== tid) {
      if (owner === 0) throw new ERR_LOCK_NOT_LOCKED(core.label(slot));
      throw new ERR_LOCK_NOT_OWNER(core.label(slot), owner, tid);
    }
    const heir = heirOf(s);
    if (heir !== 0) {
      // Hand over: the heir owns the lock from this CAS on, nobody can barge in between.
      if (Atomics.compareExchange(w, st, s, heir | (s & PARKED) | keep) !== s) continue;
      ringBell(w, base);
      return;
    }
    if (Atomics.compareExchange(w, st, s, keep) !== s) continue;
    if ((s & PARKED) !== 0) Atomics.notify(w, st, 1);
    return;
  }
}

function ringBell(w: Int32Array, base: number): void {
  Atomics.add(w, base + S_BELL, 1);
  // Every waiter: only heirs sleep here, at most one live, plus any woken by an abort.
  Atomics.notify(w, base + S_BELL);
}

/**
 * Release whatever the dead thread `dead` held or claimed in this mutex;
 * true if it held it. Runs after the thread has stopped (it can write
 * nothing more) and after its registry entry was marked recovering.
 */
export function recoverMutex(w: Int32Array, base: number, dead: number): boolean {
  const st = base + S_STATE;
  let released = false;
  for (;;) {
    const s = Atomics.load(w, st);
    const owner = s & OWNER_MASK;
    let heir = heirOf(s);
    if (owner !== dead && heir !== dead) break;
    if (heir === dead) heir = 0;
    const next = owner === dead
      ? heir | (s & PARKED) | ABANDONED // released, or handed to the heir, and marked
      : (s & ~HEIR_MASK) | (heir << HEIR_SHIFT);
    if (Atomics.compareExchange(w, st, s, next) !== s) continue;
    released = owner === dead;
    if (released && heir !== 0) ringBell(w, base);
    break;
  }
  // The dead thread may have taken a wake-up with it: woken by an unlock's
  // notify(1) (which cleared PARKED) and killed before it could pass it on,
  // or left a wait in V8's waiter list that a notify(1) would pick. Wake
  // every sleeper once; each re-checks the word.
  Atomics.notify(w, st);
  Atomics.notify(w, base + S_BELL);
  return released;
}

/** What recovery and deadlock detection need of a mutex (kinds.ts, KIND_MUTEX). */
export const mutexKind: KindOps = {
  recoverOwned: recoverMutex,
  holders: (table, base) => {
    const owner = Atomics.load(table.words, base + S_STATE) & OWNER_MASK;
    return owner === 0 ? [] : [owner];
  },
};
