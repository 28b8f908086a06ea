import { existsSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { writeFileAtomic } from '../../core/atomicWrite.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** Rollback: the operator's cassandra.yaml back in place, unchanged. */
export async function restoreConfig(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  const paths = restorePaths(deps.profile, ctx.workflowId);
  if (!existsSync(paths.yamlOrig)) return;
  await writeFileAtomic(paths.yaml, await readFile(paths.yamlOrig), (await stat(paths.yamlOrig)).mode & 0o777);
  await rm(paths.yamlOrig, { force: true });
}
