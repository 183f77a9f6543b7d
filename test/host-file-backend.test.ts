// The file backend by itself, two clients in this process standing for two
// processes: a waiter's markers (w-<id>, heir) go once it is granted, even
// when its thread opened so many other names meanwhile that the name's
// files were closed and opened again (found by a review: the markers were
// left, and the other process gave way to a waiter that no longer waited).
import { afterEach, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { FileBackend } from '../src/bridge/host/file.js';
import { me, monotonicMs } from '../src/bridge/identity.js';
import { cleanup, freshDir } from './fixtures/host-util.js';

afterEach(cleanup);

test('a waiter whose name was closed and opened again (past 256 names) still takes its markers away once granted', () => {
  const dir = freshDir(), space = me().id.split('-').slice(0, 3).join('-');
  const a = new FileBackend(dir, { ...me(), id: `${space}-a` }), h = new FileBackend(dir, { ...me(), id: `${space}-h` });
  const req = (name: string, since = monotonicMs()) => ({ name, mode: 'exclusive' as const, ttl: 10_000, steal: false, wait: true, since });
  const held = h.attempt(req('n'));
  expect(held.granted).toBe(true);
  expect(a.attempt(req('n', monotonicMs() - 10)).granted).toBe(false); // a waits: w-<a>, and heir (it waited over 1 ms)
  for (let i = 0; i < 256; i++) a.othersWaiting(`other-${i}`); // opens 256 other names: n's files are closed
  h.release('n', held.granted ? held.token : 0, false);
  const got = a.attempt(req('n'));
  expect(got.granted).toBe(true);
  const nameDir = join(dir, fs.readdirSync(dir).find((d) => d.startsWith('n'))!);
  expect(fs.readdirSync(nameDir).filter((e) => e === 'heir' || e.startsWith('w-'))).toEqual([]);
  a.release('n', got.granted ? got.token : 0, false);
  expect(h.othersWaiting('n')).toBe(false);
  expect(h.attempt(req('n')).granted).toBe(true); // nobody to give way to
});
