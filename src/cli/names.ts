/**
 * Lock names as the backends store them: the front door's key (locks.ts
 * keyOf), where a name that UTF-8 cannot carry (a lone surrogate) is kept
 * as '-' + its JSON, a prefix no request may start a name with.
 */
export function decodeName(key: string): string {
  if (!key.startsWith('-')) return key;
  try {
    const name: unknown = JSON.parse(key.slice(1));
    return typeof name === 'string' ? name : key;
  } catch {
    return key;
  }
}
