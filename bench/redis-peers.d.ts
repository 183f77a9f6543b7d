// redlock 5.0.0-beta.2 ships its declarations at dist/index.d.ts but names
// them in no "types" condition of its exports map, so NodeNext resolution
// cannot find them: the little of its API the Redis bench uses.
declare module 'redlock' {
  import type { EventEmitter } from 'node:events';

  interface Lock {
    release(): Promise<unknown>;
  }

  export default class Redlock extends EventEmitter {
    constructor(clients: Iterable<unknown>, settings?: { retryCount?: number; retryDelay?: number; retryJitter?: number });
    acquire(resources: string[], duration: number): Promise<Lock>;
  }
}
