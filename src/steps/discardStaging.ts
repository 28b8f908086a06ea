import { rm } from 'node:fs/promises';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** Removes the staging directory of a restore that is rolled back. */
export async function discardStaging(deps: RestoreDeps, { ctx }: RestoreStepInput): Promise<void> {
  await rm(restorePaths(deps.profile, ctx.workflowId).staging, { recursive: true, force: true });
}
