import { removeTree } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** Removes the staging directories of a restore that is rolled back. */
export async function discardStaging(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  for (const { staging } of restorePaths(deps.profile, ctx.workflowId).stagings) await removeTree(staging);
}
