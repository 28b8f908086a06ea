import { CbrError, toErrorInfo } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { ownerAlive, ownerToken } from '../runtime/owner.ts';
import { buildRestoreDeps } from '../runtime/wiring.ts';
import { type ClusterRestoreJournal, deadJournals, listJournals } from '../steps/clusterRestore/journal.ts';
import { recoverClusterRestore } from '../steps/clusterRestore/restoreCluster.ts';

/**
 * The journals of cluster restores whose `cbr create` process is gone, recovered one by one (every node rolled
 * back, or finished when the run had reached finalize). `only`: journals touching these profiles only.
 */
export async function recoverDeadClusterRestores(
  env: NodeJS.ProcessEnv,
  log: Logger,
  only?: string[],
): Promise<{ journal: ClusterRestoreJournal; action: 'finalize' | 'rollBack'; warnings: string[] }[]> {
  const out = [];
  const mine = (j: ClusterRestoreJournal) => !only || j.nodes.some((n) => only.includes(n.profilePath));
  for (const j of deadJournals(listJournals(env).filter(mine), (owner, pid) => ownerAlive(owner, pid))) {
    try {
      const r = await recoverClusterRestore(j, {
        env,
        log,
        owner: ownerToken(),
        depsFor: (input) => buildRestoreDeps(input, { env, log: log.child({ workflowId: input.workflowId }), onProgress: () => {} }),
      });
      out.push({ journal: j, ...r });
    } catch (err) {
      // One journal that cannot be recovered (a node's profile gone, say) is reported; the others are still recovered.
      if (err instanceof CbrError && err.code === 'CBR_ERR_ABORTED') throw err;
      out.push({ journal: j, action: 'rollBack' as const, warnings: [`cluster restore ${j.runId}: ${toErrorInfo(err).message}`] });
    }
  }
  return out;
}

/** Before a cluster restore onto `profiles`: a live one on any of them refuses; a dead one is recovered first. */
export async function clearEarlierClusterRestores(env: NodeJS.ProcessEnv, log: Logger, profiles: string[]): Promise<void> {
  for (const j of listJournals(env)) {
    if (j.nodes.some((n) => profiles.includes(n.profilePath)) && ownerAlive(j.owner, j.pid)) {
      throw new CbrError(
        'CBR_ERR_WORKFLOW_CONFLICT',
        `cluster restore ${j.runId} (cluster backup ${j.clusterBackupId}, pid ${j.pid}) is still running on ${j.nodes.map((n) => n.name).join(', ')} (${j.phase})`,
      );
    }
  }
  for (const r of await recoverDeadClusterRestores(env, log, profiles)) {
    if (r.warnings.length) {
      throw new CbrError(
        'CBR_ERR_CLUSTER_RESTORE_FAILED',
        `an earlier cluster restore ${r.journal.runId} onto these nodes was left by a dead process and its ${r.action === 'finalize' ? 'finalize' : 'rollback'} is incomplete: ${r.warnings.join('; ')}; fix that and run cbr resume`,
      );
    }
  }
}
