// Host scope keeps its resources bounded (issue 17 item 7) and every failure
// of the store is ERR_LOCK_BACKEND with its cause, `latchkey run` exiting 69
// (item 8), with real processes, real file systems and real limits:
// - descriptors: 4 worker threads holding 300 names each keep a small,
//   bounded number open; under `ulimit -n 64`, 60 requests of distinct names
//   and the program's own file reads all succeed;
// - the lock directory: dead processes' records are removed by the next
//   process that opens the name; `latchkey prune` removes the names nobody
//   uses (never one held or waited for), and a name used again starts above
//   every token it had (file and SQLite);
// - a full disk (a 1 MB tmpfs, ENOSPC), a read-only mount (EROFS) and no
//   descriptors left (EMFILE): ERR_LOCK_BACKEND naming the errno, exit 69.
// The mounts need root (CAP_SYS_ADMIN), as this suite runs here.
import { afterEach, describe, expect, test } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { encodeName } from '../src/bridge/host/file-dir.js';
import { type Backend, cleanup, freshDir, hostChild } from './fixtures/host-util.js';
import { EXIT_UNAVAILABLE } from '../src/cli/exit-codes.js';
import { MAIN } from './fixtures/cli-util.js';

const INDEX = new URL('../dist/src/index.js', import.meta.url).href;
const mounts: string[] = [];
afterEach(async () => {
  for (const m of mounts.splice(0)) {
    try {
      execFileSync('umount', ['-l', m]);
    } catch {
      // gone already
    }
  }
  await cleanup();
});

const fds = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;

/** Run `source` (an ES module) with node, through `sh -c 'ulimit …; exec node'` when `ulimit` is given. */
function node(dir: string, source: string, env: Record<string, string>, ulimit?: number): Promise<{ code: number | null; out: string; err: string }> {
  const file = join(freshDir('lk-script-'), 'script.mjs');
  fs.writeFileSync(file, source);
  const base = { ...process.env };
  for (const k of ['NODE_DEBUG', 'NODE_OPTIONS', 'LATCHKEY_BACKEND', 'LATCHKEY_DIR']) delete base[k];
  const args = ulimit === undefined ? [process.execPath, file] : ['sh', '-c', `ulimit -n ${ulimit} && exec "${process.execPath}" "${file}"`];
  const p = spawn(args[0]!, args.slice(1), { env: { ...base, LATCHKEY_DIR: dir, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  return new Promise((resolve) => p.once('close', (code) => resolve({ code, out, err })));
}

function latchkeyRun(dir: string, backend: Backend, args: string[]): { code: number; err: string } {
  const base = { ...process.env };
  for (const k of ['NODE_DEBUG', 'NODE_OPTIONS']) delete base[k];
  try {
    execFileSync(process.execPath, [MAIN, ...args], { env: { ...base, LATCHKEY_DIR: dir, LATCHKEY_BACKEND: backend }, stdio: 'pipe' });
    return { code: 0, err: '' };
  } catch (e) {
    const x = e as { status: number; stderr: Buffer };
    return { code: x.status, err: x.stderr.toString() };
  }
}

describe('host descriptors (issue 17 item 7)', () => {
  // 4 × 240: the host table holds 1024 names held or waited for at one time.
  test('4 worker threads holding 240 names each keep a bounded number of descriptors', async () => {
    const dir = freshDir();
    const c = await hostChild('file', dir);
    const before = fds(c.pid);
    const r = await c.call('threads', { prefix: 'fd', threads: 4, per: 240 }, 120_000);
    expect(r).toMatchObject({ ok: true });
    const held = fds(c.pid);
    expect(await c.call('threadsRelease', {}, 60_000)).toMatchObject({ ok: true });
    const after = fds(c.pid);
    console.log(`descriptors: ${before} before, ${held} holding 960 names in 4 threads, ${after} after`);
    // Each thread keeps at most OPEN_NAMES names (2 each), its FIFOs and FIFO writers; before, 2 per name.
    expect(held - before).toBeLessThan(600);
    expect(after - before).toBeLessThan(600);
  }, 150_000);

  test('under ulimit -n 64: 60 requests of distinct names and the program\'s own file reads all succeed', async () => {
    const dir = freshDir(), data = join(freshDir(), 'data');
    fs.writeFileSync(data, 'x');
    const r = await node(dir, `
      import { readFileSync } from 'node:fs';
      const { locks } = await import(${JSON.stringify(INDEX)});
      const errors = [];
      for (let i = 0; i < 60; i++) {
        try {
          await locks.request('n' + i, { scope: 'host' }, () => readFileSync(${JSON.stringify(data)}, 'utf8'));
        } catch (e) { errors.push(e.code + ' ' + e.message); }
        try { readFileSync(${JSON.stringify(data)}); } catch (e) { errors.push('own read: ' + e.code); }
      }
      console.log(JSON.stringify(errors));`, { LATCHKEY_BACKEND: 'file' }, 64);
    expect(r.err).toBe('');
    expect(JSON.parse(r.out.trim())).toEqual([]);
  }, 60_000);
});

describe.each(['file', 'sqlite'] as const)('the lock store stays small (%s backend, issue 17 item 7)', (backend) => {
  test('latchkey prune removes the names nobody uses, keeps those held or waited for, and a name used again starts above its old tokens', async () => {
    const dir = freshDir();
    const [a, b] = await Promise.all([hostChild(backend, dir), hostChild(backend, dir)]);
    const tokens: Record<string, number> = {};
    for (const name of ['idle-1', 'idle-2', 'held', 'waited']) {
      const g = await a.call('lock', { key: name, name });
      tokens[name] = g.token;
      if (name.startsWith('idle')) await a.call('unlock', { key: name });
    }
    await a.call('unlock', { key: 'waited' });
    expect(await a.call('lock', { key: 'waited', name: 'waited' })).toMatchObject({ granted: true });
    expect(await b.call('request', { key: 'w', name: 'waited', opts: { timeout: 20_000 } })).toMatchObject({ queued: true });
    await b.call('ping');
    await new Promise((r) => setTimeout(r, 200));
    const out = execFileSync(process.execPath, [MAIN, 'prune', '--json'], { env: { ...process.env, LATCHKEY_DIR: dir, LATCHKEY_BACKEND: backend }, encoding: 'utf8' });
    const report = JSON.parse(out) as { removed: string[]; kept: Array<{ name: string; why: string }> };
    expect(report.removed).toEqual(['idle-1', 'idle-2']);
    expect(report.kept).toEqual([{ name: 'held', why: 'held' }, { name: 'waited', why: backend === 'file' ? 'waiting' : 'held' }]);
    if (backend === 'file') {
      const left = fs.readdirSync(dir).filter((e) => !e.startsWith('.'));
      expect(left.sort()).toEqual([encodeName('held'), encodeName('waited')].sort());
    }
    // The held and waited locks carry on; a pruned name starts above every token it had.
    expect(await a.call('unlock', { key: 'waited' })).toMatchObject({ ok: true });
    expect(await b.next((m) => m.ev === 'granted' && m.key === 'w')).toMatchObject({ ev: 'granted' });
    const again = await a.call('lock', { key: 'again', name: 'idle-1' });
    expect(again).toMatchObject({ granted: true });
    expect(again.token).toBeGreaterThan(tokens['idle-1']!);
    expect(await a.call('unlock', { key: 'held' })).toMatchObject({ ok: true });
  }, 30_000);

  test('latchkey prune --help and a bad option: its own help and statuses, exit 64 for bad arguments', () => {
    const help = execFileSync(process.execPath, [MAIN, 'prune', '--help'], { encoding: 'utf8' });
    expect(help).toMatch(/^Usage: latchkey prune/);
    expect(help).toMatch(/69 +the lock store cannot be used/);
    expect(help).not.toMatch(/\n +76 /);
    expect(latchkeyRun(freshDir(), backend, ['prune', '--bogus']).code).toBe(64);
  });
});

describe('dead processes\' records (file backend, issue 17 item 7)', () => {
  test('the records of processes that died are removed by the next process that opens the name', async () => {
    const dir = freshDir();
    const kids = await Promise.all([0, 1, 2, 3].map(() => hostChild('file', dir)));
    for (const c of kids) {
      expect(await c.call('lock', { key: 'k', name: 'shared-name' })).toMatchObject({ granted: true });
      expect(await c.call('unlock', { key: 'k' })).toMatchObject({ ok: true });
    }
    for (const c of kids) {
      c.kill('SIGKILL'); // no exit hook: its record stays
      await c.exited;
    }
    const records = () => fs.readdirSync(join(dir, encodeName('shared-name'))).filter((e) => e.startsWith('o-'));
    expect(records().length).toBe(4);
    const next = await hostChild('file', dir);
    expect(await next.call('lock', { key: 'k', name: 'shared-name' })).toMatchObject({ granted: true });
    expect(records()).toHaveLength(1);
    expect(records()[0]).toMatch(new RegExp(`^o-${next.pid}-`));
  }, 60_000);
});

// --- store failures: ERR_LOCK_BACKEND with the errno, exit 69 (issue 17 item 8) -------------

describe.each(['file', 'sqlite'] as const)('store failures (%s backend, issue 17 item 8)', (backend) => {
  test('a full disk (1 MB tmpfs): ERR_LOCK_BACKEND naming ENOSPC / SQLITE_FULL; latchkey run exits 69', async () => {
    const mnt = freshDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', mnt]);
    mounts.push(mnt);
    const dir = join(mnt, 'locks');
    const c = await hostChild(backend, dir);
    expect(await c.call('lock', { key: 'a', name: 'first' })).toMatchObject({ granted: true });
    // Fill it up.
    try {
      fs.writeFileSync(join(mnt, 'filler'), Buffer.alloc(2 << 20));
    } catch {
      // full
    }
    for (let i = 0; i < 64; i++) {
      try {
        fs.mkdirSync(join(mnt, `d${i}`));
      } catch {
        break; // no inodes or blocks left
      }
    }
    const names = Array.from({ length: 20 }, (_, i) => `new-${i}-${'x'.repeat(40)}`);
    let r: Record<string, unknown> | undefined;
    for (const name of names) {
      r = await c.call('lock', { key: name, name, opts: { timeout: 3000 } });
      if (r.granted !== true) break;
    }
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
    expect((r!.error as { message: string }).message).toMatch(backend === 'file' ? /ENOSPC|no space/i : /SQLITE_FULL|full/i);
    const run = latchkeyRun(dir, backend, ['run', `cli-${'y'.repeat(60)}`, '--', 'true']);
    expect(run.code, run.err).toBe(EXIT_UNAVAILABLE);
    expect(run.err).not.toContain('internal error');
  }, 30_000);

  test('a read-only mount (EROFS): ERR_LOCK_BACKEND; latchkey run exits 69', async () => {
    const root = freshDir(), src = join(root, 'src'), ro = join(root, 'ro');
    fs.mkdirSync(src, { mode: 0o700 });
    fs.mkdirSync(ro, { mode: 0o700 });
    const made = await hostChild(backend, join(src, 'locks'));
    expect(await made.call('lock', { key: 'a', name: 'there' })).toMatchObject({ granted: true });
    expect(await made.call('unlock', { key: 'a' })).toMatchObject({ ok: true });
    await made.destroy();
    execFileSync('mount', ['--bind', src, ro]);
    mounts.push(ro);
    execFileSync('mount', ['-o', 'remount,bind,ro', ro]);
    const c = await hostChild(backend, join(ro, 'locks'));
    const r = await c.call('lock', { key: 'b', name: 'there', opts: { timeout: 3000 } });
    expect(r).toMatchObject({ granted: false, error: { code: 'ERR_LOCK_BACKEND' } });
    expect((r.error as { message: string }).message).toMatch(/EROFS|read-only|readonly/i);
    const run = latchkeyRun(join(ro, 'locks'), backend, ['run', 'there', '--', 'true']);
    expect(run.code, run.err).toBe(EXIT_UNAVAILABLE);
  }, 30_000);
});

describe('no descriptors left (issue 17 item 8)', () => {
  test('EMFILE when even a cleared cache cannot open the store: ERR_LOCK_BACKEND naming EMFILE, never a raw error', async () => {
    const dir = freshDir();
    const r = await node(dir, `
      import { openSync } from 'node:fs';
      const { locks } = await import(${JSON.stringify(INDEX)});
      await locks.request('warm', { scope: 'host' }, () => {});
      const hog = [];
      try { for (;;) hog.push(openSync('/dev/null', 'r')); } catch {}
      const err = await locks.request('other-name', { scope: 'host', timeout: 2000 }, () => {}).then(() => null, (e) => e);
      console.log(JSON.stringify({ code: err?.code, errno: err?.errno, message: err?.message }));
      process.exit(0);`, { LATCHKEY_BACKEND: 'file' }, 128);
    const e = JSON.parse(r.out.trim().split('\n').pop()!) as { code: string; errno: string };
    expect(e).toMatchObject({ code: 'ERR_LOCK_BACKEND', errno: 'EMFILE' });
  }, 30_000);
});
