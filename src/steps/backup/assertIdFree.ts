import { CbrError } from '../../core/errors.ts';
import type { StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

/**
 * A backup id names objects in storage and a snapshot tag on the node; both must be free before the first
 * snapshot is taken, or a reused id would overwrite another backup (and purge it on failure) and the
 * `clearsnapshot -t <id>` around the snapshot would remove an operator's own snapshot of that name.
 */
export async function assertIdFree(deps: BackupDeps, { ctx }: StepInput, signal: AbortSignal): Promise<void> {
  for await (const o of deps.store.list(`${ctx.backupId}/`, { signal })) {
    throw new CbrError('CBR_ERR_BACKUP_EXISTS', `backup id ${ctx.backupId} is taken: ${deps.store.description} holds ${o.key}`);
  }
  if ((await deps.nodetool.listSnapshots(signal)).includes(ctx.backupId)) {
    throw new CbrError('CBR_ERR_BACKUP_EXISTS', `backup id ${ctx.backupId} is taken: node ${deps.profile.name} has a snapshot tagged ${ctx.backupId}`);
  }
}
