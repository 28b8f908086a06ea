import { sortTokens } from '../../cassandra/topology.ts';
import { readRecord } from '../../catalog/catalog.ts';
import {
  type ClusterRecord,
  clusterRecordKey,
  deletePendingMarker,
  parseClusterRecord,
  partId,
  writeClusterRecord as putClusterRecord,
  readClusterRecord,
} from '../../catalog/clusterRecord.ts';
import { CbrError, toErrorInfo } from '../../core/errors.ts';
import type { RecordStepInput } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked, withBus } from './deps.ts';

/** How far a host's clock may be behind the coordinator's before its part counts as made before this run. */
export const CLOCK_SKEW_MS = 60_000;

/**
 * The cluster record, written last and create-only: the ring and schema read right after the barrier (in the
 * context), each host matched to its ring entry by the node address its agent announces (or, without one, by the
 * tokens its part's own record carries). Refused before anything is written:
 * - a part made before this run started (the agents dedupe commands by id, so a reused id answers with an older
 *   run's part): CBR_ERR_WORKFLOW_CONFLICT, the machine then touches nothing of it;
 * - a part whose own record names another cluster, or other tokens, than its ring entry (a host matched to the
 *   wrong node): CBR_ERR_CLUSTER_PART_MISMATCH;
 * - hosts that do not cover every ring node: CBR_ERR_CLUSTER_INCOMPLETE;
 * - a record that would not read back (the same schema readers use): CBR_ERR_CLUSTER_RECORD_INVALID.
 * A record already there that this run wrote (same start, same parts) is a resume: success. Another one is
 * CBR_ERR_WORKFLOW_CONFLICT, never overwritten nor withdrawn. A pending marker that cannot be deleted after the put is
 * a warning: the record protects the parts from then on.
 */
export async function writeClusterRecord(deps: ClusterDeps, input: RecordStepInput, signal: AbortSignal): Promise<{ recordKey: string; warnings?: string[] }> {
  await pauseIfAsked(deps, 'writeClusterRecord', signal);
  const { ctx, parts, ring } = input;
  const records = await Promise.all(parts.map((_, i) => readRecord(deps.store, partId(ctx.backupId, i), signal)));
  const startedMs = Date.parse(ctx.startedAt);
  for (const rec of records) {
    if (Date.parse(rec.created) < startedMs - CLOCK_SKEW_MS)
      throw await notOurs(
        deps,
        ctx.backupId,
        `part ${rec.id} was made ${rec.created}, before cluster backup ${ctx.backupId} started (${ctx.startedAt}): it belongs to an earlier run of this id`,
        signal,
      );
  }
  // Each host's node address, as its agent announces it: a host is matched to its ring entry by it (tokens alone can
  // mislead: a node's own system.local may list tokens the ring gives another node).
  const addresses = await withBus(deps, (bus) => Promise.all(parts.map(async (p) => (await bus.ask(p.host, undefined, signal))?.address)));
  signal.throwIfAborted();
  const hosts = parts.map((p, i) => {
    const rec = records[i]!;
    const address = addresses[i];
    const tokens = sortTokens(rec.settings?.tokens ?? []).join(',');
    const entry = address
      ? ring.hosts.find((h) => h.address === address)
      : tokens
        ? ring.hosts.find((h) => sortTokens(h.tokens).join(',') === tokens)
        : undefined;
    if (!entry)
      throw new CbrError(
        'CBR_ERR_CLUSTER_PART_MISMATCH',
        address
          ? `${p.host} announces node address ${address}, which no node of cluster ${ring.clusterName} has`
          : `${p.host} announces no node address, and its part ${rec.id} holds tokens no node of cluster ${ring.clusterName} owns`,
      );
    // The part's own record says which node it was made on: it must be the ring entry it is recorded as.
    if (rec.clusterName !== ring.clusterName)
      throw new CbrError(
        'CBR_ERR_CLUSTER_PART_MISMATCH',
        `part ${rec.id} of ${p.host} was made on a node of cluster ${rec.clusterName}, not ${ring.clusterName}`,
      );
    if (tokens && tokens !== sortTokens(entry.tokens).join(','))
      throw new CbrError(
        'CBR_ERR_CLUSTER_PART_MISMATCH',
        `part ${rec.id} of ${p.host} holds other tokens than node ${entry.address} (${entry.hostId}) it would be recorded as: the host is not on that node`,
      );
    return {
      host: p.host,
      backupId: rec.id,
      hostId: entry.hostId,
      address: entry.address,
      datacenter: entry.datacenter,
      rack: entry.rack,
      tokens: entry.tokens,
    };
  });
  const seen = new Set(hosts.map((h) => h.hostId));
  if (seen.size !== hosts.length) throw new CbrError('CBR_ERR_CLUSTER_INCOMPLETE', `two hosts of cluster backup ${ctx.backupId} map onto the same node`);
  const missing = ring.hosts.filter((h) => !seen.has(h.hostId));
  if (missing.length > 0)
    throw new CbrError(
      'CBR_ERR_CLUSTER_INCOMPLETE',
      `no part for ring node(s) ${missing.map((h) => `${h.address} (${h.hostId})`).join(', ')} of cluster ${ring.clusterName}: a restore would miss their rows`,
    );
  const record: ClusterRecord = {
    format: 1,
    kind: 'cluster',
    id: ctx.backupId,
    name: ctx.name,
    description: ctx.description,
    state: 'COMPLETED',
    clusterName: ring.clusterName,
    partitioner: ring.partitioner,
    strategy: ctx.strategy,
    created: ctx.startedAt,
    finished: new Date().toISOString(),
    schema: ring.schema,
    hosts,
  };
  // What readers will parse: a record that would list UNREADABLE is never written.
  try {
    parseClusterRecord(record, ctx.backupId);
  } catch (err) {
    throw new CbrError('CBR_ERR_CLUSTER_RECORD_INVALID', `the cluster record would not read back: ${toErrorInfo(err).message}`);
  }
  try {
    await putClusterRecord(deps.store, record, signal);
  } catch (err) {
    if (!(err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_EXISTS')) throw err;
    // One that does not parse is not this run's either: this run's was parsed before it was put.
    const there = await readClusterRecord(deps.store, ctx.backupId, signal).catch((e: unknown) => {
      if (e instanceof CbrError && e.code === 'CBR_ERR_RECORD_INVALID') return null;
      throw e;
    });
    const same =
      there !== null &&
      there.created === ctx.startedAt &&
      there.hosts.length === hosts.length &&
      there.hosts.every((h, i) => h.backupId === hosts[i]?.backupId && h.host === hosts[i]?.host);
    if (!same) throw await notOurs(deps, ctx.backupId, `another cluster record ${ctx.backupId} is already stored; it is left as it is`, signal);
  }
  // The record protects the parts now; the marker that did while they were being made goes.
  try {
    await deletePendingMarker(deps.store, ctx.backupId, signal);
  } catch (err) {
    if (signal.aborted) throw err;
    const e = toErrorInfo(err);
    return { recordKey: clusterRecordKey(ctx.backupId), warnings: [`writeClusterRecord: pending marker left: ${e.code}: ${e.message}`] };
  }
  return { recordKey: clusterRecordKey(ctx.backupId) };
}

/**
 * The error of a record step that found another run's record or parts under this id (the machine then fails with
 * nothing dropped). This run's own pending marker goes first, best effort: what it protected is either that run's
 * (protected by its own record, if any) or ordinary host backups now, for retention to take.
 */
async function notOurs(deps: ClusterDeps, id: string, message: string, signal: AbortSignal): Promise<CbrError> {
  await deletePendingMarker(deps.store, id, signal).catch(() => {});
  return new CbrError('CBR_ERR_WORKFLOW_CONFLICT', message);
}
