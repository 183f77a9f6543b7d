import { expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, result, signalWord, start, until } from './helpers.js';

interface Outcome { index: number; ok: boolean; code?: string; message?: string; ms: number }
type Kind = 'read' | 'write' | 'mutex';

async function cycle(pairs: Array<[Kind, Kind]>): Promise<Outcome[]> {
  const table = LockTable.create({ slots: 16 });
  const ctl = control();
  const workers = pairs.map(([first, second], index) => start('rwlock-cycle', { table: table.buffer, first, second, control: ctl.buffer, index }));
  const outcomes = workers.map((w) => result<Outcome>(w));
  await until(ctl, 0, pairs.length); // everyone holds its first lock
  signalWord(ctl, 1); // and now everyone asks for the next one: a cycle
  return Promise.all(outcomes);
}

test.each([
  ['a read share and a mutex (writer waits for the reader)', [['read', 'mutex'], ['mutex', 'write']]],
  ['the write lock and a mutex (reader waits for the writer)', [['write', 'mutex'], ['mutex', 'read']]],
  ['the write lock and a mutex (writer waits for the writer)', [['write', 'mutex'], ['mutex', 'write']]],
] as Array<[string, Array<[Kind, Kind]>]>)('a cycle through %s fails promptly in one thread with ERR_LOCK_DEADLOCK', async (_, pairs) => {
  const outcomes = await cycle(pairs);
  const failed = outcomes.filter((o) => !o.ok);
  expect(failed.length).toBeGreaterThanOrEqual(1);
  for (const f of failed) {
    expect(f.code).toBe('ERR_LOCK_DEADLOCK');
    expect(f.ms).toBeLessThan(1000);
    expect(f.message).toContain('"rw"');
    expect(f.message).toContain('"m"');
  }
  expect(outcomes.filter((o) => o.ok).length).toBe(pairs.length - failed.length); // the victim let go: the other got through
});

test('no false deadlock: a reader waits for a mutex whose holder asks for a share (shares do not exclude each other)', async () => {
  // Reader A holds a share and waits for mutex m held by reader B, which asks for a share: shares do not exclude
  // each other, so B gets in at once, finishes, releases m, and A goes on. No false deadlock.
  const outcomes = await cycle([['read', 'mutex'], ['mutex', 'read']]);
  expect(outcomes.every((o) => o.ok)).toBe(true);
});
