import { readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { keyFingerprint } from '../../archive/crypto.ts';
import { tableKey } from '../../archive/entries.ts';
import { finalYaml, maintenanceYaml } from '../../cassandra/configFiles.ts';
import { listKeyspaces } from '../../cassandra/layout.ts';
import { placeTables } from '../../cassandra/placement.ts';
import { type BackupRecord, readRecord } from '../../catalog/catalog.ts';
import { verifyRecord } from '../../catalog/record.ts';
import { CbrError } from '../../core/errors.ts';
import { SYSTEM_KEYSPACES } from '../../core/ids.ts';
import { inPool } from '../../core/pool.ts';
import type { RestoreInput, RestorePlan } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * Everything that can be refused before a byte moves: the record is COMPLETED, the object is whole, the key is
 * the one the backup was sealed with, the password file is usable, the target is empty (or --force) and has
 * room for the unpacked data beside its current data; which data directory takes each table is decided here.
 */
export async function checkRestore(deps: RestoreDeps, { ctx }: { ctx: RestoreInput }, signal: AbortSignal): Promise<RestorePlan> {
  const rec = await readRecord(deps.store, ctx.backupId, signal);
  await checkStored(deps, rec, signal);
  checkSealed(deps, rec);
  const password = await deps.readPassword();
  if (password.length < 8) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'the new superuser password must have at least 8 characters');

  // Both configurations the restore will write must come out of the target's cassandra.yaml now, not after the
  // node was stopped (a file cbr cannot parse, or a cluster name no YAML can carry, ends here).
  const yamlText = await readFile(deps.profile.cassandraYaml, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new CbrError('CBR_ERR_CONFIG', `cannot read the target's cassandra.yaml ${deps.profile.cassandraYaml} (${err.code ?? err.message})`);
  });
  maintenanceYaml(yamlText, { clusterName: rec.clusterName, nativePort: 9042, storagePort: 7000, data: rec.settings ?? null });
  finalYaml(yamlText, ctx.clusterName, rec.settings ?? null);

  const userData = (await listKeyspaces(deps.profile.dataDirs)).filter((k) => !SYSTEM_KEYSPACES.has(k));
  if (userData.length > 0 && !ctx.force) {
    throw new CbrError(
      'CBR_ERR_TARGET_NOT_EMPTY',
      `target ${deps.profile.name} holds keyspaces ${userData.slice(0, 5).join(', ')}; pass --force to replace them`,
    );
  }
  // Each table goes whole into one of the target's data directories, spread by free space. Directories on one
  // filesystem share its free space, so each filesystem's share is split between its directories.
  const { stagings, moves } = restorePaths(deps.profile, ctx.workflowId);
  // The swap renames the data, commitlog, hints and saved caches directories: one that is itself a mount point
  // cannot be renamed (EBUSY), so that is refused now, before the node is stopped.
  for (const { live } of moves) {
    const [dir, parent] = await Promise.all([stat(live).catch(() => null), stat(dirname(live)).catch(() => null)]);
    if (dir && parent && dir.dev !== parent.dev) {
      throw new CbrError(
        'CBR_ERR_CONFIG',
        `${live} is a mount point; a restore moves the node's directories aside by renaming them: point cassandra.yaml and the profile at a directory inside the mount (e.g. ${live}/data)`,
      );
    }
  }
  const devices = await Promise.all(stagings.map(async (s) => String((await stat(s.parent)).dev)));
  const spaces = await Promise.all(stagings.map((s) => deps.diskSpace(s.parent)));
  const perFs = new Map<string, number>();
  for (const d of devices) perFs.set(d, (perFs.get(d) ?? 0) + 1);
  const reserve = 64 << 20;
  const room = spaces.map((s, i) => Math.max(0, Math.floor((s.free - reserve) / perFs.get(devices[i]!)! / 1.05)));
  const tables = new Map<string, number>();
  for (const f of rec.files) tables.set(tableKey(f.path), (tables.get(tableKey(f.path)) ?? 0) + f.size);
  const need = Math.ceil(rec.rawBytes * 1.05) + reserve;
  const freeTotal = [...new Map(spaces.map((s, i) => [devices[i]!, s.free])).values()].reduce((a, b) => a + b, 0);
  if (freeTotal < need) {
    throw new CbrError(
      'CBR_ERR_INSUFFICIENT_SPACE',
      `restore needs ${Math.round(need / 2 ** 20)} MiB beside the data directories, ${Math.round(freeTotal / 2 ** 20)} MiB are free`,
    );
  }
  const placement = placeTables(tables, room);
  return {
    sourceClusterName: rec.clusterName,
    keyspaces: rec.keyspaces,
    rawBytes: rec.rawBytes,
    fileCount: rec.fileCount,
    wasRunning: await deps.service.isRunning(),
    settings: rec.settings ?? null,
    placement,
  };
}

/** The record is COMPLETED and what it names is in storage with the recorded sizes (the archive, or every blob). */
export async function checkStored(deps: RestoreDeps, rec: BackupRecord, signal: AbortSignal): Promise<void> {
  if (rec.state !== 'COMPLETED') throw new CbrError('CBR_ERR_BACKUP_NOT_COMPLETE', `backup ${rec.id} is ${rec.state}`);
  if (rec.strategy === 'incremental') await checkBlobs(deps, rec, signal);
  else {
    const head = await deps.store.head(rec.object, { signal });
    if (!head) throw new CbrError('CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', `the archive of backup ${rec.id} is missing from storage`);
    if (head.size !== rec.size) {
      throw new CbrError(
        'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH',
        `the archive of backup ${rec.id} has ${head.size} bytes, the record says ${rec.size} (truncated or replaced)`,
      );
    }
  }
}

/** A sealed record is opened only with its own key, and a key given means a sealed record is expected. */
export function checkSealed(deps: RestoreDeps, rec: BackupRecord): void {
  if (deps.key && !rec.encryption) {
    // A key was given, so the operator expects a sealed backup: an unsealed record in its place is what someone
    // with write access to the store would leave (unsealed records carry no MAC).
    throw new CbrError('CBR_ERR_RECORD_INVALID', `backup ${rec.id} is not encrypted, but a decryption key was given: refusing an unauthenticated backup`);
  }
  if (rec.encryption) {
    if (!deps.key) throw new CbrError('CBR_ERR_KEY_REQUIRED', `backup ${rec.id} is encrypted; give --decrypt-key-file`);
    if (keyFingerprint(deps.key) !== rec.encryption.keyFingerprint) {
      throw new CbrError('CBR_ERR_DECRYPT_FAILED', `wrong key: backup ${rec.id} was encrypted with key ${rec.encryption.keyFingerprint}`);
    }
    verifyRecord(rec, deps.key);
  }
}

/** Every blob an incremental backup references is in storage with its recorded size (before the node is touched). */
async function checkBlobs(deps: RestoreDeps, rec: BackupRecord, signal: AbortSignal): Promise<void> {
  await inPool(rec.files, 16, signal, async (f, _i, sig) => {
    const head = await deps.store.head(f.blob!, { signal: sig });
    if (!head) throw new CbrError('CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', `the blob of ${f.path} (backup ${rec.id}) is missing from storage`);
    if (head.size !== f.stored) {
      throw new CbrError(
        'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH',
        `the blob of ${f.path} has ${head.size} bytes, the record says ${f.stored} (truncated or replaced)`,
      );
    }
  });
}
