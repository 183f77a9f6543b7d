// Web Locks puts no bound on the number of names over a program's life: a
// lock manager keeps state only for names held or requested. latchkey's
// tables give an idle name's slot back when they run short (queue/names.ts).
// A name is at most 128 UTF-8 bytes (a lone surrogate is stored escaped, 6).
// Own file: the process-wide table is churned here.
import { describe, expect, test, vi } from 'vitest';
import { LockTable, locks } from '../src/index.js';
import { createBuffer } from '../src/atomics/table.js';
import { S_USE, USE_REACH_MASK, USE_UNUSED, slotBase } from '../src/atomics/layout.js';
import { kNoWait } from '../src/atomics/options.js';
import { control, exited, start, until } from './helpers.js';

// A lock that is never granted should fail a test in seconds, not after the global minute.
vi.setConfig({ testTimeout: 20_000 });

async function rejection(fn: () => Promise<unknown>): Promise<{ code?: string } & Error> {
  try {
    await fn();
  } catch (err) {
    return err as { code?: string } & Error;
  }
  throw new Error('expected a rejection');
}

describe('locks.request() names', () => {
  test('locks.request(): a name of 20 lone surrogates is a valid name, one of 40 is refused with ERR_OUT_OF_RANGE', async () => {
    const short = '\uD800'.repeat(20);
    expect(await locks.request(short, (l) => l?.name)).toBe(short);
    expect((await rejection(() => locks.request('\uD800'.repeat(40), () => {}))).code).toBe('ERR_OUT_OF_RANGE');
  });

  test('locks.request(): 10000 distinct names, each taken and released in turn, are all granted (idle names give their slots back)', async () => {
    const failures: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      try {
        await locks.request(`locks-capacity:user:${i}`, () => {});
      } catch (err) {
        failures.push(`#${i}: ${(err as { code?: string }).code ?? String(err)}`);
      }
    }
    expect(failures.length, failures.slice(0, 3).join(', ')).toBe(0);
    const { held, pending } = await locks.query();
    expect([...held, ...pending].filter((l) => l.name.startsWith('locks-capacity:'))).toEqual([]);
  });

  test('a name whose slot was given back gets larger tokens when it comes back, and a held name keeps its slot', async () => {
    const first = await locks.request('locks-capacity:again', (l) => l!.token);
    let release!: () => void;
    const holding = locks.request('locks-capacity:held', (l) => new Promise<number>((r) => (release = () => r(l!.token))));
    for (let i = 0; i < 6000; i++) await locks.request(`locks-capacity:churn:${i}`, () => {});
    expect(await locks.request('locks-capacity:again', (l) => l!.token)).toBeGreaterThan(first);
    // Still held, still queued behind: the held name was never given back.
    expect((await locks.query()).held.map((l) => l.name)).toContain('locks-capacity:held');
    expect(await locks.request('locks-capacity:held', { ifAvailable: true }, (l) => l)).toBeNull();
    release();
    expect(await holding).toBeGreaterThan(0);
  });

  test('workers churning thousands of names beside a counter under one name: exact, nothing left held', async () => {
    const ctl = control(4), counter = new SharedArrayBuffer(8);
    const ws = Array.from({ length: 3 }, (_, i) => start('locks-churn', { control: ctl.buffer, counter, seed: i + 1, rounds: 3000 }));
    await Promise.all(ws.map(async (w) => expect(await exited(w)).toBe(0)));
    await until(ctl, 0, 3);
    expect(new Int32Array(counter)[0]).toBe(3 * 3000);
    const { held, pending } = await locks.query();
    expect([...held, ...pending].filter((l) => l.name.startsWith('churn:'))).toEqual([]);
  });
});

describe('a request-queue table churned through many names', () => {
  test('slots given back become free again (not tombstones for ever): a lookup of an absent name stops early', () => {
    const slots = 64, t = LockTable.attach(createBuffer(slots, 4, 64));
    const { words } = LockTable.unsafeExposeInternals(t).core;
    const unused = () => Array.from({ length: slots }, (_, s) => Atomics.load(words, slotBase(4, s) + S_USE) & USE_REACH_MASK)
      .filter((r) => r === USE_UNUSED).length;
    const req = { mode: 'exclusive' as const, ifAvailable: false, steal: false, wait: kNoWait, ttl: 0 };
    let fewest = slots;
    for (let i = 0; i < 20 * slots; i++) {
      const q = t.queue(`churn-${i}`);
      q.release(q.requestSync(req)!);
      fewest = Math.min(fewest, unused());
    }
    // The table gives slots back at 75 % full: a quarter stays free all along, and what was given back is free again.
    expect(fewest).toBeGreaterThanOrEqual(slots / 8);
    expect(unused()).toBeGreaterThanOrEqual(slots / 8);
  });
});
