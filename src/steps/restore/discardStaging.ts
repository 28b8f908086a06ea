import { removeTree } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** Removes the staging directories of a restore that is rolled back (and a cluster backup's other parts, if any). */
export async function discardStaging(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  const paths = restorePaths(deps.profile, ctx.workflowId);
  for (const { staging } of paths.stagings) await removeTree(staging);
  await removeTree(paths.parts);
}
