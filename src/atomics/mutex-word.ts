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
import type { TableCore } from './core.js';
import { cycleThrough } from './deadlock.js';
import { defineKind } from './kinds.js';
import { KIND_MUTEX, S_BELL, S_STATE, T_WAIT_SLOT, threadBase } from './layout.js';
import { SpinWait, recordWait, relax, remaining, waitAsyncUntil } from './wait.js';
import type { Wait } from './options.js';
import {
  ERR_LOCK_DEADLOCK, ERR_LOCK_NOT_LOCKED, ERR_LOCK_NOT_OWNER, ERR_LOCK_TIMEOUT, abortErrorFor,
} from '../errors.js';

export const OWNER_MASK = 0xfff;
export const HEIR_SHIFT = 12;
export const HEIR_MASK = 0xfff << HEIR_SHIFT;
export const PARKED = 1 << 24;
export const ABANDONED = 1 << 25;
export const FAIR_MS = 1;
/** How long a blocking heir spins for the hand-over before it sleeps (about one wake-up). */
export const HEIR_SPIN_NS = 20_000;

const heirOf = (s: number) => (s & HEIR_MASK) >>> HEIR_SHIFT;

const ACQUIRED = 0;
const PARK = 1;
const TIMED_OUT = 2;
const DEADLOCK = 3;

/**
 * One thread's attempt to take a contended mutex: the protocol, written once
 * for both drivers. `step()` either takes the lock or says which word to
 * sleep on (`index`) and the value to sleep on (`value`).
 */
class MutexWaiter {
  heir = false;
  slept = false;
  abandoned = false;
  /** Where to sleep, on which value, and until when (performance.now() ms). */
  index = 0;
  value = 0;
  until = 0;
  /** The state word as last seen by step(). */
  observed = 0;
  /** The cycle this wait would close, when step() says DEADLOCK. */
  cycle: string | null = null;
  readonly start = performance.now();
  readonly #w: Int32Array;
  readonly #st: number;
  readonly #bell: number;
  readonly #tid: number;
  readonly #core: TableCore;
  readonly #slot: number;

  constructor(core: TableCore, slot: number, base: number, readonly deadline: number, readonly blocking: boolean) {
    this.#core = core;
    this.#slot = slot;
    this.#w = core.words;
    this.#st = base + S_STATE;
    this.#bell = base + S_BELL;
    this.#tid = core.tid;
  }

  step(): typeof ACQUIRED | typeof PARK | typeof TIMED_OUT | typeof DEADLOCK {
    const w = this.#w, st = this.#st, tid = this.#tid;
    for (;;) {
      let s = Atomics.load(w, st);
      if (this.heir) {
        // Handed over: the unlocker wrote owner = tid and cleared heir in one CAS.
        if ((s & OWNER_MASK) === tid && heirOf(s) !== tid) return this.#tookOver(s);
        // Free with us as heir cannot arise (heir is claimed only while held, and
        // every release hands over), but if it did, take it rather than sleep.
        if ((s & OWNER_MASK) === 0 && Atomics.compareExchange(w, st, s, tid | (s & (PARKED | ABANDONED))) === s) continue;
      } else if ((s & (OWNER_MASK | HEIR_MASK)) === 0) {
        // Free. Having slept, keep PARKED set: others may still be asleep.
        const next = tid | (this.slept ? PARKED : s & PARKED);
        if (Atomics.compareExchange(w, st, s, next) === s) {
          this.abandoned = (s & ABANDONED) !== 0;
          return ACQUIRED;
        }
        continue;
      }
      const now = performance.now();
      if (now >= this.deadline) return this.heir && this.withdraw() ? ACQUIRED : TIMED_OUT;
      if (!this.heir && heirOf(s) === 0 && now - this.start >= FAIR_MS) {
        // Having slept, we may have been woken by the unlock that cleared
        // PARKED: set it again, or the sleepers behind us are forgotten.
        const next = s | (tid << HEIR_SHIFT) | (this.slept ? PARKED : 0);
        if (Atomics.compareExchange(w, st, s, next) === s) this.heir = true;
        continue;
      }
      // Before a blocking sleep: would it close a cycle of waiting threads?
      // (Not for async waits: the thread keeps running, and another of its
      // tasks may release what the thread holds, so a cycle through it is
      // not proof of a deadlock.)
      if (this.blocking && (this.cycle = cycleThrough(this.#core, this.#slot)) !== null) {
        return this.heir && this.withdraw() ? ACQUIRED : DEADLOCK;
      }
      if (this.heir) {
        // Read the bell before re-reading the state: the unlocker changes the
        // state first and rings after, so a hand-over between the two reads
        // changes the bell and the wait returns at once.
        const bell = Atomics.load(w, this.#bell);
        if (Atomics.load(w, st) !== s) continue;
        this.observed = s;
        this.index = this.#bell;
        this.value = bell;
        this.until = this.deadline;
        return PARK;
      }
      if ((s & PARKED) === 0) {
        // Publish PARKED *before* sleeping, else the unlocker may skip notify.
        if (Atomics.compareExchange(w, st, s, s | PARKED) !== s) continue;
        s |= PARKED;
      }
      this.index = st;
      this.value = s;
      this.slept = true;
      // Wake at FAIR_MS, still waiting, to claim the heir bits *before* the
      // next unlock, so that unlock hands over instead of freeing the word.
      this.until = heirOf(s) === 0 && now - this.start < FAIR_MS ? Math.min(this.deadline, this.start + FAIR_MS) : this.deadline;
      return PARK;
    }
  }

  /**
   * Leave the heir position (timeout, abort). Returns true if the lock was
   * handed over first: the caller then holds it.
   */
  withdraw(): boolean {
    const w = this.#w, st = this.#st, tid = this.#tid;
    for (;;) {
      const s = Atomics.load(w, st);
      if (heirOf(s) === tid) {
        if (Atomics.compareExchange(w, st, s, s & ~HEIR_MASK) !== s) continue;
        this.heir = false;
        return false;
      }
      this.heir = false;
      return (s & OWNER_MASK) === tid && this.#tookOver(s) === ACQUIRED;
    }
  }

  /**
   * Leave without the lock. A waiter that slept may have been woken by the
   * unlock that cleared PARKED: pass that wake-up on, or the next sleeper
   * stays asleep behind a free lock.
   */
  giveUp<E>(error: E): E {
    if (this.slept) Atomics.notify(this.#w, this.#st, 1);
    return error;
  }

  #tookOver(s: number): typeof ACQUIRED {
    this.heir = false;
    if ((s & ABANDONED) !== 0) {
      this.abandoned = true;
      Atomics.and(this.#w, this.#st, ~ABANDONED);
    }
    return ACQUIRED;
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

/** Spin up to HEIR_SPIN_NS while `w[i]` still reads `value`; true if it changed. */
function spinUntilChanged(w: Int32Array, i: number, value: number): boolean {
  const end = performance.now() + HEIR_SPIN_NS / 1e6;
  for (;;) {
    for (let n = 0; n < 16; n++) {
      if (Atomics.load(w, i) !== value) return true;
      relax(64); // re-read every ~100 ns, not in a tight loop: leave the line to the holder
    }
    if (performance.now() >= end) return false;
  }
}

/** Blocking acquire after the fast path failed. Returns `abandoned`. */
export function lockSlowSync(core: TableCore, slot: number, base: number, wait: Wait): boolean {
  checkNotMine(core, slot, base);
  const w = core.words, st = base + S_STATE, tid = core.tid;
  if (wait.timeout > 0) {
    // Spin briefly, backing off: a short critical section on the other core
    // ends sooner than a park/unpark round trip. Never while others already
    // sleep: they are ahead of us.
    const spin = new SpinWait();
    for (let s = Atomics.load(w, st); (s & PARKED) === 0; s = Atomics.load(w, st)) {
      if ((s & (OWNER_MASK | HEIR_MASK)) === 0 && Atomics.compareExchange(w, st, s, tid) === s) {
        recordWait(core.f64, base, 0); // contended, but not timed: a clock read costs ~100 ns here
        return (s & ABANDONED) !== 0;
      }
      if (!spin.spin()) break;
    }
  }
  const waiter = new MutexWaiter(core, slot, base, wait.deadline, true);
  const waitSlot = threadBase(tid) + T_WAIT_SLOT;
  Atomics.store(w, waitSlot, slot + 1);
  try {
    for (;;) {
      const step = waiter.step();
      if (step === ACQUIRED) break;
      if (step === TIMED_OUT) throw waiter.giveUp(new ERR_LOCK_TIMEOUT(core.label(slot), wait.timeout));
      if (step === DEADLOCK) throw waiter.giveUp(new ERR_LOCK_DEADLOCK(core.label(slot), waiter.cycle!));
      // The heir spins before it sleeps: the hand-over usually comes within
      // one short critical section, and a sleeping heir would hold the lock
      // idle for a whole wake-up (~30-100 µs) after it is handed over.
      if (waiter.heir && spinUntilChanged(w, st, waiter.observed)) continue;
      switch (Atomics.wait(w, waiter.index, waiter.value, remaining(waiter.until))) {
        case 'ok': case 'not-equal': case 'timed-out': continue; // step() re-reads the word in every case
      }
    }
  } finally {
    Atomics.store(w, waitSlot, 0);
  }
  recordWait(core.f64, base, (performance.now() - waiter.start) * 1e6);
  return waiter.abandoned;
}

/** Async acquire after the fast path failed. Resolves `abandoned`. */
export async function lockSlowAsync(core: TableCore, slot: number, base: number, wait: Wait): Promise<boolean> {
  // Everything up to the first await runs synchronously inside lock().
  checkNotMine(core, slot, base);
  const { signal } = wait;
  const waiter = new MutexWaiter(core, slot, base, wait.deadline, false);
  core.acquiring[slot] = 1;
  try {
    for (;;) {
      const step = waiter.step();
      if (step === ACQUIRED) break;
      if (step === TIMED_OUT) throw waiter.giveUp(new ERR_LOCK_TIMEOUT(core.label(slot), wait.timeout));
      if (step === DEADLOCK) throw waiter.giveUp(new ERR_LOCK_DEADLOCK(core.label(slot), waiter.cycle!));
      await waitAsyncUntil(core.words, waiter.index, waiter.value, waiter.until, signal);
      if (signal?.aborted) {
        // Handed over while the abort was on its way: give it back, and if it
        // came from a dead holder, pass that news on to the next owner.
        if (waiter.heir && waiter.withdraw()) unlockSlow(core, slot, base, waiter.abandoned ? ABANDONED : 0);
        throw waiter.giveUp(abortErrorFor(signal));
      }
    }
  } finally {
    core.acquiring[slot] = 0;
  }
  recordWait(core.f64, base, (performance.now() - waiter.start) * 1e6);
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

defineKind(KIND_MUTEX, {
  recoverOwned: recoverMutex,
  holders: (table, base) => {
    const owner = Atomics.load(table.words, base + S_STATE) & OWNER_MASK;
    return owner === 0 ? [] : [owner];
  },
});
