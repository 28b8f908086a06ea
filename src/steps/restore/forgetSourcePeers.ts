import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { removeTree } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

const PEERS_TABLE = /^(peers|peers_v2)-[0-9a-f]{32}$/;

/**
 * A cluster backup into one node: the first part's `system.peers` and `system.peers_v2` SSTables are removed from
 * the staging directories before the node starts on them. Left in, the maintenance start would load the source's
 * other nodes into gossip (same cluster_name as the live source cluster, their real addresses and ports) and
 * their tokens, owning only the first host's ranges, so nodetool import would refuse the other hosts' rows.
 * Cassandra creates the tables empty. Idempotent.
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
