/** STUB: to be written (issue 3). Contract: see test/CONTRACT-issue3.md. */
import type { TableCore } from './core.js';

export class Semaphore {
  readonly #core: TableCore;
  readonly #base: number;
  readonly slot: number;
  readonly name: string | number;

  /** @internal Use `table.semaphore(...)`. */
  constructor(core: TableCore, slot: number, base: number, name: string | number) {
    this.#core = core;
    this.#base = base;
    this.slot = slot;
    this.name = name;
  }
}
export const MAX_PERMITS = 2 ** 30;
