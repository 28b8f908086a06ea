import { readRecord } from '../../catalog/catalog.ts';
import { readClusterRecord } from '../../catalog/clusterRecord.ts';
import { CbrError } from '../../core/errors.ts';
import { SYSTEM_KEYSPACES } from '../../core/ids.ts';
import type { PartsPlan, RestoreStepInput } from '../../machines/restore.machine.ts';
import { checkSealed, checkStored } from './checkRestore.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * The keyspaces taken from every host's part besides the first: the user keyspaces, and system_auth, whose roles
 * are spread over the hosts by its replication (RF 1 in 5.0 by default) like any user data.
 */
export const IMPORTED_SYSTEM_KEYSPACES = ['system_auth'];

/**
 * Restoring a cluster backup into one node, before anything is touched: the cluster record names this restore's
 * backup as its first part; every other part is COMPLETED, whole in storage, sealed with the same key (or none),
 * from the same cluster; and the filesystem of the first data directory has room for all of them unpacked beside
 * the first part's staging.
 */
export async function checkParts(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, signal: AbortSignal): Promise<PartsPlan> {
  const clusterBackupId = ctx.clusterBackupId;
  if (!clusterBackupId) throw new CbrError('CBR_ERR_INTERNAL', 'checkParts runs only for a cluster backup');
  const cluster = await readClusterRecord(deps.store, clusterBackupId, signal);
  const [first, ...others] = cluster.hosts;
  if (first?.backupId !== ctx.backupId) {
    throw new CbrError('CBR_ERR_RECORD_INVALID', `cluster backup ${clusterBackupId} names ${first?.backupId} as its first part, not ${ctx.backupId}`);
  }
  const parts: PartsPlan['parts'] = [];
  let rawBytes = 0;
  for (const host of others) {
    const rec = await readRecord(deps.store, host.backupId, signal);
    await checkStored(deps, rec, signal);
    checkSealed(deps, rec);
    if (rec.clusterName !== plan.sourceClusterName) {
      throw new CbrError(
        'CBR_ERR_RECORD_INVALID',
        `part ${rec.id} of cluster backup ${clusterBackupId} comes from cluster ${rec.clusterName}, the first part from ${plan.sourceClusterName}`,
      );
    }
    // The record's keyspaces are its user keyspaces; system_auth is found among its files.
    const inFiles = new Set(rec.files.map((f) => f.path.split('/')[0]!));
    const keyspaces = [...new Set([...rec.keyspaces, ...IMPORTED_SYSTEM_KEYSPACES.filter((k) => inFiles.has(k))])].filter(
      (k) => !SYSTEM_KEYSPACES.has(k) || IMPORTED_SYSTEM_KEYSPACES.includes(k),
    );
    // A full part's archive is unpacked whole (its SHA-256 covers all of it); an incremental one's imported files only.
    const bytes = rec.strategy === 'full' ? rec.rawBytes : rec.files.filter((f) => keyspaces.includes(f.path.split('/')[0]!)).reduce((a, f) => a + f.size, 0);
    rawBytes += bytes;
    parts.push({ backupId: rec.id, host: host.host, keyspaces, rawBytes: bytes, fileCount: rec.fileCount });
  }
  const { parts: root } = restorePaths(deps.profile, ctx.workflowId);
  const reserve = 64 << 20;
  const need = Math.ceil((rawBytes + plan.rawBytes) * 1.05) + reserve;
  const { free } = await deps.diskSpace(root.slice(0, root.lastIndexOf('/')) || '/');
  if (free < need) {
    throw new CbrError(
      'CBR_ERR_INSUFFICIENT_SPACE',
      `restoring cluster backup ${clusterBackupId} into one node needs ${Math.round(need / 2 ** 20)} MiB beside ${deps.profile.dataDirs[0]}, ${Math.round(free / 2 ** 20)} MiB are free`,
    );
  }
  return { clusterBackupId, parts };
}
