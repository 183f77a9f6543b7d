/**
 * What the front door hands out: `Lock` (what a request() callback is
 * given, as in the Web Locks API, plus latchkey's token, abandoned flag and
 * signal) and `LockGuard` (what lock()/lockSync() return: a Lock you unlock).
 *
 * A held lock can be lost while its holder runs: stolen (another request
 * with `steal`), or, for a host lock, compromised (its lease expired and
 * another process took it). The thread that learns of it first tells the
 * holder's thread: directly when it is the same thread, else on the
 * process-wide BroadcastChannel (loss.ts). The holder's `signal` then aborts,
 * `onCompromised` runs, and a request()'s promise rejects at once.
 */
import type { QueueGrant, RequestQueue } from './atomics/queue/queue.js';
import type { LockMode, LockScope } from './scopes.js';
import { type Holding, type LossReason, holdingsOf } from './loss.js';
import { ERR_LOCK_COMPROMISED, ERR_LOCK_NOT_LOCKED } from './errors.js';
import { acquireChannel, debug, grantObserved, lockLost, ms, observed, releaseChannel } from './observe.js';

export type { LockMode, LockScope, LossReason };

/** Whether a held lock is still held, and its `signal`, made only when asked for (an AbortController costs more than a lock). */
class LossState {
  controller: AbortController | undefined;
  lost: (Error & { reason: LossReason }) | undefined;

  get signal(): AbortSignal {
    return (this.controller ??= new AbortController()).signal;
  }

  lose(error: Error & { reason: LossReason }): void {
    this.lost = error;
    (this.controller ??= new AbortController()).abort(error);
  }
}

export class Lock {
  readonly #state: LossState;

  /** @internal */
  constructor(
    readonly name: string,
    readonly mode: LockMode,
    readonly scope: LockScope,
    /**
     * Fencing token: strictly increasing across the grants of this name in
     * its scope, through releases, deaths and takeovers (a shared grant's is
     * above every earlier exclusive grant's and below every later one's).
     * Hand it to the resource you guard and have it refuse smaller ones.
     */
    readonly token: number,
    /** True when the previous holder died holding it: what it guarded may be half-written. */
    readonly abandoned: boolean,
    state: LossState,
  ) {
    this.#state = state;
  }

  /** Aborts when the lock is lost while held (stolen, or a host lease compromised); its reason is the error. */
  get signal(): AbortSignal {
    return this.#state.signal;
  }
}

export type LossHandler = (error: Error & { reason: LossReason }) => void;

/**
 * The error a lost lock reports: a steal is the Web Locks API's AbortError
 * (https://w3c.github.io/web-locks/#lock-manager-steal); a lost lease is
 * ERR_LOCK_COMPROMISED. Both carry `reason`.
 */
export function lossError(name: string, reason: LossReason, detail: string): Error & { reason: LossReason } {
  if (reason !== 'stolen') return new ERR_LOCK_COMPROMISED(JSON.stringify(name), detail, reason);
  return Object.assign(new DOMException(`Lock ${JSON.stringify(name)} was stolen: ${detail}`, 'AbortError'), { reason });
}

/** A lock from lock()/lockSync(): unlock it, or let `using` do it. */
export class LockGuard extends Lock {
  readonly #queue: RequestQueue;
  readonly #grant: QueueGrant;
  readonly #state: LossState;
  readonly #onLost: LossHandler | undefined;
  readonly #holdings: Array<Holding | undefined>;
  /** performance.now() at the grant while somebody observes (observe.ts), else 0. */
  readonly #since: number;
  #held = true;

  /** @internal `waitedMs`: how long the request waited, for observers. */
  constructor(name: string, scope: LockScope, queue: RequestQueue, grant: QueueGrant, onLost: LossHandler | undefined, waitedMs = 0) {
    const state = new LossState();
    super(name, grant.mode, scope, grant.token, grant.abandoned, state);
    this.#queue = queue;
    this.#grant = grant;
    this.#state = state;
    this.#onLost = onLost;
    this.#holdings = holdingsOf(queue.tableId);
    this.#holdings[grant.node] = this;
    // Granted, then stolen before this thread looked: the steal's notice may have come before this guard was here.
    if (!queue.holds(grant)) this.lose('stolen', 'another request asked for it with `steal`');
    this.#since = grantObserved() ? performance.now() : 0;
    if (this.#since !== 0) {
      const event = { name, mode: grant.mode, scope, token: grant.token, abandoned: grant.abandoned, waitedMs };
      if (acquireChannel.hasSubscribers) acquireChannel.publish(event);
      debug('granted %s %s lock %s (token %d%s, waited %s)', scope, grant.mode, JSON.stringify(name), grant.token, grant.abandoned ? ', abandoned' : '', ms(waitedMs));
    }
  }

  /** False once released (or lost). */
  get held(): boolean {
    return this.#held && this.#state.lost === undefined;
  }

  /** @internal The Lock a request() callback is given: the same lock, without unlock(). */
  view(): Lock {
    return new Lock(this.name, this.mode, this.scope, this.token, this.abandoned, this.#state);
  }

  /**
   * Release the lock. Throws ERR_LOCK_NOT_LOCKED the second time, and the
   * loss when it had been lost while held, so that a lost lock is never
   * released silently: an AbortError for a steal, ERR_LOCK_COMPROMISED for
   * a host lease that ran out (both with `reason`).
   */
  unlock(): void {
    if (!this.#held) throw new ERR_LOCK_NOT_LOCKED(`${JSON.stringify(this.name)} (this guard already released it)`);
    const lost = this.release();
    if (lost !== undefined) throw lost;
  }

  /** @internal Release, whether held or lost; the loss, if there was one (request() has reported it already). */
  release(): Error | undefined {
    if (!this.#held) return undefined;
    this.#held = false;
    this.#holdings[this.#grant.node] = undefined;
    // False: stolen, and the notice is still on its way (it will find no holder of this node, or a later one, and be dropped).
    if (!this.#queue.release(this.#grant)) this.lose('stolen', 'another request asked for it with `steal`');
    if (this.#since !== 0) {
      const heldMs = performance.now() - this.#since;
      if (releaseChannel.hasSubscribers) releaseChannel.publish({ name: this.name, mode: this.mode, scope: this.scope, token: this.token, heldMs });
      debug('released %s %s lock %s (token %d, held %s)', this.scope, this.mode, JSON.stringify(this.name), this.token, ms(heldMs));
    }
    return this.#state.lost;
  }

  [Symbol.dispose](): void {
    if (this.#held) this.unlock();
  }

  /** @internal Whether this is the grant of `token` in the queue of `slot` (generation `gen`). */
  is(slot: number, gen: number, token: number): boolean {
    return this.#queue.slot === slot && this.#queue.gen === gen && this.token === token;
  }

  /** @internal Called when the lock is lost while held. */
  lose(reason: LossReason, detail: string): void {
    if (this.#state.lost !== undefined) return;
    const error = lossError(this.name, reason, detail);
    this.#state.lose(error);
    if (observed()) {
      // heldMs: known when somebody observed the grant too (`#since` is not set yet when the constructor finds it lost).
      const since = this.#since || 0, heldMs = since === 0 ? 0 : performance.now() - since;
      lockLost({ name: this.name, mode: this.mode, scope: this.scope, token: this.token, reason, detail, heldMs });
    }
    try {
      this.#onLost?.(error);
    } catch (err) {
      // Thrown by the holder's onCompromised, maybe inside the stealer's request: the stealer must still get its lock.
      process.nextTick(() => {
        throw err;
      });
    }
  }
}
