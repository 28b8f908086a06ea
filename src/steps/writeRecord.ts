import { keyFingerprint } from '../archive/crypto.ts';
import { type BackupRecord, writeRecord as putRecord } from '../catalog.ts';
import { listSnapshotFiles } from '../cassandra/layout.ts';
import { CbrError } from '../errors.ts';
import type { StepInput, BackupContext, BackupResult } from '../../machines/backup.machine.ts';
import type { BackupDeps } from './deps.ts';

const SYSTEM_KEYSPACES = new Set(['system', 'system_schema', 'system_auth', 'system_distributed', 'system_traces', 'system_views', 'system_virtual_schema']);

/** Writes the COMPLETED record after checking the stored object is whole. Overwrites on re-run. */
export async function writeRecord(
  deps: BackupDeps,
  input: StepInput & { node: BackupContext['node']; result: BackupResult },
  signal: AbortSignal,
): Promise<void> {
  const { ctx, result } = input;
  const head = await deps.store.head(result.objectKey, { signal });
  if (!head || head.size !== result.size) {
    throw new CbrError('CBR_ERR_STORAGE_FAILED', `stored archive ${result.objectKey} has ${head?.size ?? 'no'} bytes, expected ${result.size}`);
  }
  const files = await listSnapshotFiles(deps.profile.dataDirs, ctx.backupId);
  const record: BackupRecord = {
    format: 1,
    id: ctx.backupId,
    name: ctx.name,
    description: ctx.description,
    state: 'COMPLETED',
    datastore: 'cassandra',
    sourceInstance: deps.profile.name,
    hostId: deps.profile.hostId,
    clusterName: input.node?.clusterName ?? '',
    cassandraVersion: input.node?.cassandraVersion ?? deps.profile.cassandraVersion,
    created: ctx.startedAt,
    finished: new Date().toISOString(),
    object: result.objectKey,
    size: result.size,
    sha256: result.sha256,
    compression: ctx.compression,
    encryption: deps.key ? { algorithm: 'aes-256-gcm-chunked', keyFingerprint: keyFingerprint(deps.key) } : null,
    rawBytes: result.rawBytes,
    fileCount: files.length,
    keyspaces: [...new Set(files.map((f) => f.keyspace))].filter((k) => !SYSTEM_KEYSPACES.has(k)).sort(),
    files: files.map((f) => ({ path: f.archivePath, size: f.size })),
    ...(input.node?.settings ? { settings: input.node.settings } : {}),
  };
  await putRecord(deps.store, record, signal);
}
