// Host scope, the lease keeper's resources: it watches (fs.watch → inotify)
// the names the process holds or waits for, and must stop watching a name
// once nobody in the process holds or waits for it, or a long-lived process
// that uses many names runs the user out of inotify watches
// (fs.inotify.max_user_watches) and every name falls back to polling.
import { afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { cleanup, freshDir, hostChild } from './fixtures/host-util.js';

afterEach(cleanup);

/** inotify watches the process has (every inotify fd's `inotify wd:` lines in /proc/<pid>/fdinfo). */
function inotifyWatches(pid: number): number {
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      n += (fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8').match(/^inotify wd:/gm) ?? []).length;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

async function until(fn: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (fn()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return fn();
}

describe('host lease keeper (file backend)', () => {
  test('names held at once are watched; once all are released, the watches go', async () => {
    const dir = freshDir();
    const c = await hostChild('file', dir);
    const base = inotifyWatches(c.pid);
    const N = 40;
    for (let i = 0; i < N; i++) expect(await c.call('lock', { key: `k${i}`, name: `watched-${i}` })).toMatchObject({ granted: true });
    // Positive control: the keeper watches every held name (within a few of its 50 ms rounds).
    expect(await until(() => inotifyWatches(c.pid) >= base + N, 3000), `watches while held: ${inotifyWatches(c.pid)}`).toBe(true);
    for (let i = 0; i < N; i++) expect(await c.call('unlock', { key: `k${i}` })).toMatchObject({ ok: true });
    const dropped = await until(() => inotifyWatches(c.pid) <= base + 2, 3000);
    expect(dropped, `${inotifyWatches(c.pid) - base} inotify watches left 3 s after every name was released`).toBe(true);
  }, 20_000);
});
