// The advisory-lock npm package (PostgreSQL advisory locks, one connection
// per lock() call), as an ES module sees it: the package is CommonJS with
// `exports.default`, so an ESM default import is the exports object and the
// factory is its `default` (its README's `advisoryLock(url)` is for CommonJS
// or a bundler's interop).
import * as advisoryLockModule from 'advisory-lock';

type Mutex = { lock(): Promise<() => Promise<void>>; tryLock(): Promise<(() => Promise<void>) | undefined> };
type Factory = (url: string) => (name: string) => Mutex;

const m = advisoryLockModule as unknown as { default: Factory | { default: Factory } };
export const advisoryLock: Factory = typeof m.default === 'function' ? m.default : m.default.default;
