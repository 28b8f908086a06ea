import { deleteClusterRecord, readClusterRecord } from '../../catalog/clusterRecord.ts';
import { CbrError } from '../../core/errors.ts';
import type { ClusterStepInput } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked } from './deps.ts';

/**
 * Deletes the cluster record if a failed write of this run landed after all; none there is no error (idempotent).
 * A record there that is not this run's (another start time, or one that does not parse: this run's was parsed before
 * its put) is never deleted: CBR_ERR_WORKFLOW_CONFLICT, and the machine fails leaving the parts as they are.
 */
export async function removeClusterRecord(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<void> {
  await pauseIfAsked(deps, 'removeClusterRecord', signal);
  const { ctx } = input;
  let there: Awaited<ReturnType<typeof readClusterRecord>>;
  try {
    there = await readClusterRecord(deps.store, ctx.backupId, signal);
  } catch (err) {
    if (err instanceof CbrError && err.code === 'CBR_ERR_BACKUP_NOT_FOUND') return;
    if (err instanceof CbrError && err.code === 'CBR_ERR_RECORD_INVALID')
      throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `the cluster record ${ctx.backupId} there is not this run's (${err.message}); it is left as it is`);
    throw err;
  }
  if (there.created !== ctx.startedAt)
    throw new CbrError(
      'CBR_ERR_WORKFLOW_CONFLICT',
      `the cluster record ${ctx.backupId} there was started ${there.created}, not by this run; it is left as it is`,
    );
  await deleteClusterRecord(deps.store, ctx.backupId, signal);
}
