import { mkdir, rm } from 'node:fs/promises';
import { readRecord } from '../catalog.ts';
import { unpackArchive } from '../archive/unpack.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * Streams the archive from storage into a fresh staging directory, decrypting, decompressing and checking
 * every entry and the SHA-256 as it goes. Re-run after a crash, it starts from an empty staging directory.
 */
export async function unpackBackup(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, signal: AbortSignal) {
  const { staging } = restorePaths(deps.profile, ctx.workflowId);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true, mode: 0o750 });
  const rec = await readRecord(deps.store, ctx.backupId, signal);
  const source = await deps.store.get(rec.object, { signal });
  const totals = { totalBytes: plan.rawBytes, totalFiles: plan.fileCount };
  return unpackArchive(source, staging, {
    compression: rec.compression,
    key: deps.key ?? undefined,
    sha256: rec.sha256,
    expected: new Map(rec.files.map((f) => [f.path, f.size])),
    signal,
    onProgress: (p) => deps.onProgress('unpacking', { ...p, ...totals }),
  });
}
