/**
 * Importing latchkey, the cluster tier's part of steps 2 to 5 of
 * process.ts: its queue table reserved and watched, its agent served to
 * workers that ask, its exit (after the host tier's: process.ts registers
 * that first), and the front door told where the tier is (locks.ts
 * setClusterTier). Apart, so that the latchkey command loads the cluster
 * tier only for --scope cluster (issue 16). index.ts imports it.
 */
import { isMainThread } from 'node:worker_threads';
import { reserveTable, serveHelpersOf } from './process.js'; // first: all of process.ts happens before this
import { QUEUE_KINDS } from './atomics/queue/table.js';
import { queueRecovery } from './atomics/queue/recovery.js';
import { setClusterTier } from './locks.js';
import * as cluster from './bridge/cluster/cluster.js';

setClusterTier(cluster);
reserveTable(cluster.CLUSTER_TABLE_KEY, cluster.kClusterGeometry, QUEUE_KINDS, queueRecovery(() => cluster.clusterOuter));
serveHelpersOf([cluster.agentSpec]);
process.once('exit', () => {
  if (isMainThread) cluster.clusterExit();
});
