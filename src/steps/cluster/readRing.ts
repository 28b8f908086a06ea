import { readSchema, readTopology } from '../../cassandra/topology.ts';
import { clusterRecordSchema } from '../../catalog/clusterRecord.ts';
import { CbrError } from '../../core/errors.ts';
import type { ClusterStepInput, RingAtBarrier } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked } from './deps.ts';

/**
 * The ring and the schema on the coordinator's node, read right after the barrier: the instant the held snapshots
 * stand for, and before anything is uploaded, so a CQL failure here aborts held snapshots rather than a finished
 * backup. Kept in the persisted context: the record step needs no CQL. A schema or cluster name the record could not
 * carry fails here already (CBR_ERR_CLUSTER_RECORD_INVALID), before any upload.
 */
export async function readRing(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<RingAtBarrier> {
  await pauseIfAsked(deps, 'readRing', signal);
  const cql = await deps.cql();
  let ring: RingAtBarrier;
  try {
    const t = await readTopology(cql);
    const schema = await readSchema(cql);
    ring = {
      clusterName: t.clusterName,
      partitioner: t.partitioner,
      hosts: t.hosts.map((h) => ({ hostId: h.hostId, address: h.address, datacenter: h.datacenter, rack: h.rack, tokens: h.tokens })),
      schema,
    };
  } finally {
    await cql.close();
  }
  signal.throwIfAborted();
  if (ring.clusterName !== input.ctx.cluster)
    throw new CbrError(
      'CBR_ERR_CLUSTER_PART_MISMATCH',
      `the coordinator's node is of cluster ${JSON.stringify(ring.clusterName)}, not ${JSON.stringify(input.ctx.cluster)}`,
    );
  for (const field of ['clusterName', 'partitioner', 'schema'] as const) {
    const r = clusterRecordSchema.shape[field].safeParse(ring[field]);
    if (!r.success)
      throw new CbrError('CBR_ERR_CLUSTER_RECORD_INVALID', `the cluster record could not hold the ${field} read from the ring: ${r.error.issues[0]?.message}`);
  }
  return ring;
}
