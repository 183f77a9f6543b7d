// Request-queue recovery against the races a review found (each failed
// before its fix): a repair that brought back a node of a dead thread whose
// own recovery was put off; a repair that trusted a node's stale N_SLOT
// while a live thread moved the node into another queue (exclusion broken
// there); a thread terminated while it named a fresh slot (the slot stayed
// CLAIMING and every lookup past it spun forever); and a worker's exit
// listener taking a lock with a node its own exit hook had given back; and
// a thread that died while it recovered another (that one stayed
// T_RECOVERING for ever, its locks held).
import { describe, expect, test } from 'vitest';
import { Worker } from 'node:worker_threads';
import * as Q from '../src/atomics/queue/word.js';
import { NODE_WORDS, T_DEAD_MARK, T_LIVE, T_RECOVERER, T_RECOVERING, nodeRegionOf, threadBase } from '../src/atomics/layout.js';
import { recoverThread } from '../src/atomics/threads.js';
import { LockTable, locks } from '../src/index.js';
import { control, exited, fixture, result, until } from './helpers.js';

const slots = 2, threads = 4;
const region = nodeRegionOf(slots, threads);

function pool(nodes: number, extraBytes = 0) {
  const buf = new SharedArrayBuffer((region + nodes * NODE_WORDS) * 4 + extraBytes);
  const w = new Int32Array(buf, 0, region + nodes * NODE_WORDS);
  return { buf, p: { words: w, f64: new Float64Array(buf, 0, (region + nodes * NODE_WORDS) / 2), region, nodes, slots, threads } };
}

describe('request-queue repair', () => {
  test('leaves out, for good, the nodes of a dead thread whose recovery was put off', () => {
    const { p } = pool(2 * slots + 8);
    const w = p.words, S = 0, a = Q.anchorOf(p, S);
    const D = 1, D2 = 2, W = 3, X = 4;
    for (const tid of [D, D2, W, X]) w[threadBase(tid) + T_LIVE] = 100 + tid;
    const request = (node: number, tid: number, mode: number) => {
      const at = Q.nodeAt(p, node);
      w[at + Q.N_OWNER] = tid;
      w[at + Q.N_MODE] = mode;
      return Q.enqueue(Q.placeOf(p, S, false), node, tid, []).outcome;
    };
    const held = () => {
      const out: number[] = [];
      for (let n = w[a + Q.A_HELD]; n !== 0; n = w[Q.nodeAt(p, n - 1) + Q.N_NEXT]) out.push(n - 1);
      return out;
    };
    const nD = 4, nD2 = 5, nW = 6, nX = 7;
    request(nD, D, Q.MODE_EXCLUSIVE);
    request(nW, W, Q.MODE_EXCLUSIVE);
    request(nD2, D2, Q.MODE_SHARED);
    expect(held()).toEqual([nD]);
    // D dies: its recovery repairs S (W is granted) but is put off on another slot, its nodes not yet freed.
    w[threadBase(D) + T_LIVE] = T_RECOVERING;
    expect(Q.repair(Q.placeOf(p, S, false), D)).toBe(true);
    Q.settle(Q.placeOf(p, S, false), D, []);
    expect(held()).toEqual([nW]);
    // D2 dies too, and its recovery repairs S: D's node must not come back.
    w[threadBase(D2) + T_LIVE] = T_RECOVERING;
    Q.repair(Q.placeOf(p, S, false), D2);
    Q.settle(Q.placeOf(p, S, false), D2, []);
    expect(held()).toEqual([nW]);
    expect(w[a + Q.A_HELD_COUNT]).toBe(1);
    // D's put-off recovery ends (queue/recovery.ts frees its nodes); W lets go; X is granted at once.
    w[Q.nodeAt(p, nD) + Q.N_STATE] = Q.FREE;
    w[Q.nodeAt(p, nD) + Q.N_OWNER] = 0;
    Q.release(Q.placeOf(p, S, false), nW, W, []);
    expect(request(nX, X, Q.MODE_EXCLUSIVE)).toBe(Q.ENQ_GRANTED);
  });

  test('never acts on a node a live thread is moving into another queue (N_SLOT read again after the state)', async () => {
    const nodes = 2 * slots + 4;
    const { buf, p } = pool(nodes, 16);
    p.words[threadBase(2) + T_LIVE] = 102; // the mover is live; the repairer recovers tid 3, which had nothing in S
    const ms = 1500;
    const [mover, repairer] = ['mover', 'repairer'].map((role) => new Worker(fixture('queue-races'), { workerData: { role, buf, ms } }));
    const [m, r] = await Promise.all([result<{ rounds: number; bad: string }>(mover!), result<{ repairs: number }>(repairer!)]);
    expect(m.bad).toBe('');
    expect(m.rounds).toBeGreaterThan(100);
    expect(r.repairs).toBeGreaterThan(100);
  });
});

describe('request-queue recovery of a terminated thread', () => {
  test('one terminated while it named a fresh slot: the claim is undone, and the name can be used at once', async () => {
    const name = `queue-races-claim-${process.pid}`;
    locks.lockSync('queue-races-warm-up')!.unlock();
    const claimer = new Worker(fixture('queue-races'), { workerData: { role: 'claimer', name } });
    expect(await result(claimer)).toBe('claiming');
    await claimer.terminate();
    // Looked up from another thread: a lookup that spins on the claim would block this one's timers too.
    const other = new Worker(`const { locks } = await import(${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)});
      const g = locks.lockSync(${JSON.stringify(name)}, { timeout: 2000 });
      g.unlock(); // before the answer: the test terminates this worker when it has it
      (await import('node:worker_threads')).parentPort.postMessage(g.name);`, { eval: true });
    try {
      const answer = await Promise.race([result(other), new Promise((r) => setTimeout(() => r('still spinning after 5 s'), 5000))]);
      expect(answer).toBe(name);
    } finally {
      await other.terminate();
    }
    const g = locks.lockSync(name, { timeout: 2000 })!;
    expect(g.abandoned).toBe(false);
    g.unlock();
  });

  test('a lock taken in a worker\'s exit listener, after latchkey\'s exit hook ran, is recovered', async () => {
    const name = `queue-races-exit-${process.pid}`;
    const w = new Worker(fixture('queue-races'), { workerData: { role: 'exit-listener', name } });
    await exited(w);
    const g = locks.lockSync(name, { timeout: 2000 })!;
    expect(g.abandoned).toBe(true);
    g.unlock();
  });
});

describe('a recovery whose recoverer dies', () => {
  test('is resumed by the recoverer\'s own recovery: the dead holder\'s mutex is released, abandoned', async () => {
    const table = LockTable.default(), name = `queue-races-orphan-${process.pid}`, ctl = control(4);
    const w = new Worker(fixture('hold'), { workerData: { table: null, name, then: 'terminate', control: ctl.buffer } });
    await until(ctl, 0, 1);
    const { words } = LockTable.unsafeExposeInternals(table).core, entry = threadBase(ctl[2]!);
    // As a thread that began recovering it and died at once would leave it (recoverer: a thread id nobody has).
    const mark = Atomics.load(words, entry + T_LIVE), ghost = 1_000_000;
    expect(Atomics.compareExchange(words, entry + T_LIVE, mark, T_RECOVERING)).toBe(mark);
    Atomics.store(words, entry + T_DEAD_MARK, mark);
    Atomics.store(words, entry + T_RECOVERER, ghost);
    await w.terminate(); // its 'exit' recovers nothing: the entry is somebody else's to recover
    expect(() => table.mutex(name).lockSync({ timeout: 100 })).toThrow(expect.objectContaining({ code: 'ERR_LOCK_TIMEOUT' }));
    recoverThread(LockTable.unsafeExposeInternals(table).core, ghost, true); // the recoverer's death is delivered
    const g = table.mutex(name).lockSync({ timeout: 1000 });
    expect(g.abandoned).toBe(true);
    g.unlock();
    expect(Atomics.load(words, entry + T_LIVE)).toBe(0); // the entry is free again
  });
});
