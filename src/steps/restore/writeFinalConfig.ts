import { readFile, stat } from 'node:fs/promises';
import { finalYaml, type SettingChange } from '../../cassandra/configFiles.ts';
import { writeFileAtomic } from '../../core/atomicWrite.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * The operator's cassandra.yaml again (authentication, addresses, ports, every comment), with the new
 * cluster_name and the settings the restored data needs (num_tokens, partitioner, SSTable identifiers and
 * format, storage compatibility mode); what changed is returned for the result.
 */
export async function writeFinalConfig(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, signal: AbortSignal): Promise<{ changes: SettingChange[] }> {
  signal.throwIfAborted();
  const paths = restorePaths(deps.profile, ctx.workflowId);
  const original = await readFile(paths.yamlOrig, 'utf8');
  const { text, changes } = finalYaml(original, ctx.clusterName, plan.settings);
  await writeFileAtomic(paths.yaml, text, (await stat(paths.yamlOrig)).mode & 0o777);
  for (const c of changes) deps.log.info('cassandra.yaml setting changed for the restored data', { key: c.key, from: c.from, to: c.to });
  return { changes };
}
