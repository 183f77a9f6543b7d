/**
 * Deadlock detection: before a thread parks on a slot, it follows the
 * wait-for graph recorded in the table (holders of the slot, the slot each
 * of them waits on, their holders, ...) and refuses to wait if the walk
 * comes back to itself.
 *
 * Every waiter records its wait (T_WAIT_SLOT) *before* it walks, so of two
 * threads closing a cycle at the same moment at least one sees the other's
 * record (both store, then load: seq-cst). A cycle is reported only if a
 * second walk finds the same one, so a chain torn by a concurrent release
 * is not mistaken for a deadlock. Cost: a few loads per edge, slow path only.
 */
import type { TableCore } from './core.js';
import { KIND_MASK, KIND_SHIFT, S_USE, T_WAIT_SLOT, slotBase, threadBase } from './layout.js';

interface Edge { tid: number; holds: number }

function walk(core: TableCore, slot: number): Edge[] | null {
  const w = core.words, seen = new Set<number>();
  const path: Edge[] = [];
  const visit = (s: number, depth: number): boolean => {
    if (depth > core.threads) return false;
    const base = slotBase(core.threads, s);
    const holders = core.kinds[(Atomics.load(w, base + S_USE) & KIND_MASK) >>> KIND_SHIFT]?.holders?.(core, base, s) ?? [];
    for (const tid of holders) {
      path.push({ tid, holds: s });
      if (tid === core.tid) return true;
      if (!seen.has(tid)) {
        seen.add(tid);
        const waits = Atomics.load(w, threadBase(tid) + T_WAIT_SLOT);
        if (waits !== 0 && visit(waits - 1, depth + 1)) return true;
      }
      path.pop();
    }
    return false;
  };
  return visit(slot, 0) ? path : null;
}

/**
 * If waiting on `slot` would close a cycle, describe it; else null. The
 * caller has recorded `slot + 1` in its T_WAIT_SLOT.
 */
export function cycleThrough(core: TableCore, slot: number): string | null {
  const first = walk(core, slot);
  if (first === null) return null;
  const again = walk(core, slot);
  if (again === null || again.length !== first.length || again.some((e, i) => e.tid !== first[i]!.tid || e.holds !== first[i]!.holds)) {
    return null;
  }
  // path[i] holds path[i].holds; the waiter of path[i].holds is path[i-1] (or this thread for i = 0).
  const parts = first.map((e, i) => {
    const waiter = i === 0 ? core.tid : first[i - 1]!.tid;
    return `thread ${waiter} waits for ${core.label(e.holds)}, held by thread ${e.tid}`;
  });
  return `waiting would deadlock: ${parts.join('; ')}`;
}
