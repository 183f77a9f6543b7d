// Web Locks puts no bound on names. latchkey's do have bounds, and reports
// them: a name is at most 128 UTF-8 bytes (a lone surrogate is stored
// escaped, 6 bytes), and a scope holds a fixed number of distinct names for
// the life of the process (ERR_LOCK_TABLE_FULL past it). Own file: filling
// the process-wide table affects no other suite's process.
import { describe, expect, test, vi } from 'vitest';
import { locks } from '../src/index.js';

// A lock that is never granted should fail a test in seconds, not after the global minute.
vi.setConfig({ testTimeout: 10_000 });

async function rejection(fn: () => Promise<unknown>): Promise<{ code?: string } & Error> {
  try {
    await fn();
  } catch (err) {
    return err as { code?: string } & Error;
  }
  throw new Error('expected a rejection');
}

describe('locks.request() name bounds', () => {
  test('locks.request(): a name of 20 lone surrogates is a valid name, one of 40 is refused with ERR_OUT_OF_RANGE', async () => {
    const short = '\uD800'.repeat(20);
    expect(await locks.request(short, (l) => l?.name)).toBe(short);
    expect((await rejection(() => locks.request('\uD800'.repeat(40), () => {}))).code).toBe('ERR_OUT_OF_RANGE');
  });

  test('locks.request(): past the distinct names a scope holds, a new name is refused with ERR_LOCK_TABLE_FULL, and names in use still work', async () => {
    const codes = new Set<string>();
    let granted = 0;
    for (let i = 0; i < 5000; i++) {
      try {
        await locks.request(`locks-capacity:user:${i}`, () => {});
        granted++;
      } catch (err) {
        codes.add((err as { code?: string }).code ?? String(err));
      }
    }
    expect(granted).toBeGreaterThan(4000);
    expect(granted).toBeLessThan(5000);
    expect([...codes]).toEqual(['ERR_LOCK_TABLE_FULL']);
    expect(await locks.request('locks-capacity:user:0', () => 'again')).toBe('again');
    const { held, pending } = await locks.query();
    expect([...held, ...pending].filter((l) => l.name.startsWith('locks-capacity:'))).toEqual([]);
  });
});
