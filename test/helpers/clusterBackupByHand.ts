import assert from 'node:assert/strict';
import { loadProfile } from '../../src/cassandra/profile.ts';
import { readSchema, readTopology } from '../../src/cassandra/topology.ts';
import { type ClusterRecord, partId, writeClusterRecord } from '../../src/catalog/clusterRecord.ts';
import { openStore } from '../../src/storage/open.ts';
import { DEFAULT_CONTAINER } from '../../src/storage/port.ts';
import { cbr } from './cli.ts';
import { cqlFor } from './data.ts';

/**
 * A cluster backup made the way the coordinator (src/machines/clusterBackup.machine.ts) lays it out, without the
 * bus: an ordinary `cbr backup-create --id <id>-<n>` on each node's profile, then the ring and schema read from
 * the first node and the cluster record written last. Local storage under `env.CBR_STORAGE_ROOT`.
 */
export async function clusterBackupByHand(id: string, profilePaths: string[], env: NodeJS.ProcessEnv): Promise<ClusterRecord> {
  const root = env['CBR_STORAGE_ROOT'];
  assert.ok(root, 'clusterBackupByHand takes local storage under CBR_STORAGE_ROOT');
  const created = new Date().toISOString();
  for (const [i, path] of profilePaths.entries()) {
    const r = await cbr(['backup-create', `${id}-part`, '--config', path, '--id', partId(id, i), '--json'], env);
    assert.equal(r.code, 0, r.err);
  }
  const profiles = await Promise.all(profilePaths.map((p) => loadProfile(p)));
  const cql = await cqlFor(profiles[0]!);
  try {
    const ring = await readTopology(cql);
    const schema = await readSchema(cql);
    const hosts = profiles.map((p, i) => {
      const h = ring.hosts.find((x) => x.address === p.cql.host);
      assert.ok(h, `node ${p.name} (${p.cql.host}) is in the ring`);
      return { host: p.name, backupId: partId(id, i), hostId: h.hostId, address: h.address, datacenter: h.datacenter, rack: h.rack, tokens: h.tokens };
    });
    const record: ClusterRecord = {
      format: 1,
      kind: 'cluster',
      id,
      name: `${id}-by-hand`,
      description: 'made by test/helpers/clusterBackupByHand.ts',
      state: 'COMPLETED',
      clusterName: ring.clusterName,
      partitioner: ring.partitioner,
      strategy: 'full',
      created,
      finished: new Date().toISOString(),
      schema,
      hosts,
    };
    await writeClusterRecord(openStore({ driver: 'local', root, container: DEFAULT_CONTAINER }), record);
    return record;
  } finally {
    await cql.close();
  }
}
