/**
 * The database drivers, loaded on first use: a program that only takes
 * thread locks (or file-backend host locks) loads none of them, and a user
 * installs only the driver their backend needs. They are optional peer
 * dependencies of the package (package.json peerDependenciesMeta), so
 * `npm install latchkey` compiles nothing and works without a C compiler.
 *
 *   better-sqlite3  LATCHKEY_BACKEND=sqlite (host scope)
 *   pg              scope 'cluster' on PostgreSQL
 *   @redis/client   scope 'cluster' on Redis (node-redis's core, without
 *                   the modules the 'redis' package adds)
 *
 * A driver that is not installed, or cannot be loaded (a native addon built
 * for another Node), is ERR_LOCK_BACKEND naming the package and the command
 * that installs (or rebuilds) it, with the loader's error as `cause`.
 *
 * Loading is synchronous (require, through createRequire): a backend is
 * made inside a synchronous call (lockSync(), the lease keeper's rounds).
 * Drivers that are ES modules load through require(esm), which the
 * supported Nodes have unflagged (package.json engines).
 */
import { createRequire } from 'node:module';
import { ERR_LOCK_BACKEND } from '../errors.js';

/** Every driver latchkey may load, and what needs it (for the message). */
export const kDrivers = {
  'better-sqlite3': 'the SQLite host backend (LATCHKEY_BACKEND=sqlite)',
  pg: "scope 'cluster' on PostgreSQL",
  '@redis/client': "scope 'cluster' on Redis (a redis:// or rediss:// LATCHKEY_CLUSTER_URL)",
} as const;

export type DriverName = keyof typeof kDrivers;

/** Resolves from this package's own location: a driver installed beside latchkey (or above it) is found. */
const requireHere = createRequire(import.meta.url);
const loaded = new Map<string, unknown>();

/**
 * The driver `name`'s module (what `require(name)` returns), loaded the
 * first time it is asked for; `backend` names the backend in the error
 * ('sqlite', 'postgres', 'redis'). ERR_LOCK_BACKEND when it is missing or
 * cannot be loaded.
 */
export function loadDriver<T>(name: DriverName, backend: string): T {
  const done = loaded.get(name);
  if (done !== undefined) return done as T;
  let mod: unknown;
  try {
    mod = requireHere(name);
  } catch (err) {
    throw driverError(name, backend, err);
  }
  loaded.set(name, mod);
  return mod as T;
}

/** Whether `name` is installed where latchkey can load it (without loading it). */
export function hasDriver(name: DriverName): boolean {
  try {
    requireHere.resolve(name);
    return true;
  } catch {
    return false;
  }
}

/**
 * Throw what loadDriver() would for a missing driver, without loading it:
 * for a thread that hands the work to another (the cluster agent), so that
 * the request fails with the package's name instead of a vaguer error from
 * the other thread.
 */
export function checkDriver(name: DriverName, backend: string): void {
  if (loaded.has(name)) return;
  try {
    requireHere.resolve(name);
  } catch (err) {
    throw driverError(name, backend, err);
  }
}

function driverError(name: DriverName, backend: string, err: unknown): Error {
  const e = err as { code?: unknown; message?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  // Missing: the package itself, not a module it requires in turn (that is a broken install, below).
  const missing = (e?.code === 'MODULE_NOT_FOUND' || e?.code === 'ERR_MODULE_NOT_FOUND')
    && message.includes(`'${name}'`) && !hasDriver(name);
  if (missing) {
    return new ERR_LOCK_BACKEND(backend, `${kDrivers[name]} needs the package "${name}", which is not installed: npm install ${name}`, { cause: err });
  }
  // Installed but not loadable: most often a native addon built for another Node (NODE_MODULE_VERSION) or never built.
  const first = message.split('\n')[0];
  return new ERR_LOCK_BACKEND(backend, `the package "${name}" is installed but cannot be loaded (${first}): npm rebuild ${name}, or reinstall it`, { cause: err });
}
