// The file backend by itself, two clients in this process standing for two
// processes: a waiter's queue entry goes once it is granted, even when its
// thread opened so many other names meanwhile that its descriptor cache
// (OPEN_NAMES) turned over (found by a review of the old layout: the
// markers were left, and the other process gave way to a waiter that no
// longer waited). The waiting name's files stay open while it waits.
import { afterEach, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { FileBackend, OPEN_NAMES } from '../src/bridge/host/file.js';
import type { Grant } from '../src/bridge/host/backend.js';
import { me, monotonicMs } from '../src/bridge/identity.js';
import { cleanup, freshDir } from './fixtures/host-util.js';

afterEach(cleanup);

test(`a waiter whose thread opened more than ${OPEN_NAMES} other names meanwhile still leaves the queue once granted`, async () => {
  const dir = freshDir(), space = me().id.split('-').slice(0, 3).join('-');
  const a = new FileBackend(dir, { ...me(), id: `${space}-a` }), h = new FileBackend(dir, { ...me(), id: `${space}-h` });
  const req = (name: string, once = false) => ({ name, mode: 'exclusive' as const, ttl: 10_000, steal: false, once, since: monotonicMs() });
  const held = h.acquire(req('n'));
  expect('granted' in held).toBe(true);
  const queued = a.acquire(req('n'));
  expect('queued' in queued).toBe(true);
  const w = (queued as { queued: import('../src/bridge/host/backend.js').Waiter }).queued;
  expect(w.step()).toBeTypeOf('number'); // a live holder: it sleeps
  expect(h.waiting('n')).toBe(true);
  for (let i = 0; i < OPEN_NAMES + 8; i++) a.waiting(`other-${i}`); // opens more names than a thread keeps open
  const woke = new Promise<Grant | null>((resolve) => w.arm(resolve));
  h.release('n', (held as { granted: Grant }).granted.token, false);
  const got = (await woke) ?? w.step();
  w.disarm();
  expect(got).toMatchObject({ previousDied: false });
  const nameDir = join(dir, fs.readdirSync(dir).find((d) => d.startsWith('n~'))!);
  expect(fs.readdirSync(join(nameDir, 'q')).filter((e) => fs.existsSync(join(nameDir, 'q', e, 'r')))).toEqual([]);
  a.release('n', (got as Grant).token, false);
  expect(h.waiting('n')).toBe(false);
  expect('granted' in h.acquire(req('n', true))).toBe(true); // nobody to give way to
  a.close();
  h.close();
});
