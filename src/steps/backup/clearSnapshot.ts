import { retry } from '../../core/retry.ts';
import type { StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

/** Clears the snapshot tagged with the backup id. Clearing a tag that does not exist succeeds, so re-runs are safe. */
export async function clearSnapshot(deps: BackupDeps, { ctx }: StepInput, signal: AbortSignal): Promise<void> {
  await retry(() => deps.nodetool.clearSnapshot(ctx.backupId, signal), {
    attempts: 3,
    baseMs: 1000,
    signal,
    onRetry: ({ attempt, error }) => deps.log.warn('clearsnapshot failed, retrying', { attempt, error: (error as Error).message }),
  });
}
