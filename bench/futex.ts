/**
 * The futex reference: Drepper's 3-state mutex ("Futexes are tricky",
 * mutex2), in plain JS on one Int32 word. 0 free, 1 locked, 2 locked with
 * possible waiters. No owner, no spin, no fairness, no timeouts: the floor a
 * feature-complete mutex is measured against.
 */
export function futexLock(w: Int32Array, i: number): void {
  let c = Atomics.compareExchange(w, i, 0, 1);
  if (c === 0) return;
  if (c !== 2) c = Atomics.exchange(w, i, 2);
  while (c !== 0) {
    Atomics.wait(w, i, 2);
    c = Atomics.exchange(w, i, 2);
  }
}

export function futexUnlock(w: Int32Array, i: number): void {
  if (Atomics.sub(w, i, 1) !== 1) {
    Atomics.store(w, i, 0);
    Atomics.notify(w, i, 1);
  }
}
