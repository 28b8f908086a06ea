import { deleteClusterRecord } from '../../catalog/clusterRecord.ts';
import type { ClusterStepInput } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked } from './deps.ts';

/** Deletes the cluster record if a failed write landed after all; none there is no error (idempotent). */
export async function removeClusterRecord(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<void> {
  await pauseIfAsked(deps, 'removeClusterRecord', signal);
  await deleteClusterRecord(deps.store, input.ctx.backupId, signal);
}
