import { readFile } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import { maintenanceEndpoint } from '../../cassandra/configFiles.ts';
import { CassandraYaml } from '../../cassandra/yaml.ts';
import { writeFileAtomic } from '../../core/atomicWrite.ts';
import { CbrError } from '../../core/errors.ts';
import { retry } from '../../core/retry.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * On the maintenance start: the new cluster_name into system.local, the source's peers out (the node must never
 * gossip with the source's cluster), the superuser's password set (created as a login superuser if the backup
 * lacks it), everything flushed, then the node stopped. Each statement is idempotent. Returns every superuser
 * role of the restored data, so the operator sees any they did not expect.
 */
export async function resetIdentity(deps: RestoreDeps, input: RestoreStepInput, signal: AbortSignal): Promise<{ superusers: string[] }> {
  // Re-run after a crash, the node this step finds may be up, booting, or draining on its way down (the crash
  // came during the stop at the end): one that does not answer as it should is stopped and started afresh, once.
  return retry(() => resetOnce(deps, input, signal), {
    attempts: 2,
    baseMs: 0,
    signal,
    retryable: (err) => err instanceof CbrError && RESTARTABLE.has(err.code),
    onRetry: async ({ error }) => {
      const err = error as CbrError;
      deps.log.warn('the maintenance node did not answer as expected; restarting it once', { code: err.code, error: err.message.split('\n')[0] });
      await deps.service.stop(signal);
      await matchSavedClusterName(deps, input, err.message);
    },
  });
}

const RESTARTABLE = new Set<string>(['CBR_ERR_CQL_FAILED', 'CBR_ERR_NODETOOL_FAILED', 'CBR_ERR_SERVICE_CONTROL_FAILED']);

/**
 * A reset that was killed after it flushed the new cluster_name leaves system.local saying the new name, while the
 * maintenance configuration says the source's: Cassandra refuses that start ("Saved cluster name X != configured
 * name Y"). The maintenance configuration then takes the saved name, which must be one of the two this restore
 * knows (the new one, or the source's); the statements below set the new one again either way.
 */
async function matchSavedClusterName(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, why: string): Promise<void> {
  const saved = /Saved cluster name (.+?) != configured name/.exec(why)?.[1];
  if (saved === undefined || (saved !== ctx.clusterName && saved !== plan.sourceClusterName)) return;
  const { yaml } = restorePaths(deps.profile, ctx.workflowId);
  const y = CassandraYaml.parse(await readFile(yaml, 'utf8'));
  y.setString('cluster_name', saved);
  await writeFileAtomic(yaml, y.toString());
}

async function resetOnce(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<{ superusers: string[] }> {
  // The maintenance configuration is in place (also when this re-runs after a crash): CQL answers where it says.
  const endpoint = maintenanceEndpoint(await readFile(restorePaths(deps.profile, ctx.workflowId).yaml, 'utf8'));
  // Started, still booting (the process that started it may have been killed), or down: start() starts it only
  // when no process of the node runs, and in every case waits until CQL answers.
  await deps.service.start(signal, endpoint);
  const password = await deps.readPassword();
  const cql = await deps.cql(undefined, endpoint);
  let superusers: string[];
  try {
    await cql.execute("UPDATE system.local SET cluster_name = ? WHERE key = 'local'", [ctx.clusterName]);
    for (const row of await cql.execute('SELECT peer FROM system.peers')) {
      await cql.execute('DELETE FROM system.peers WHERE peer = ?', [row['peer']]);
    }
    for (const row of await cql.execute('SELECT peer, peer_port FROM system.peers_v2')) {
      await cql.execute('DELETE FROM system.peers_v2 WHERE peer = ? AND peer_port = ?', [row['peer'], row['peer_port']]);
    }
    await cql.execute('INSERT INTO system_auth.roles (role, is_superuser, can_login, salted_hash) VALUES (?, true, true, ?)', [
      ctx.superuser,
      jbcryptHash(password),
    ]);
    const roles = await cql.execute('SELECT role, is_superuser FROM system_auth.roles');
    superusers = roles
      .filter((r) => r['is_superuser'] === true)
      .map((r) => String(r['role']))
      .sort();
  } finally {
    await cql.close();
  }
  await deps.nodetool.flush(undefined, undefined, signal);
  await deps.service.stop(signal);
  return { superusers };
}

/** bcrypt, cost 10, with the `$2a$` prefix: Cassandra's jBCrypt accepts no other (bcryptjs writes `$2b$`). */
export function jbcryptHash(password: string): string {
  const salt = bcrypt.genSaltSync(10).replace(/^\$2b\$/, '$2a$');
  const hash = bcrypt.hashSync(password, salt);
  if (!hash.startsWith('$2a$10$')) throw new Error('unexpected bcrypt hash format');
  return hash;
}
