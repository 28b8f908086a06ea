import { readFile, stat } from 'node:fs/promises';
import { setYamlScalar } from '../cassandra/yaml.ts';
import { writeFileAtomic } from '../fsutil.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** The operator's cassandra.yaml again (authentication, addresses), with only cluster_name changed. */
export async function writeFinalConfig(deps: RestoreDeps, { ctx }: RestoreStepInput): Promise<void> {
  const paths = restorePaths(deps.profile, ctx.workflowId);
  const original = await readFile(paths.yamlOrig, 'utf8');
  await writeFileAtomic(paths.yaml, setYamlScalar(original, 'cluster_name', ctx.clusterName), (await stat(paths.yamlOrig)).mode & 0o777);
}
