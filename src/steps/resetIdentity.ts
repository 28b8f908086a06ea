import bcrypt from 'bcryptjs';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import type { RestoreDeps } from './restoreDeps.ts';

/**
 * On the maintenance start: the new cluster_name into system.local, the source's peers out (the node must never
 * gossip with the source's cluster), the superuser's password set (created as a login superuser if the backup
 * lacks it), everything flushed, then the node stopped. Each statement is idempotent.
 */
export async function resetIdentity(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  // Re-run after a crash, the node may be down; the maintenance configuration is still in place.
  if (!(await deps.service.isRunning())) await deps.service.start(signal);
  const password = await deps.readPassword();
  const cql = await deps.cql();
  try {
    await cql.execute("UPDATE system.local SET cluster_name = ? WHERE key = 'local'", [ctx.clusterName]);
    for (const row of await cql.execute('SELECT peer FROM system.peers')) {
      await cql.execute('DELETE FROM system.peers WHERE peer = ?', [row['peer']]);
    }
    for (const row of await cql.execute('SELECT peer, peer_port FROM system.peers_v2')) {
      await cql.execute('DELETE FROM system.peers_v2 WHERE peer = ? AND peer_port = ?', [row['peer'], row['peer_port']]);
    }
    await cql.execute(
      'INSERT INTO system_auth.roles (role, is_superuser, can_login, salted_hash) VALUES (?, true, true, ?)',
      [ctx.superuser, jbcryptHash(password)],
    );
  } finally {
    await cql.close();
  }
  await deps.nodetool.flush(undefined, undefined, signal);
  await deps.service.stop(signal);
}

/** bcrypt, cost 10, with the `$2a$` prefix: Cassandra's jBCrypt accepts no other (bcryptjs writes `$2b$`). */
export function jbcryptHash(password: string): string {
  const salt = bcrypt.genSaltSync(10).replace(/^\$2b\$/, '$2a$');
  const hash = bcrypt.hashSync(password, salt);
  if (!hash.startsWith('$2a$10$')) throw new Error('unexpected bcrypt hash format');
  return hash;
}
