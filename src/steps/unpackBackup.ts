import { mkdir, rm } from 'node:fs/promises';
import { readRecord } from '../catalog.ts';
import { tableKey } from '../archive/entries.ts';
import { unpackArchive } from '../archive/unpack.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * Streams the archive from storage into fresh staging directories (one per data directory, each table where the
 * check step placed it), decrypting, decompressing and checking every entry and the SHA-256 as it goes. Re-run
 * after a crash, it starts from empty staging directories.
 */
export async function unpackBackup(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, signal: AbortSignal) {
  const { stagings } = restorePaths(deps.profile, ctx.workflowId);
  for (const { staging } of stagings) {
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true, mode: 0o750 });
  }
  const rec = await readRecord(deps.store, ctx.backupId, signal);
  const source = await deps.store.get(rec.object, { signal });
  const totals = { totalBytes: plan.rawBytes, totalFiles: plan.fileCount };
  const into = (entry: string) => stagings[plan.placement[tableKey(entry)] ?? 0]!.staging;
  return unpackArchive(source, into, {
    compression: rec.compression,
    key: deps.key ?? undefined,
    sha256: rec.sha256,
    expected: new Map(rec.files.map((f) => [f.path, f.size])),
    signal,
    onProgress: (p) => deps.onProgress('unpacking', { ...p, ...totals }),
  });
}
