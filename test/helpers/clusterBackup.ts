import { connectCql } from '../../src/cassandra/cql.ts';
import { loadCredentials } from '../../src/cassandra/profile.ts';
import { readSchema, readTopology } from '../../src/cassandra/topology.ts';
import { type ClusterRecord, partId, writeClusterRecord } from '../../src/catalog/clusterRecord.ts';
import { clusterProfiles } from '../../src/sandbox/cluster.ts';
import { profilePath } from '../../src/sandbox/sandbox.ts';
import type { ObjectStore } from '../../src/storage/port.ts';
import { cbr } from './cli.ts';

/**
 * A cluster backup of a running sandbox cluster made the way the coordinator makes one (src/catalog/clusterRecord.ts),
 * for tests of its restore while the coordinator is built elsewhere: an ordinary `cbr backup-create --id <id>-<n>` on
 * each node's profile (nodes in address order, as the coordinator sorts its hosts), then the ring and the schema read
 * from the first node, and the cluster record written last. The snapshots are taken one after the other, not
 * together: fine for data that does not change meanwhile. `env` must name the storage `store` is (CBR_STORAGE_ROOT).
 */
export async function backUpSandboxClusterForRestoreTests(
  cluster: string,
  id: string,
  store: ObjectStore,
  env: NodeJS.ProcessEnv,
  /** afterPart: runs after the `index`th part is stored (a test changing the cluster between parts). */
  opts: { strategy?: 'full' | 'incremental'; afterPart?: (index: number) => Promise<void> } = {},
): Promise<ClusterRecord> {
  const created = new Date().toISOString();
  const profiles = await clusterProfiles(cluster, env);
  for (const [i, p] of profiles.entries()) {
    const args = ['backup-create', `${id}-part`, '--config', profilePath(p.name, env), '--id', partId(id, i), '--json'];
    if (opts.strategy) args.push('--strategy', opts.strategy);
    const r = await cbr(args, env);
    if (r.code !== 0) throw new Error(`backup of ${p.name} failed: ${r.err}`);
    await opts.afterPart?.(i);
  }
  const first = profiles[0]!;
  const cql = await connectCql({ ...first.cql, credentials: await loadCredentials(first.cql.credentialsFile) });
  let record: ClusterRecord;
  try {
    const topology = await readTopology(cql);
    const schema = await readSchema(cql);
    record = {
      format: 1,
      kind: 'cluster',
      id,
      name: id,
      description: `test cluster backup of ${cluster}`,
      state: 'COMPLETED',
      clusterName: topology.clusterName,
      partitioner: topology.partitioner,
      strategy: opts.strategy ?? 'full',
      created,
      finished: new Date().toISOString(),
      schema,
      hosts: profiles.map((p, i) => {
        const h = topology.hosts.find((x) => x.address === p.cql.host);
        if (!h) throw new Error(`node ${p.name} (${p.cql.host}) is not in the ring ${topology.hosts.map((x) => x.address).join(', ')}`);
        return { host: p.name, backupId: partId(id, i), hostId: h.hostId, address: h.address, datacenter: h.datacenter, rack: h.rack, tokens: h.tokens };
      }),
    };
  } finally {
    await cql.close();
  }
  await writeClusterRecord(store, record);
  return record;
}
