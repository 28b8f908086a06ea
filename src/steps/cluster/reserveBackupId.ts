import { recordKey } from '../../catalog/catalog.ts';
import { clusterRecordKey, deletePendingMarker, partId, readPendingMarker, writePendingMarker } from '../../catalog/clusterRecord.ts';
import { CbrError } from '../../core/errors.ts';
import type { ClusterStepInput } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked } from './deps.ts';

/**
 * Takes the cluster backup id for this run before any host is asked anything. Refused (CBR_ERR_BACKUP_EXISTS,
 * nothing touched): an id with a cluster record (reusing it would have the agents, which dedupe commands by id,
 * answer with the old parts, and an abort would delete them), or with a host backup under a part's id. Then the
 * pending marker is written create-only; one already there is accepted only when it is this run's (a resume).
 */
export async function reserveBackupId(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<void> {
  await pauseIfAsked(deps, 'reserveBackupId', signal);
  const { ctx, parts } = input;
  const opts = { signal };
  if (await deps.store.head(clusterRecordKey(ctx.backupId), opts))
    throw new CbrError('CBR_ERR_BACKUP_EXISTS', `cluster backup ${ctx.backupId} already exists (cbr.clusters/${ctx.backupId}.json): choose another id`);
  for (const i of parts.keys()) {
    const id = partId(ctx.backupId, i);
    if (await deps.store.head(recordKey(id), opts))
      throw new CbrError('CBR_ERR_BACKUP_EXISTS', `a backup ${id} (the id of part ${i + 1} of ${ctx.backupId}) already exists: choose another id`);
  }
  const mine = { coordinator: ctx.workflowId, started: ctx.startedAt };
  try {
    await writePendingMarker(deps.store, ctx.backupId, mine, signal);
  } catch (err) {
    // The put may have landed before it failed or was cancelled, and this state fails the run for good: a marker of
    // this run is taken back so the id is free again (another run's is left alone).
    const there = await readPendingMarker(deps.store, ctx.backupId).catch(() => null);
    if (there?.coordinator === mine.coordinator && there.started === mine.started) await deletePendingMarker(deps.store, ctx.backupId).catch(() => {});
    throw err;
  }
}
