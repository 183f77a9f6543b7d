import { describe, expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { result, start } from './helpers.js';

interface Side { lost: number; turns: number }

async function pingPong(hows: ['sync' | 'async', 'sync' | 'async'], impl: 'latchkey' | 'naive', rounds: number, timeout: number, window = 0) {
  const table = LockTable.create({ slots: 8 });
  const shared = new SharedArrayBuffer(64);
  const sides = hows.map((how, me) =>
    start('condition-pingpong', { table: table.buffer, shared, me, rounds, how, impl, timeout, window }));
  const [a, b] = await Promise.all(sides.map((w) => result<Side>(w)));
  return { table, a: a!, b: b! };
}

describe('Condition: a notify after the waiter committed is never lost', () => {
  test.each([
    [['sync', 'sync']],
    [['async', 'async']],
    [['sync', 'async']],
  ] as Array<[['sync' | 'async', 'sync' | 'async']]>)('%j: 3000 rounds of ping-pong, no wait ends by timeout', async (hows) => {
    const { table, a, b } = await pingPong(hows, 'latchkey', 3000, 2000);
    expect(a).toEqual({ lost: 0, turns: 3000 });
    expect(b).toEqual({ lost: 0, turns: 3000 });
    expect(table.condition('pp:cv').waiters).toBe(0);
  });

  test('the same ping-pong catches lost notifications in a condvar that reads its sequence after unlocking', async () => {
    // The control: proves the test above can fail.
    const { a, b } = await pingPong(['sync', 'sync'], 'naive', 300, 5, 30);
    expect(a.turns + b.turns).toBe(600);
    expect(a.lost + b.lost).toBeGreaterThan(0);
  });
});
