import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { result, start } from './helpers.js';

type How = 'sync' | 'async';
interface Outcome { ok: boolean; done: number; waits: number; code?: string; message?: string }

/**
 * `producers` × `items` items through a queue of `cap` slots to `consumers`
 * consumers, every notify a notify(1). A lost wake-up leaves a thread asleep
 * while the other side waits for it: it surfaces as ERR_LOCK_TIMEOUT.
 */
async function run(hows: { producers: How[]; consumers: How[] }, items: number, cap: number) {
  const table = LockTable.create({ slots: 16 });
  const total = hows.producers.length * items;
  const queue = new SharedArrayBuffer((8 + cap) * 4);
  const seen = new SharedArrayBuffer(total * 4);
  const common = { table: table.buffer, items, total, cap, queue, seen, timeout: 10_000 };
  const workers = [
    ...hows.producers.map((how, id) => start('condition-queue', { ...common, role: 'producer', how, id })),
    ...hows.consumers.map((how, id) => start('condition-queue', { ...common, role: 'consumer', how, id })),
  ];
  const outcomes = await Promise.all(workers.map((w) => result<Outcome>(w)));
  return { table, outcomes, seen: new Int32Array(seen), q: new Int32Array(queue), total };
}

describe('Condition: producers and consumers on a bounded queue (one Mutex, two Conditions)', () => {
  test.each([
    ['sync', { producers: ['sync', 'sync', 'sync'], consumers: ['sync', 'sync', 'sync'] }],
    ['async', { producers: ['async', 'async', 'async'], consumers: ['async', 'async', 'async'] }],
    ['mixed', { producers: ['sync', 'async', 'sync'], consumers: ['async', 'sync', 'async'] }],
  ] as Array<[string, { producers: How[]; consumers: How[] }]>)(
    '%s: every item produced is consumed exactly once, with no hang', async (_name, hows) => {
      const items = 3000, cap = 4;
      const { table, outcomes, seen, q, total } = await run(hows, items, cap);
      for (const o of outcomes) expect(o).toMatchObject({ ok: true });
      const produced = outcomes.slice(0, hows.producers.length).reduce((n, o) => n + o.done, 0);
      const consumed = outcomes.slice(hows.producers.length).reduce((n, o) => n + o.done, 0);
      expect(produced).toBe(total);
      expect(consumed).toBe(total);
      expect(seen.every((n) => n === 1)).toBe(true);
      expect(q[2]).toBe(0); // queue empty
      expect(q[3]).toBe(total);
      // The queue was small enough that both sides really waited.
      expect(outcomes.slice(0, hows.producers.length).some((o) => o.waits > 0)).toBe(true);
      expect(outcomes.slice(hows.producers.length).some((o) => o.waits > 0)).toBe(true);
      // Nobody is left inside a wait, and the counters saw the wake-ups.
      expect(table.condition('q:notFull').waiters).toBe(0);
      expect(table.condition('q:notEmpty').waiters).toBe(0);
      expect(table.stats('q:notEmpty')).toMatchObject({ kind: 'condition', holders: [] });
      expect(table.stats('q:notEmpty')!.acquisitions).toBeGreaterThan(0);
      expect(table.mutex('q:lock').locked).toBe(false);
    });
});
