import { keyFingerprint } from '../../archive/crypto.ts';
import { listSnapshotFiles } from '../../cassandra/layout.ts';
import { type BackupRecord, writeRecord as putRecord, readRecord } from '../../catalog/catalog.ts';
import { holdBackupLease, releaseBackupLease } from '../../catalog/leases.ts';
import { filesDigest, parseRecord, sealRecord } from '../../catalog/record.ts';
import { CbrError } from '../../core/errors.ts';
import { SYSTEM_KEYSPACES } from '../../core/ids.ts';
import { inPool } from '../../core/pool.ts';
import type { WriteRecordInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

/**
 * Writes the COMPLETED record after checking the stored object is whole; create-only, so it never replaces another.
 * An incremental backup's record (format 3) lists every file with its blob; once it is written the backup's lease
 * is released.
 */
export async function writeRecord(deps: BackupDeps, input: WriteRecordInput, signal: AbortSignal): Promise<void> {
  const { ctx, result } = input;
  const incremental = result.strategy === 'incremental';
  let files: BackupRecord['files'];
  if (incremental) {
    // storeFiles looked at every blob after its lease was held; the list it made is the record's. Encrypted, it
    // lists no plain SHA-256 (a manifest persisted by an earlier version may: dropped here, the digest made again).
    if (!result.manifest) throw new CbrError('CBR_ERR_INTERNAL', 'an incremental backup finished without its file list');
    files = deps.key ? result.manifest.map(({ sha256: _, ...f }) => f) : result.manifest;
  } else {
    const head = await deps.store.head(result.objectKey, { signal });
    if (!head || head.size !== result.size) {
      throw new CbrError('CBR_ERR_STORAGE_FAILED', `stored archive ${result.objectKey} has ${head?.size ?? 'no'} bytes, expected ${result.size}`);
    }
    files = (await listSnapshotFiles(deps.profile.dataDirs, ctx.backupId)).map((f) => ({ path: f.archivePath, size: f.size }));
  }
  const unsealed: BackupRecord = {
    format: incremental ? 3 : 2,
    ...(incremental ? { strategy: 'incremental' as const, parent: ctx.parent ?? null } : {}),
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
    sha256: incremental ? filesDigest(files as unknown as Record<string, unknown>[]) : result.sha256,
    compression: ctx.compression,
    encryption: deps.key
      ? { algorithm: 'aes-256-gcm-chunked', keyFingerprint: keyFingerprint(deps.key), bound: true, ...(incremental ? { fileHashes: 'keyed' as const } : {}) }
      : null,
    rawBytes: result.rawBytes,
    fileCount: files.length,
    keyspaces: [...new Set(files.map((f) => f.path.split('/')[0]!))].filter((k) => !SYSTEM_KEYSPACES.has(k)).sort(),
    files,
    ...(incremental ? { newBytes: result.newBytes ?? 0, sharedBytes: result.sharedBytes ?? 0, newStoredBytes: result.newStoredBytes ?? 0 } : {}),
    ...(input.node?.settings ? { settings: input.node.settings } : {}),
    // Only tables the record holds (a table dropped between snapshot and record cannot be in it anyway).
    ...(input.tables ? { tables: input.tables } : {}),
  };
  const record = deps.key ? (sealRecord(unsealed as unknown as Record<string, unknown>, deps.key) as unknown as BackupRecord) : unsealed;
  // The schema every restore reads records with: a record it would refuse fails the backup now, never later.
  parseRecord(JSON.parse(JSON.stringify(record)), record.id);
  let lease: { stop(): void } | null = null;
  try {
    if (incremental) {
      // Resumed here after a stop longer than the lease's ttl, a collection may have run in between: hold the lease
      // again (waiting out a collection that runs now), then see every blob the record names before it names them.
      // The lease is refreshed until the record is written: the checks of a large backup can outlast its ttl.
      const held = await holdBackupLease(deps.store, deps.profile.hostId, ctx.backupId, { signal, log: deps.log });
      lease = held;
      // storeFiles saw or stored every blob under a lease held without a break, last written (begun) at the stamp it
      // left; when that stamp is this process's and this step's own write landed less than half a ttl after it (on
      // the monotonic clock), the lease never looked dead in between, so no collection can have run since and every
      // blob is still there: nothing to look at again. Measured to the landing, not to the start of this write: a put
      // begun in time that lands late leaves the lease looking dead meanwhile. Another process's stamp (a resumed
      // backup) says nothing here: every blob again.
      const unbroken = held.unbrokenSince(result.leaseWrittenAt);
      deps.log.debug('record: blobs to look at again', { count: unbroken ? 0 : files.length });
      if (!unbroken)
        await inPool(files, 8, signal, async (f, _i, poolSignal) => {
          const head = f.blob ? await deps.store.head(f.blob, { signal: poolSignal }) : null;
          if (!head || (f.stored !== undefined && head.size !== f.stored)) {
            throw new CbrError(
              'CBR_ERR_STORAGE_FAILED',
              `blob ${f.blob} of ${f.path} is ${head ? `${head.size} bytes, expected ${f.stored}` : 'gone'}: not recorded; run the backup again`,
            );
          }
        });
    }
    try {
      await putRecord(deps.store, record, signal);
    } catch (err) {
      if (!(err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_EXISTS')) throw err;
      // Re-run after a crash right after the put: the record there is this one. Anything else is another backup's.
      const there = await readRecord(deps.store, record.id, signal).catch(() => null);
      if (!there || there.sha256 !== record.sha256 || there.object !== record.object || there.created !== record.created) {
        throw new CbrError('CBR_ERR_BACKUP_EXISTS', `another backup's record is stored under ${record.id}; this one was not recorded`);
      }
    }
  } finally {
    // Failed before the record: the lease stays (compensation releases it), only its refreshing stops.
    lease?.stop();
  }
  // The record references every blob now: garbage collection may run again. The backup is complete: a release that
  // fails (a storage blip, an abort) must not fail this step, whose compensation would delete the record; the lease,
  // no longer refreshed, dies with its ttl.
  if (incremental)
    await releaseBackupLease(deps.store, deps.profile.hostId, ctx.backupId, signal).catch((err: unknown) =>
      deps.log.warn('could not release the backup lease; it lapses with its ttl', { backupId: ctx.backupId, error: (err as Error).message }),
    );
}
