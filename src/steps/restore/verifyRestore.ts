import { CbrError } from '../../core/errors.ts';
import { retry } from '../../core/retry.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import type { RestoreDeps } from './restoreDeps.ts';

/** The restored node answers CQL with the new password, carries the new cluster_name and every backed-up keyspace. */
export async function verifyRestore(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  const password = await deps.readPassword();
  const verifyFailed = (err: unknown) => err instanceof CbrError && err.code === 'CBR_ERR_RESTORE_VERIFY_FAILED';
  try {
    // The node may still be settling its auth after the start: a login or query that fails is tried again.
    await retry(
      async () => {
        const cql = await deps.cql({ username: ctx.superuser, password });
        try {
          const [local] = await cql.execute('SELECT cluster_name FROM system.local');
          if (local?.['cluster_name'] !== ctx.clusterName) {
            throw new CbrError('CBR_ERR_RESTORE_VERIFY_FAILED', `cluster_name is ${String(local?.['cluster_name'])}, expected ${ctx.clusterName}`);
          }
          const present = new Set((await cql.execute('SELECT keyspace_name FROM system_schema.keyspaces')).map((r) => String(r['keyspace_name'])));
          const missing = plan.keyspaces.filter((k) => !present.has(k));
          if (missing.length) throw new CbrError('CBR_ERR_RESTORE_VERIFY_FAILED', `keyspaces missing after restore: ${missing.join(', ')}`);
        } finally {
          await cql.close();
        }
      },
      { attempts: 20, baseMs: 500, maxMs: 500, jitter: 0, retryable: (err) => !verifyFailed(err), signal },
    );
  } catch (err) {
    signal.throwIfAborted();
    if (verifyFailed(err)) throw err;
    throw new CbrError('CBR_ERR_RESTORE_VERIFY_FAILED', `the restored node does not accept the new superuser password: ${(err as Error).message}`);
  }
}
