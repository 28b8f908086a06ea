import { rm } from 'node:fs/promises';
import { writeFileAtomic } from '../../core/atomicWrite.ts';
import { removeTree, syncFilesystems } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** The restored node is proven good: the old directories and the kept yaml go; the profile's credentials take the new password. */
export async function finalizeRestore(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  const paths = restorePaths(deps.profile, ctx.workflowId);
  const password = await deps.readPassword();
  await writeFileAtomic(deps.profile.cql.credentialsFile, JSON.stringify({ username: ctx.superuser, password }), 0o600);
  // The point of no return: what was restored is on disk before the data it replaced goes.
  await syncFilesystems(paths.moves.map((m) => m.live));
  for (const { old } of paths.moves) await removeTree(old);
  await rm(paths.yamlOrig, { force: true });
  for (const { staging } of paths.stagings) await removeTree(staging);
  await removeTree(paths.parts);
}
