import { existsSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { removeTree } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { assertStopped } from './assertStopped.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * Inverse of swapDataDirs: whatever was moved aside goes back to its live name; the restored files go. Only on a
 * node that is really stopped: otherwise it refuses and the rollback ends with the directories as they are.
 */
export async function restoreDataDirs(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  const paths = restorePaths(deps.profile, ctx.workflowId);
  if (!paths.moves.some(({ old }) => existsSync(old))) return;
  await assertStopped(deps, 'the data directories are');
  for (const { live, old } of paths.moves) {
    signal.throwIfAborted();
    if (!existsSync(old)) continue;
    await removeTree(live);
    await rename(old, live);
  }
}
