import { listSnapshotFiles } from '../../cassandra/layout.ts';
import { countSnapshotRows, readWriteCounts, type TableCount, type WriteCounts } from '../../cassandra/rowCounts.ts';
import type { StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

/**
 * `nodetool snapshot -t <backup id>` of all keyspaces, then the row count of each user table the snapshot holds
 * (src/cassandra/rowCounts.ts: exact where no write came between, or not recorded, saying why). Re-run after a
 * crash, the half-made snapshot is cleared first and the counts are taken again, so the step is idempotent.
 */
export async function takeSnapshot(
  deps: BackupDeps,
  { ctx }: StepInput,
  signal: AbortSignal,
): Promise<{ files: number; bytes: number; tables?: TableCount[] | null }> {
  await deps.nodetool.clearSnapshot(ctx.backupId, signal);
  // CQL trouble costs the counts, never the backup.
  const cql = await deps.cql().catch(() => null);
  try {
    const before: WriteCounts | null = cql ? await readWriteCounts(cql).catch(() => null) : null;
    await deps.nodetool.snapshot(ctx.backupId, signal);
    const files = await listSnapshotFiles(deps.profile.dataDirs, ctx.backupId);
    const tables = cql ? await countSnapshotRows(cql, files, before, { signal }) : null;
    return { files: files.length, bytes: files.reduce((s, f) => s + f.size, 0), tables };
  } finally {
    await cql?.close();
  }
}
