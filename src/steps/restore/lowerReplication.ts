import { readFile } from 'node:fs/promises';
import { maintenanceEndpoint } from '../../cassandra/configFiles.ts';
import { SYSTEM_KEYSPACES } from '../../core/ids.ts';
import type { ReplicationChange, RestoreStepInput } from '../../machines/restore.machine.ts';
import { IMPORTED_SYSTEM_KEYSPACES } from './checkParts.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

const NTS = /(^|\.)NetworkTopologyStrategy$/;
const SIMPLE = /(^|\.)SimpleStrategy$/;

/**
 * A cluster backup into one node: one node holds every replica, so each user keyspace (and system_auth) kept at
 * RF 2 or 3 would refuse QUORUM (and ALL) reads and writes. Each is set to one replica: NetworkTopologyStrategy
 * with this node's datacenter at 1 (a datacenter name the node does not have would leave no replica at all),
 * SimpleStrategy at 1. Other strategies and keyspaces already at one replica here are left as they are.
 * Idempotent: a re-run finds them at 1. The changes are in the restore's result.
 */
export async function lowerReplication(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<{ changes: ReplicationChange[] }> {
  const endpoint = maintenanceEndpoint(await readFile(restorePaths(deps.profile, ctx.workflowId).yaml, 'utf8'));
  await deps.service.start(signal, endpoint);
  const cql = await deps.cql(undefined, endpoint);
  const changes: ReplicationChange[] = [];
  try {
    const [local] = await cql.execute('SELECT data_center FROM system.local');
    const dc = String(local?.['data_center'] ?? 'datacenter1');
    for (const row of await cql.execute('SELECT keyspace_name, replication FROM system_schema.keyspaces')) {
      signal.throwIfAborted();
      const keyspace = String(row['keyspace_name']);
      if (SYSTEM_KEYSPACES.has(keyspace) && !IMPORTED_SYSTEM_KEYSPACES.includes(keyspace)) continue;
      const from = Object.fromEntries(Object.entries((row['replication'] ?? {}) as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
      const cls = from['class'] ?? '';
      let to: Record<string, string> | null = null;
      if (NTS.test(cls)) {
        const dcs = Object.keys(from).filter((k) => k !== 'class');
        if (dcs.length !== 1 || dcs[0] !== dc || from[dc] !== '1') to = { class: 'NetworkTopologyStrategy', [dc]: '1' };
      } else if (SIMPLE.test(cls) && from['replication_factor'] !== '1') {
        to = { class: 'SimpleStrategy', replication_factor: '1' };
      }
      if (!to) continue;
      const map = Object.entries(to)
        .map(([k, v]) => `'${k.replaceAll("'", "''")}': '${v}'`)
        .join(', ');
      await cql.execute(`ALTER KEYSPACE "${keyspace.replaceAll('"', '""')}" WITH replication = {${map}}`);
      changes.push({ keyspace, from, to });
      deps.log.info('replication lowered', { keyspace, from, to });
    }
  } finally {
    await cql.close();
  }
  return { changes };
}
