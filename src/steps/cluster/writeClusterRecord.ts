import { readSchema, readTopology } from '../../cassandra/topology.ts';
import { readRecord } from '../../catalog/catalog.ts';
import {
  type ClusterRecord,
  clusterRecordKey,
  deletePendingMarker,
  partId,
  writeClusterRecord as putClusterRecord,
  readClusterRecord,
} from '../../catalog/clusterRecord.ts';
import { CbrError } from '../../core/errors.ts';
import type { ClusterStepInput } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked, withBus } from './deps.ts';

/**
 * The cluster record, written last and create-only: the ring as the coordinator's node sees it (host ids,
 * datacenters, racks, tokens) and the schema, each host matched to its ring entry by the tokens its part's own
 * record carries. A record already there that names the same parts is this step's own earlier write (a resume):
 * success. One naming other parts is refused (CBR_ERR_WORKFLOW_CONFLICT), never overwritten.
 */
export async function writeClusterRecord(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<{ recordKey: string }> {
  await pauseIfAsked(deps, 'writeClusterRecord', signal);
  const { ctx, parts } = input;
  const records = await Promise.all(parts.map((_, i) => readRecord(deps.store, partId(ctx.backupId, i), signal)));
  // Each host's node address, as its agent announces it: a host is matched to its ring entry by it (tokens alone can
  // mislead: a node's own system.local may list tokens the ring gives another node).
  const addresses = await withBus(deps, (bus) => Promise.all(parts.map(async (p) => (await bus.ask(p.host, undefined, signal))?.address)));
  const cql = await deps.cql();
  let topology: Awaited<ReturnType<typeof readTopology>>;
  let schema: string;
  try {
    topology = await readTopology(cql);
    schema = await readSchema(cql);
  } finally {
    await cql.close();
  }
  signal.throwIfAborted();
  const hosts = parts.map((p, i) => {
    const rec = records[i]!;
    const address = addresses[i];
    const tokens = rec.settings?.tokens ?? [];
    const key = [...tokens].sort().join(',');
    const ring = address
      ? topology.hosts.find((h) => h.address === address)
      : tokens.length > 0
        ? topology.hosts.find((h) => [...h.tokens].sort().join(',') === key)
        : undefined;
    if (!ring)
      throw new CbrError(
        'CBR_ERR_INVALID_ARGUMENT',
        address
          ? `${p.host} announces node address ${address}, which no node of cluster ${topology.clusterName} has`
          : `${p.host} announces no node address, and its part ${rec.id} holds tokens no node of cluster ${topology.clusterName} owns`,
      );
    return { host: p.host, backupId: rec.id, hostId: ring.hostId, address: ring.address, datacenter: ring.datacenter, rack: ring.rack, tokens: ring.tokens };
  });
  const seen = new Set(hosts.map((h) => h.hostId));
  if (seen.size !== hosts.length) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `two hosts of cluster backup ${ctx.backupId} map onto the same node`);
  const record: ClusterRecord = {
    format: 1,
    kind: 'cluster',
    id: ctx.backupId,
    name: ctx.name,
    description: ctx.description,
    state: 'COMPLETED',
    clusterName: topology.clusterName,
    partitioner: topology.partitioner,
    strategy: ctx.strategy,
    created: ctx.startedAt,
    finished: new Date().toISOString(),
    schema,
    hosts,
  };
  try {
    await putClusterRecord(deps.store, record, signal);
  } catch (err) {
    if (!(err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_EXISTS')) throw err;
    const there = await readClusterRecord(deps.store, ctx.backupId, signal);
    const same = there.hosts.length === hosts.length && there.hosts.every((h, i) => h.backupId === hosts[i]?.backupId && h.host === hosts[i]?.host);
    if (!same) throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `a cluster record ${ctx.backupId} naming other parts is already stored`);
  }
  // The record protects the parts now; the marker that did while they were being made goes.
  await deletePendingMarker(deps.store, ctx.backupId, signal);
  return { recordKey: clusterRecordKey(ctx.backupId) };
}
