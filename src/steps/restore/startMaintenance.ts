import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { maintenanceYaml } from '../../cassandra/configFiles.ts';
import { freeLoopbackPorts } from '../../cassandra/ports.ts';
import { writeFileAtomic } from '../../core/atomicWrite.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * Start 1 of 2. Keeps the operator's cassandra.yaml as `<yaml>.cbr-orig-<id>` (rollback puts it back), writes the
 * maintenance configuration (loopback only, on native and storage ports picked for this start, whatever
 * address and ports the profile names) and starts the node on it.
 */
export async function startMaintenance(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  const paths = restorePaths(deps.profile, ctx.workflowId);
  if (!existsSync(paths.yamlOrig)) {
    await writeFileAtomic(paths.yamlOrig, await readFile(paths.yaml), (await stat(paths.yaml)).mode & 0o777);
  }
  const original = await readFile(paths.yamlOrig, 'utf8');
  if (await deps.service.isRunning()) await deps.service.stop(signal);
  const [nativePort, storagePort] = await freeLoopbackPorts(2);
  const text = maintenanceYaml(original, { clusterName: plan.sourceClusterName, nativePort: nativePort!, storagePort: storagePort!, data: plan.settings });
  await writeFileAtomic(paths.yaml, text, (await stat(paths.yamlOrig)).mode & 0o777);
  await deps.service.start(signal, { host: '127.0.0.1', port: nativePort! });
}
