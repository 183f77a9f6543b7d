/**
 * Names as the stores beyond the process keep them (lock directories,
 * SQLite, PostgreSQL, Redis). A JavaScript string may hold a lone surrogate,
 * which UTF-8 cannot carry; the tables in shared memory keep such names
 * whole (atomics/name-bytes.ts), and a store keeps them as '-' + their JSON, a
 * prefix no request may start a name with (Web Locks reserves it), so no
 * two names share a key.
 */
export function storeKey(name: string): string {
  return name.isWellFormed() ? name : `-${JSON.stringify(name)}`;
}

/** The name a store's key stands for. */
export function nameOfStoreKey(key: string): string {
  if (!key.startsWith('-')) return key;
  try {
    const name: unknown = JSON.parse(key.slice(1));
    return typeof name === 'string' ? name : key;
  } catch {
    return key;
  }
}
