/**
 * How a thread tells the other threads of its process that held locks were
 * lost (stolen, or a host lease gone): one BroadcastChannel, which every
 * thread holding a front-door lock listens to (lock-guard.ts). The host
 * tier's lease keeper, a thread with no holder of its own, only posts.
 */
import { BroadcastChannel } from 'node:worker_threads';

export const LOSS_CHANNEL = 'latchkey:lost';

/** Why a held lock was lost. */
export type LossReason = 'stolen' | 'expired' | 'marker-missing' | 'owner-changed' | 'renew-failed';

export interface LossMessage {
  /** The table's identity (layout H_ID). */
  table: string;
  /** The request nodes whose grants were lost. */
  nodes: number[];
  reason: LossReason;
  detail: string;
  /**
   * The lost grants: their queue (slot and its generation) and their
   * tokens, one per node. A node's holder may have let it go and reused it
   * since; a notice that does not match its holding is dropped.
   */
  grants: LostGrants;
}

export interface LostGrants {
  slot: number;
  gen: number;
  tokens: number[];
}

let poster: BroadcastChannel | undefined;

export function broadcastLoss(message: LossMessage): void {
  if (poster === undefined) {
    poster = new BroadcastChannel(LOSS_CHANNEL);
    poster.unref(); // posting needs no loop turn: never keeps a thread alive
  }
  poster.postMessage(message);
}
