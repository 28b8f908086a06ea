import { listSnapshotFiles } from '../../cassandra/layout.ts';
import type { StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

/**
 * `nodetool snapshot -t <backup id>` of all keyspaces. Re-run after a crash, the half-made snapshot is cleared
 * first, so the step is idempotent.
 */
export async function takeSnapshot(deps: BackupDeps, { ctx }: StepInput, signal: AbortSignal) {
  await deps.nodetool.clearSnapshot(ctx.backupId, signal);
  await deps.nodetool.snapshot(ctx.backupId, signal);
  const files = await listSnapshotFiles(deps.profile.dataDirs, ctx.backupId);
  return { files: files.length, bytes: files.reduce((s, f) => s + f.size, 0) };
}
