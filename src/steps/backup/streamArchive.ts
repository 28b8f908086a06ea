import { checkPackEntries } from '../../archive/entries.ts';
import { archiveName } from '../../archive/format.ts';
import { packArchive } from '../../archive/pack.ts';
import { listSnapshotFiles } from '../../cassandra/layout.ts';
import { recordKey } from '../../catalog/catalog.ts';
import { recordBinding } from '../../catalog/record.ts';
import { CbrError } from '../../core/errors.ts';
import type { BackupResult, StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';
import { storeFiles } from './storeFiles.ts';

/**
 * Streams one TAR of every snapshot file, compressed and optionally encrypted, into storage. Re-run after a
 * crash, it starts over: the storage driver only makes an object visible once its stream completed. An
 * incremental backup stores each file as a blob instead (storeFiles).
 */
export async function streamArchive(deps: BackupDeps, { ctx }: StepInput, signal: AbortSignal): Promise<BackupResult> {
  if (ctx.strategy === 'incremental') return storeFiles(deps, { ctx }, signal);
  const files = await listSnapshotFiles(deps.profile.dataDirs, ctx.backupId);
  if (files.length === 0) throw new CbrError('CBR_ERR_SNAPSHOT_FAILED', `snapshot ${ctx.backupId} has no files`);
  // The restore's own entry check, now: a file it would refuse stops the backup before a byte is stored.
  checkPackEntries(files.map((f) => f.archivePath));
  const objectKey = `${ctx.backupId}/${archiveName(ctx.compression, deps.key !== null)}`;
  // Re-run after a crash: an archive without a record is this workflow's own unfinished attempt (the id was free
  // when it started). With a record, the id belongs to a backup of another host now: never overwrite it.
  if (await deps.store.head(objectKey, { signal })) {
    if (await deps.store.head(recordKey(ctx.backupId), { signal })) {
      throw new CbrError('CBR_ERR_BACKUP_EXISTS', `backup id ${ctx.backupId} was taken by another backup while this one ran`);
    }
    await deps.store.delete(objectKey, { signal });
  }
  const { stream, result } = packArchive(files, {
    compression: ctx.compression,
    key: deps.key ?? undefined,
    // The record will carry the same identity (writeRecord): the archive opens only under it.
    binding: deps.key
      ? recordBinding({
          id: ctx.backupId,
          created: ctx.startedAt,
          sourceInstance: deps.profile.name,
          hostId: deps.profile.hostId,
          compression: ctx.compression,
        })
      : undefined,
    rateLimit: ctx.rateLimit,
    signal,
    onProgress: (p) => deps.onProgress('streaming', p),
  });
  const [packing, storing] = await Promise.allSettled([result, deps.store.put(objectKey, stream, { signal, ifAbsent: true })]);
  if (packing.status === 'rejected' || storing.status === 'rejected') {
    // One failure tears down both ends; report the side that caused it. Reading errors are coded by the
    // packer; anything else surfaced through the storage driver, which codes its own errors.
    const packErr = packing.status === 'rejected' ? packing.reason : null;
    const storeErr = storing.status === 'rejected' ? storing.reason : null;
    if (storeErr instanceof CbrError && storeErr.code === 'CBR_ERR_OBJECT_EXISTS') {
      throw new CbrError('CBR_ERR_BACKUP_EXISTS', `backup id ${ctx.backupId} was taken by another backup while this one ran`);
    }
    if (packErr instanceof CbrError) throw packErr;
    if (storeErr) throw storeErr;
    throw new CbrError('CBR_ERR_ARCHIVE_CORRUPT', `archive stream failed: ${(packErr as Error).message}`);
  }
  const packed = packing.value;
  deps.log.info('archive stored', { objectKey, size: packed.size, files: packed.files, rawBytes: packed.rawBytes });
  return { objectKey, size: packed.size, sha256: packed.sha256, rawBytes: packed.rawBytes, files: packed.files };
}
