import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { removeTree } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** The system tables in which a node keeps the other nodes of its ring (their addresses, host ids, tokens). */
const PEER_TABLES = /^(peers|peers_v2)-[0-9a-f]{32}$/;

/**
 * A part of a cluster backup carries its source node's peers. Started on them (the maintenance start, alone on
 * loopback), the node would load them as its saved ring and gossip with the source's nodes, under the source's
 * cluster_name and with a source node's host id: it could disturb the live source cluster. So their SSTables go
 * from the staging directories before the node first starts (the tables themselves stay, empty); the new nodes
 * learn each other from the new seeds. Idempotent: a re-run finds nothing left to remove.
 */
export async function clearStagedPeers(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<{ removed: number }> {
  let removed = 0;
  for (const { staging } of restorePaths(deps.profile, ctx.workflowId).stagings) {
    signal.throwIfAborted();
    const system = join(staging, 'system');
    if (!existsSync(system)) continue;
    for (const table of await readdir(system)) {
      if (!PEER_TABLES.test(table)) continue;
      for (const file of await readdir(join(system, table))) {
        await removeTree(join(system, table, file));
        removed++;
      }
    }
  }
  if (removed) deps.log.info("the source's peers removed from the staged system keyspace", { files: removed });
  return { removed };
}
