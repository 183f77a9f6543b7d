// Database drivers are optional peers, loaded on first use (src/bridge/drivers.ts):
// a program that takes thread or file-backend host locks loads none; a
// backend whose driver is missing fails with ERR_LOCK_BACKEND naming the
// package to install. Real processes: latchkey copied into a project that
// has no driver installed, and the repository's own install.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import { bareProject } from './fixtures/bare-project.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function temp(prefix: string): string {
  const d = fs.mkdtempSync(join(tmpdir(), prefix));
  fs.chmodSync(d, 0o700);
  dirs.push(d);
  return d;
}

/** Run an ES module script in `cwd` (its `import('latchkey')` resolves there); its last stdout line as JSON. */
function run(cwd: string, script: string, env: Record<string, string> = {}): Record<string, unknown> {
  fs.writeFileSync(join(cwd, 'script.mjs'), script);
  const base = { ...process.env };
  for (const k of ['LATCHKEY_BACKEND', 'LATCHKEY_DIR', 'NODE_DEBUG', 'NODE_OPTIONS']) delete base[k];
  const r = spawnSync(process.execPath, ['script.mjs'], { cwd, env: { ...base, ...env }, encoding: 'utf8', timeout: 30_000 });
  const last = r.stdout.trim().split('\n').at(-1);
  if (r.status !== 0 || last === undefined || last === '') throw new Error(`script exited ${r.status}: ${r.stderr}`);
  return JSON.parse(last) as Record<string, unknown>;
}

/** A script's lines that list which drivers (and demo-only packages) Node has loaded by then. */
const LOADED = `
const { createRequire } = await import('node:module');
const cache = Object.keys(createRequire(import.meta.url).cache);
const loaded = ['better-sqlite3', 'pg', 'piscina', 'comlink', 'ioredis', 'redis'].filter((p) => cache.some((k) => k.includes('/node_modules/' + p + '/')));
`;

describe('drivers are loaded on first use', () => {
  test('thread locks and file-backend host locks load no driver', () => {
    const dir = temp('lk-drivers-'), lockDir = temp('lk-drivers-locks-');
    fs.mkdirSync(join(dir, 'node_modules'));
    fs.symlinkSync(root, join(dir, 'node_modules', 'latchkey'), 'dir');
    fs.writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
    const out = run(dir, `
const { locks, LockTable } = await import('latchkey');
await locks.request('t', async () => {});
LockTable.default().mutex('m').lockSync().unlock();
await locks.request('h', { scope: 'host' }, async () => {});
${LOADED}
console.log(JSON.stringify({ loaded }));
`, { LATCHKEY_DIR: lockDir });
    expect(out).toEqual({ loaded: [] });
    // The control: the SQLite backend does load its driver, so the check above can see one.
    const sqlite = run(dir, `
const { locks } = await import('latchkey');
await locks.request('h', { scope: 'host' }, async () => {});
${LOADED}
console.log(JSON.stringify({ loaded }));
`, { LATCHKEY_DIR: lockDir, LATCHKEY_BACKEND: 'sqlite' });
    expect(sqlite).toEqual({ loaded: ['better-sqlite3'] });
  }, 60_000);

  test('with no driver installed: thread and file-backend host locks work; the SQLite backend fails with ERR_LOCK_BACKEND naming the package, creating nothing', () => {
    const dir = bareProject(), lockDir = temp('lk-drivers-locks-');
    dirs.push(dir);
    const works = run(dir, `
const { locks } = await import('latchkey');
const t = await locks.request('t', async (lock) => lock.token);
const h = await locks.request('h', { scope: 'host' }, async (lock) => lock.token);
console.log(JSON.stringify({ t, h }));
`, { LATCHKEY_DIR: lockDir });
    expect(works.t).toBeGreaterThan(0);
    expect(works.h).toBeGreaterThan(0);

    const sqliteDir = join(lockDir, 'sqlite');
    const failed = run(dir, `
const { locks, LockBackendError } = await import('latchkey');
const err = await locks.request('h', { scope: 'host' }, async () => {}).catch((e) => e);
const sync = (() => { try { locks.lockSync('h', { scope: 'host' }); } catch (e) { return e.code; } })();
console.log(JSON.stringify({ isClass: err instanceof LockBackendError, code: err.code, backend: err.backend, message: err.message, cause: err.cause?.code, sync }));
`, { LATCHKEY_DIR: sqliteDir, LATCHKEY_BACKEND: 'sqlite' });
    expect(failed).toMatchObject({ isClass: true, code: 'ERR_LOCK_BACKEND', backend: 'sqlite', cause: 'MODULE_NOT_FOUND', sync: 'ERR_LOCK_BACKEND' });
    expect(failed.message).toContain('npm install better-sqlite3');
    expect(fs.existsSync(sqliteDir)).toBe(false);
  }, 60_000);

  test('loadDriver(): a missing pg is ERR_LOCK_BACKEND naming it; checkDriver() says so without loading anything', () => {
    const dir = bareProject();
    dirs.push(dir);
    const out = run(dir, `
const d = await import('./node_modules/latchkey/dist/src/bridge/drivers.js');
const load = (() => { try { d.loadDriver('pg', 'postgres'); } catch (e) { return { code: e.code, backend: e.backend, message: e.message }; } })();
const check = (() => { try { d.checkDriver('pg', 'postgres'); } catch (e) { return e.code; } })();
console.log(JSON.stringify({ load, check, has: d.hasDriver('pg') }));
`);
    expect(out).toMatchObject({ load: { code: 'ERR_LOCK_BACKEND', backend: 'postgres' }, check: 'ERR_LOCK_BACKEND', has: false });
    expect((out.load as { message: string }).message).toContain('npm install pg');
  }, 60_000);
});
