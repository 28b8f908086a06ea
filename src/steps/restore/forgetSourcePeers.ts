import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { removeTree } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

const PEERS_TABLE = /^(peers|peers_v2)-[0-9a-f]{32}$/;

/**
 * Every restore, after the unpack: the backup's `system.peers` and `system.peers_v2` SSTables are removed from the
 * staging directories before the node starts on them. A backup of one node of a cluster (a cluster backup's part)
 * names the source's other nodes there: left in, the maintenance start (under the source's cluster_name) would load
 * them into gossip and talk to them at their real addresses and ports, live or not, and own only that host's token
 * ranges, so nodetool import would refuse the other hosts' rows. Cassandra creates the tables empty; a single
 * node's backup has nothing to remove. Idempotent.
 */
export async function forgetSourcePeers(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  for (const { staging } of restorePaths(deps.profile, ctx.workflowId).stagings) {
    signal.throwIfAborted();
    const system = join(staging, 'system');
    const tables = await readdir(system).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    for (const t of tables.filter((name) => PEERS_TABLE.test(name))) await removeTree(join(system, t));
  }
}
