// Handles sent to a worker arrive as live handles on the same shared slots,
// not as copies: over comlink (latchkey's transfer handler) and over plain
// postMessage (toMessage/fromMessage). Each test sends a handle, then checks
// from both sides that the two threads contend for one slot.
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { Worker } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeAdapter from 'comlink/dist/umd/node-adapter.js';
import { LockTable, Mutex } from '../src/index.js';
import {
  fromMessage, isHandleMessage, isTransferableHandle, latchkeyTransferHandler, registerComlink, toMessage,
} from '../src/workers/transfer.js';
import type { Api } from './fixtures/workers-transfer.js';
import { control, fixture, untouched, until } from './helpers.js';

vi.setConfig({ testTimeout: 10_000 });

// The UMD build sets module.exports to the function; its .d.ts calls it a default export.
const nodeEndpoint = nodeAdapter as unknown as typeof nodeAdapter.default;

type Client = { [K in keyof Api]: (...args: Parameters<Api[K]>) => Promise<Awaited<ReturnType<Api[K]>>> };

/** The plain-postMessage client: handle arguments go out as toMessage(), handle results come back through fromMessage(). */
function plainClient(worker: Worker): Client {
  let next = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  worker.on('message', ({ id, ok, value, error }: { id: number; ok: boolean; value?: unknown; error?: { code?: string; message: string } }) => {
    const p = pending.get(id)!;
    pending.delete(id);
    if (ok) p.resolve(isHandleMessage(value) ? fromMessage(value) : value);
    else p.reject(Object.assign(new Error(error!.message), { code: error!.code }));
  });
  return new Proxy({} as Client, {
    get: (_, op: string) => (...args: unknown[]) => new Promise((resolve, reject) => {
      const id = ++next;
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, op, args: args.map((a) => (isTransferableHandle(a) ? toMessage(a) : a)) });
    }),
  });
}

describe.each(['comlink', 'plain'] as const)('handles sent to a worker over %s', (transport) => {
  let worker: Worker, api: Client;
  const table = LockTable.create({ slots: 64 });

  beforeAll(() => {
    worker = new Worker(fixture('workers-transfer'), { workerData: { transport } });
    if (transport === 'comlink') {
      registerComlink(Comlink);
      api = Comlink.wrap<Api>(nodeEndpoint(worker)) as unknown as Client;
    } else {
      api = plainClient(worker);
    }
  });
  afterAll(async () => {
    await worker.terminate();
  });

  test('Mutex: held by the main thread, the worker sees it locked and its tryLock() fails; held by the worker, the main thread does', async () => {
    const m = table.mutex(`${transport}:mutex`);
    const g = m.lockSync();
    expect(await api.probe(m)).toEqual({ slot: m.slot, name: m.name, locked: true, got: false });
    g.unlock();
    expect(await api.probe(m)).toEqual({ slot: m.slot, name: m.name, locked: false, got: true });
    expect(await api.hold(m)).toBe(true);
    expect(m.locked).toBe(true);
    expect(m.tryLock()).toBeNull();
    expect(await api.releaseAll()).toBe(1);
    m.tryLock()!.unlock();
  });

  test('Mutex reached by slot index: the worker gets the same slot, and a handle returned by the worker is live here', async () => {
    const index = transport === 'comlink' ? 40 : 41;
    const m = table.mutex(index);
    m.lockSync();
    expect(await api.probe(m)).toMatchObject({ slot: index, name: index, locked: true, got: false });
    m.unlock();
    const back = await api.lockedMutex(table, index + 10);
    expect(back).toBeInstanceOf(Mutex);
    expect(back.slot).toBe(index + 10);
    expect(back.table).toBe(table);
    expect(back.locked).toBe(true);
    expect(table.mutex(index + 10).tryLock()).toBeNull();
    await api.releaseAll();
    expect(back.locked).toBe(false);
  });

  test('RWLock: a reader here lets the worker read, not write; a writer there keeps readers here out', async () => {
    const rw = table.rwlock(`${transport}:rwlock`);
    const r = rw.tryReadLock()!;
    expect(await api.tryRead(rw)).toBe(true);
    expect(await api.tryWrite(rw)).toBe(false);
    r.unlock();
    expect(await api.holdWrite(rw)).toBe(true);
    expect(rw.tryReadLock()).toBeNull();
    await api.releaseAll();
    rw.tryWriteLock()!.unlock();
  });

  test('Semaphore: permits taken by the worker are gone here, and come back when it releases them', async () => {
    const s = table.semaphore(`${transport}:sem`, 3);
    expect(await api.takePermits(s, 2)).toEqual({ got: true, permits: 3, available: 1 });
    expect(s.available).toBe(1);
    expect(s.tryAcquire(2)).toBeNull();
    const one = s.tryAcquire(1)!;
    expect(await api.takePermits(s, 1)).toMatchObject({ got: false, available: 0 });
    one.release();
    await api.releaseAll();
    expect(s.available).toBe(3);
  });

  test('Condition: the worker waits on it under the mutex, the main thread notifies it and the worker wakes', async () => {
    const m = table.mutex(`${transport}:cv-mutex`), cv = table.condition(`${transport}:cv`), ctl = control(2);
    const waited = api.waitCondition(cv, m, ctl.buffer as SharedArrayBuffer);
    await until(ctl, 0, 1); // the worker holds m ...
    const g = await m.lock(); // ... and this succeeds only once cv.wait() released it in the worker
    Atomics.store(ctl, 1, 1);
    cv.notifyAll();
    g.unlock();
    expect(await waited).toBeGreaterThanOrEqual(1); // it did wait on cv, and was woken
  });

  test('Barrier: one arrival here and one in the worker complete a generation of 2 parties', async () => {
    const b = table.barrier(`${transport}:barrier`, 2);
    const [mine, theirs] = await Promise.all([b.arrive({ timeout: 5000 }), api.arrive(b)]);
    expect([mine, theirs].sort()).toEqual([false, true]);
  });

  test('Once: run here is done there, and run there is done here', async () => {
    const here = table.once(`${transport}:once-here`), there = table.once(`${transport}:once-there`);
    expect(here.runSync(() => {})).toBe(true);
    expect(await api.runOnce(here)).toBe(false);
    expect(await api.runOnce(there)).toBe(true);
    expect(there.done).toBe(true);
    expect(there.runSync(() => {})).toBe(false);
  });

  test('LockTable: the worker attaches the same table (once per thread) and sees a lock the main thread holds', async () => {
    const g = table.mutex(`${transport}:in-table`).lockSync();
    expect(await api.tableProbe(table, `${transport}:in-table`)).toEqual({ heldElsewhere: true, sameObject: true, slots: 64 });
    g.unlock();
    expect(await api.tableProbe(table, `${transport}:in-table`)).toMatchObject({ heldElsewhere: false });
  });
});

describe('toMessage() / fromMessage() in one thread', () => {
  const table = LockTable.create({ slots: 16 });

  test('toMessage() is plain cloneable data; fromMessage() of a table is the same LockTable object', () => {
    const msg = toMessage(table.semaphore('s', 4));
    expect(msg).toEqual({ latchkey: 1, kind: 'semaphore', buffer: table.buffer, name: 's', aux: 4 });
    const cloned = structuredClone(msg);
    // A SharedArrayBuffer is shared, not copied: a new object on the same memory.
    new Int32Array(table.buffer)[new Int32Array(table.buffer).length - 1] = 7;
    expect(new Int32Array(cloned.buffer).at(-1)).toBe(7);
    new Int32Array(table.buffer)[new Int32Array(table.buffer).length - 1] = 0;
    expect(toMessage(table.barrier('b', 3))).toMatchObject({ kind: 'barrier', aux: 3 });
    expect(toMessage(table.mutex('m'))).not.toHaveProperty('aux');
    expect(fromMessage(toMessage(table))).toBe(table);
    expect(fromMessage(cloned).slot).toBe(table.semaphore('s', 4).slot);
  });

  test('latchkeyTransferHandler: canHandle() takes handles only; serialize() needs no transfer list', () => {
    const m = table.mutex('h');
    expect(latchkeyTransferHandler.canHandle(m)).toBe(true);
    expect(latchkeyTransferHandler.canHandle(table)).toBe(true);
    expect(latchkeyTransferHandler.canHandle({ slot: 0, name: 'h' })).toBe(false);
    const [wire, transfer] = latchkeyTransferHandler.serialize(m);
    expect(transfer).toEqual([]);
    expect((latchkeyTransferHandler.deserialize(wire) as Mutex).slot).toBe(m.slot);
    const comlink = { transferHandlers: new Map() };
    registerComlink(comlink);
    expect(comlink.transferHandlers.get('latchkey')).toBe(latchkeyTransferHandler);
  });

  test('fromMessage() of anything not ours: TypeError ERR_INVALID_ARG_VALUE, before the table is touched', () => {
    const m = table.mutex('m');
    const bad: unknown[] = [
      null, undefined, 42, 'mutex', {},
      structuredClone({ slot: m.slot, name: m.name }), // what a handle posted as is arrives as
      { latchkey: 2, kind: 'mutex', buffer: table.buffer, name: 'm' },
      { latchkey: 1, kind: 'spinlock', buffer: table.buffer, name: 'm' },
      { latchkey: 1, kind: 'mutex', buffer: new ArrayBuffer(64), name: 'm' },
      { latchkey: 1, kind: 'mutex', buffer: table.buffer, name: { x: 1 } },
      { latchkey: 1, kind: 'mutex', buffer: table.buffer, name: -1 },
      { latchkey: 1, kind: 'mutex', buffer: table.buffer, name: 'm', aux: 3 },
      { latchkey: 1, kind: 'semaphore', buffer: table.buffer, name: 's' },
      { latchkey: 1, kind: 'barrier', buffer: table.buffer, name: 'b', aux: 1.5 },
      { latchkey: 1, kind: 'table', buffer: table.buffer, name: 'x' },
    ];
    for (const msg of bad) {
      const thrown = untouched(table, () => fromMessage(msg));
      expect(thrown, JSON.stringify(msg) ?? String(msg)).toBeInstanceOf(TypeError);
      expect((thrown as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE');
    }
    // A SharedArrayBuffer that is not a table: LockTable.attach's own error.
    expect(() => fromMessage({ latchkey: 1, kind: 'mutex', buffer: new SharedArrayBuffer(64), name: 'm' }))
      .toThrow(expect.objectContaining({ code: 'ERR_LOCK_TABLE_INVALID' }));
  });

  test('toMessage() of anything but a handle: ERR_INVALID_ARG_VALUE', () => {
    for (const value of [null, {}, table.buffer, structuredClone({ slot: 0, name: 'm' })]) {
      expect(() => toMessage(value as Mutex)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    }
  });
});
