import { keyFingerprint } from '../archive/crypto.ts';
import { readRecord } from '../catalog.ts';
import { listKeyspaces } from '../cassandra/layout.ts';
import { CbrError } from '../errors.ts';
import type { RestoreInput, RestorePlan } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

export const SYSTEM_KEYSPACES = new Set([
  'system',
  'system_schema',
  'system_auth',
  'system_distributed',
  'system_traces',
  'system_views',
  'system_virtual_schema',
]);

/**
 * Everything that can be refused before a byte moves: the record is COMPLETED, the object is whole, the key is
 * the one the backup was sealed with, the password file is usable, the target is empty (or --force) and has
 * room for the unpacked data beside its current data.
 */
export async function checkRestore(deps: RestoreDeps, { ctx }: { ctx: RestoreInput }, signal: AbortSignal): Promise<RestorePlan> {
  const rec = await readRecord(deps.store, ctx.backupId, signal);
  if (rec.state !== 'COMPLETED') throw new CbrError('CBR_ERR_BACKUP_NOT_COMPLETE', `backup ${rec.id} is ${rec.state}`);
  const head = await deps.store.head(rec.object, { signal });
  if (!head) throw new CbrError('CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', `the archive of backup ${rec.id} is missing from storage`);
  if (head.size !== rec.size) {
    throw new CbrError('CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', `the archive of backup ${rec.id} has ${head.size} bytes, the record says ${rec.size} (truncated or replaced)`);
  }
  if (rec.encryption) {
    if (!deps.key) throw new CbrError('CBR_ERR_KEY_REQUIRED', `backup ${rec.id} is encrypted; give --decrypt-key-file`);
    if (keyFingerprint(deps.key) !== rec.encryption.keyFingerprint) {
      throw new CbrError('CBR_ERR_DECRYPT_FAILED', `wrong key: backup ${rec.id} was encrypted with key ${rec.encryption.keyFingerprint}`);
    }
  }
  const password = await deps.readPassword();
  if (password.length < 8) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'the new superuser password must have at least 8 characters');

  const userData = (await listKeyspaces(deps.profile.dataDirs)).filter((k) => !SYSTEM_KEYSPACES.has(k));
  if (userData.length > 0 && !ctx.force) {
    throw new CbrError('CBR_ERR_TARGET_NOT_EMPTY', `target ${deps.profile.name} holds keyspaces ${userData.slice(0, 5).join(', ')}; pass --force to replace them`);
  }
  const paths = restorePaths(deps.profile, ctx.workflowId);
  const { free } = await deps.diskSpace(paths.stagingParent);
  const need = Math.ceil(rec.rawBytes * 1.05) + (64 << 20);
  if (free < need) {
    throw new CbrError('CBR_ERR_INSUFFICIENT_SPACE', `restore needs ${Math.round(need / 2 ** 20)} MiB beside the data directory, ${Math.round(free / 2 ** 20)} MiB are free`);
  }
  return {
    sourceClusterName: rec.clusterName,
    keyspaces: rec.keyspaces,
    rawBytes: rec.rawBytes,
    fileCount: rec.fileCount,
    wasRunning: await deps.service.isRunning(),
  };
}
