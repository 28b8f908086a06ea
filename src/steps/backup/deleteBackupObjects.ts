import { deleteBackup } from '../../catalog/catalog.ts';
import { releaseBackupLease } from '../../catalog/leases.ts';
import type { StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

/**
 * Compensation of streamArchive/writeRecord: removes the record and any object of this backup. Idempotent. When
 * the id turned out to be another backup's (it was taken while this one ran), nothing is removed: those objects
 * are not this workflow's.
 */
export async function deleteBackupObjects(
  deps: BackupDeps,
  { ctx }: StepInput & { ctx: { error?: { code: string } | null } },
  signal: AbortSignal,
): Promise<void> {
  if (ctx.error?.code === 'CBR_ERR_BACKUP_EXISTS') {
    deps.log.warn('backup id taken by another backup: its objects are left alone', { backupId: ctx.backupId });
    return;
  }
  const { removed: n } = await deleteBackup(deps.store, ctx.backupId, signal, deps.log);
  if (n > 0) deps.log.info('removed partial backup objects', { count: n });
  // Blobs a failed incremental backup stored are unreferenced now: its lease no longer keeps a collection away.
  if (ctx.strategy === 'incremental') await releaseBackupLease(deps.store, deps.profile.hostId, ctx.backupId, signal);
}
