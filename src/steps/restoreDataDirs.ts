import { existsSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** Inverse of swapDataDirs: whatever was moved aside goes back to its live name; the restored files go. */
export async function restoreDataDirs(deps: RestoreDeps, { ctx }: RestoreStepInput): Promise<void> {
  const paths = restorePaths(deps.profile, ctx.workflowId);
  for (const { live, old } of paths.moves) {
    if (!existsSync(old)) continue;
    await rm(live, { recursive: true, force: true });
    await rename(old, live);
  }
}
