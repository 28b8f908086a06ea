import { setTimeout as sleep } from 'node:timers/promises';
import type { StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

/** Clears the snapshot tagged with the backup id. Clearing a tag that does not exist succeeds, so re-runs are safe. */
export async function clearSnapshot(deps: BackupDeps, { ctx }: StepInput, signal: AbortSignal): Promise<void> {
  let last: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      await deps.nodetool.clearSnapshot(ctx.backupId, signal);
      return;
    } catch (err) {
      last = err;
      if (signal.aborted) break;
      deps.log.warn('clearsnapshot failed, retrying', { attempt, error: (err as Error).message });
      await sleep(1000 * attempt, undefined, { signal }).catch(() => {});
    }
  }
  throw last;
}
