/**
 * The primitives by kind (layout.ts, KIND_*): the one list of what recovery
 * (threads.ts) and deadlock detection (deadlock.ts) need of each, wired
 * here explicitly rather than filled in by imports. The table's core
 * carries it (core.ts, `kinds`), so those two import no primitive, and a
 * primitive that calls deadlock detection does not import itself.
 */
import type { KindOps } from './core.js';
import { barrierKind } from './barrier-word.js';
import { conditionKind } from './condition-word.js';
import {
  KIND_BARRIER, KIND_CONDITION, KIND_MUTEX, KIND_NAMES, KIND_ONCE, KIND_RWLOCK, KIND_SEMAPHORE,
} from './layout.js';
import { mutexKind } from './mutex-word.js';
import { onceKind } from './once-word.js';
import { rwlockKind } from './rwlock-word.js';
import { semaphoreKind } from './semaphore-word.js';

/** Indexed by kind; KIND_NONE has none. */
export const KINDS: Array<KindOps | undefined> = new Array(KIND_NAMES.length).fill(undefined);
KINDS[KIND_MUTEX] = mutexKind;
KINDS[KIND_RWLOCK] = rwlockKind;
KINDS[KIND_SEMAPHORE] = semaphoreKind;
KINDS[KIND_CONDITION] = conditionKind;
KINDS[KIND_BARRIER] = barrierKind;
KINDS[KIND_ONCE] = onceKind;
// KIND_QUEUE lives only in queue tables, which carry their own list (queue/table.ts: QUEUE_KINDS).
