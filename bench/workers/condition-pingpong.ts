// One side of a ping-pong between two workers. latchkey: one Mutex and one
// Condition; wait (predicate loop) for my turn, hand the turn over, notify(1)
// while still holding the mutex ('holding'), or after releasing it and
// before taking it again ('after-unlock').
// raw: the same turn word with bare Atomics.wait/notify (or waitAsync), no lock.
// Side 0 times `rounds` round trips (its turn → the other's → its turn again).
// shared words: [0] whose turn (latchkey) / the raw word, [1] start count.
import { parentPort, workerData } from 'node:worker_threads';
import { LockTable } from '../../src/index.js';

const { kind, how, pattern = 'holding', table, shared, me, rounds } = workerData as {
  kind: 'latchkey' | 'raw'; how: 'sync' | 'async'; pattern?: 'holding' | 'after-unlock';
  table: SharedArrayBuffer; shared: SharedArrayBuffer; me: 0 | 1; rounds: number;
};
const s = new Int32Array(shared);
const t = LockTable.attach(table);
const m = t.mutex('bench:pp');
const cv = t.condition('bench:pp:cv');

Atomics.add(s, 1, 1);
while (Atomics.load(s, 1) < 2); // start together
const t0 = performance.now();
if (kind === 'latchkey') {
  let g = how === 'sync' ? m.lockSync() : await m.lock();
  for (let r = 0; r < rounds; r++) {
    while (s[0] !== me) {
      if (how === 'sync') cv.waitSync(g);
      else await cv.wait(g);
    }
    s[0] = 1 - me;
    if (pattern === 'holding') {
      cv.notify();
    } else {
      g.unlock();
      cv.notify();
      g = how === 'sync' ? m.lockSync() : await m.lock();
    }
  }
  g.unlock();
} else {
  // Side 0 owns value 0 → 1, side 1 owns 1 → 0; each sleeps while the word is the other's value.
  const mine = me === 0 ? 0 : 1, theirs = 1 - mine;
  // A pending Atomics.waitAsync does not keep a worker alive (design.md, gotchas).
  const keepAlive = how === 'async' ? setInterval(() => {}, 1 << 30) : undefined;
  for (let r = 0; r < rounds; r++) {
    for (let v = Atomics.load(s, 0); v !== mine; v = Atomics.load(s, 0)) {
      if (how === 'sync') Atomics.wait(s, 0, v);
      else { const w = Atomics.waitAsync(s, 0, v); if (w.async) await w.value; }
    }
    Atomics.store(s, 0, theirs);
    Atomics.notify(s, 0, 1);
  }
  clearInterval(keepAlive);
}
parentPort!.postMessage({ us: ((performance.now() - t0) * 1000) / rounds });
