/**
 * The front door's vocabulary, a leaf every layer may import: who a lock
 * excludes (its scope) and how (its mode, as the request queue's words
 * hold it: atomics/queue/word.ts).
 */
export type { LockMode } from './atomics/queue/word.js';

/** `'thread'`: the threads of this process; `'host'`: every process of the machine; `'cluster'`: every machine on one server. */
export type LockScope = 'thread' | 'host' | 'cluster';
