import { deleteBackup } from '../catalog.ts';
import type { StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from './deps.ts';

/** Compensation of streamArchive/writeRecord: removes the record and any object of this backup. Idempotent. */
export async function deleteBackupObjects(deps: BackupDeps, { ctx }: StepInput, signal: AbortSignal): Promise<void> {
  const n = await deleteBackup(deps.store, ctx.backupId, signal);
  if (n > 0) deps.log.info('removed partial backup objects', { count: n });
}
