import { mkdir } from 'node:fs/promises';
import { tableKey } from '../../archive/entries.ts';
import { unpackArchive } from '../../archive/unpack.ts';
import { type BackupRecord, readRecord } from '../../catalog/catalog.ts';
import { recordBinding, verifyRecord } from '../../catalog/record.ts';
import { removeTree } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { fetchFiles } from './fetchFiles.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/** What unpacking a full backup's archive checks it against: its key and binding, its SHA-256, every entry's size. */
export function archiveChecks(deps: RestoreDeps, rec: BackupRecord) {
  return {
    compression: rec.compression,
    key: deps.key ?? undefined,
    binding: rec.encryption?.bound ? recordBinding(rec) : undefined,
    sha256: rec.sha256,
    expected: new Map(rec.files.map((f) => [f.path, f.size])),
  };
}

/**
 * Streams the archive from storage into fresh staging directories (one per data directory, each table where the
 * check step placed it), decrypting, decompressing and checking every entry and the SHA-256 as it goes. Re-run
 * after a crash, it starts from empty staging directories.
 */
export async function unpackBackup(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, signal: AbortSignal) {
  const { stagings } = restorePaths(deps.profile, ctx.workflowId);
  const rec = await readRecord(deps.store, ctx.backupId, signal);
  // Read again here (the check step's copy is not kept): the same authentication before a byte is unpacked.
  if (rec.encryption && deps.key) verifyRecord(rec, deps.key);
  // An incremental backup's files come one by one, and a re-run keeps the ones already fetched and verified.
  if (rec.strategy === 'incremental') return fetchFiles(deps, { ctx, plan }, rec, signal);
  // Staging directories are the caller's (root's) and 0700 until the swap: no other user can reach in while
  // the tree is built, and every entry is owned by the node's user as it is created.
  for (const { staging } of stagings) {
    await removeTree(staging);
    await mkdir(staging, { mode: 0o700 });
  }
  const source = await deps.store.get(rec.object, { signal });
  const totals = { totalBytes: plan.rawBytes, totalFiles: plan.fileCount };
  const into = (entry: string) => stagings[plan.placement[tableKey(entry)] ?? 0]!.staging;
  return unpackArchive(source, into, {
    ...archiveChecks(deps, rec),
    signal,
    owner: { uid: deps.profile.owner.uid, gid: deps.profile.owner.gid },
    onProgress: (p) => deps.onProgress('unpacking', { ...p, ...totals }),
  });
}
