// Web Locks puts no bound on the number of names over a program's life: a
// lock manager keeps state only for names held or requested. latchkey's
// tables give an idle name's slot back when they run short (queue/names.ts).
// A name is at most 128 UTF-8 bytes (a lone surrogate is stored escaped, 6).
// Own file: the process-wide table is churned here.
import { describe, expect, test, vi } from 'vitest';
import { LockTable, locks } from '../src/index.js';
import { createBuffer } from '../src/atomics/memory.js';
import { QueueTable } from '../src/atomics/queue/table.js';
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
  // Issue 17 item 10: one length rule for every name, in locks.* as in a LockTable: at most 128
  // bytes of WTF-8, where a lone surrogate counts 3 bytes, as any other code point from U+0800 on.
  test('locks.request(): a name of 42 lone surrogates (126 bytes) is a valid name, one of 43 (129) is refused with ERR_OUT_OF_RANGE', async () => {
    const longest = '\uD800'.repeat(42);
    expect(await locks.request(longest, (l) => l?.name)).toBe(longest);
    expect((await rejection(() => locks.request('\uD800'.repeat(43), () => {}))).code).toBe('ERR_OUT_OF_RANGE');
    const table = LockTable.create({ slots: 8 });
    expect(table.mutex(longest).name).toBe(longest);
    expect(() => table.mutex('\uD800'.repeat(43))).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
  });

  // Issue 17 item 9: names that differ only in their lone surrogates were all stored as U+FFFD and shared one slot.
  test('names that differ only in lone surrogates never share a slot, in a LockTable and through locks.*', async () => {
    const names = ['lock-\uD800', 'lock-\uDC00', 'lock-\uFFFD', 'lock-\uD800\uDC00'];
    const table = LockTable.create({ slots: 16 });
    const guards = names.map((n) => table.mutex(n).lockSync({ timeout: 0 })); // held at once: four locks, not one
    expect(new Set(names.map((n) => table.mutex(n).slot)).size).toBe(names.length);
    expect(table.stats().map((s) => s.name).sort()).toEqual([...names].sort());
    for (const g of guards) g.unlock();
    const held = await Promise.all(names.map((n) => locks.lock(n, { ifAvailable: true })));
    expect(held.every((g) => g !== null)).toBe(true);
    expect((await locks.query()).held.map((l) => l.name).filter((n) => n.startsWith('lock-')).sort()).toEqual([...names].sort());
    for (const g of held) g!.unlock();
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
    const slots = 64, t = QueueTable.attach(createBuffer({ slots, threads: 4, requests: 64 }), { onStolen: () => {} });
    const { words } = QueueTable.unsafeExposeInternals(t).core;
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
