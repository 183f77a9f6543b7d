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
  KIND_BARRIER, KIND_CONDITION, KIND_MUTEX, KIND_NAMES, KIND_ONCE, KIND_QUEUE, KIND_RWLOCK, KIND_SEMAPHORE,
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
// KIND_QUEUE: the request queue's entry lives in queue/queue.ts, which still
// hands it over through defineKind() below when it loads. To wire it here,
// export it from queue.ts (`queueKind`), import it above, write
// `KINDS[KIND_QUEUE] = queueKind;` and delete defineKind().

/** @deprecated Only for KIND_QUEUE, until queue.ts exports its entry (see above). */
export function defineKind(kind: typeof KIND_QUEUE, ops: KindOps): void {
  KINDS[kind] = ops;
}

/** The queue's table-wide recovery registers here (queue/recovery.ts); threads.ts owns it. */
export { defineTableRecovery, type TableRecovery } from './threads.js';
