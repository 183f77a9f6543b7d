/**
 * Loss notices: how the holders of front-door locks learn that their locks
 * were lost while held (stolen, a host lease gone, a cluster session ended),
 * in whatever thread of the process they run.
 *
 * Every held lock registers its holding here, by table and request node
 * (lock-guard.ts). Whoever learns of a loss calls announceLoss(): holders in
 * this thread are told at once; the rest go out on one process-wide
 * BroadcastChannel, which every thread holding a lock listens to. A thread
 * with no holding of its own (the lease keeper, the cluster agent) only
 * posts. Notices name each grant by its queue (slot and the slot's
 * generation) and its token, so a notice never hits a later grant on a
 * reused node.
 */
import { BroadcastChannel } from 'node:worker_threads';

export const LOSS_CHANNEL = 'latchkey:lost';

/** Why a held lock was lost. */
export type LossReason = 'stolen' | 'expired' | 'marker-missing' | 'owner-changed' | 'renew-failed';

/** The lost grants: their queue (slot and its generation) and their tokens, one per node. */
export interface LostGrants {
  slot: number;
  gen: number;
  tokens: number[];
}

export interface LossMessage {
  /** The table's identity (layout H_ID). */
  table: string;
  /** The request nodes whose grants were lost. */
  nodes: number[];
  reason: LossReason;
  detail: string;
  grants: LostGrants;
}

/** A held lock of this thread, as a notice finds it. */
export interface Holding {
  /** Whether it is the grant of `token` in the queue of `slot` (generation `gen`). */
  is(slot: number, gen: number, token: number): boolean;
  lose(reason: LossReason, detail: string): void;
}

/** This thread's held locks, by table, then by request node. */
const holdings = new Map<string, Array<Holding | undefined>>();
let listening: BroadcastChannel | undefined;
let poster: BroadcastChannel | undefined;

/** The holdings of this thread in table `tableId`, by node: a held lock puts itself at its node, and takes itself away. */
export function holdingsOf(tableId: string): Array<Holding | undefined> {
  if (listening === undefined) listen();
  let byNode = holdings.get(tableId);
  if (byNode === undefined) holdings.set(tableId, (byNode = []));
  return byNode;
}

function listen(): void {
  listening = new BroadcastChannel(LOSS_CHANNEL);
  // Never keeps a thread alive: a thread with nothing else to do has no held lock to be told about.
  listening.unref();
  listening.onmessage = (event) => {
    const { table, nodes, reason, detail, grants } = (event as { data: LossMessage }).data;
    const byNode = holdings.get(table);
    nodes.forEach((node, i) => holderOf(byNode, node, grants, i)?.lose(reason, detail));
  };
}

/** The holding of `nodes[i]`, if it is the grant that was lost: not a later grant of a reused node. */
function holderOf(byNode: Array<Holding | undefined> | undefined, node: number, grants: LostGrants, i: number): Holding | undefined {
  const h = byNode?.[node];
  return h !== undefined && h.is(grants.slot, grants.gen, grants.tokens[i]!) ? h : undefined;
}

/** Tell the holders of `nodes` (in any thread of the process) that their locks are lost. */
export function announceLoss(table: string, nodes: number[], reason: LossReason, detail: string, grants: LostGrants): void {
  const elsewhere: number[] = [], tokens: number[] = [], byNode = holdings.get(table);
  nodes.forEach((node, i) => {
    const mine = holderOf(byNode, node, grants, i);
    if (mine !== undefined) mine.lose(reason, detail);
    else {
      elsewhere.push(node);
      tokens.push(grants.tokens[i]!);
    }
  });
  if (elsewhere.length === 0) return;
  if (poster === undefined) {
    poster = new BroadcastChannel(LOSS_CHANNEL);
    poster.unref(); // posting needs no loop turn: never keeps a thread alive
  }
  poster.postMessage({ table, nodes: elsewhere, reason, detail, grants: { ...grants, tokens } } satisfies LossMessage);
}

/** A steal released other requests' grants (a queue's QueueWiring.onStolen). */
export function announceSteal(q: { tableId: string; slot: number; gen: number }, nodes: number[], tokens: number[]): void {
  announceLoss(q.tableId, nodes, 'stolen', 'another request asked for it with `steal`', { slot: q.slot, gen: q.gen, tokens });
}
