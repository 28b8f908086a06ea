import { CbrError } from '../../core/errors.ts';
import type { StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

/**
 * A snapshot pins every SSTable it links while compaction goes on writing new ones, so a node short of disk
 * can fill up during a long backup. Refuse before the snapshot when free space is under the threshold.
 */
export async function checkFreeSpace(deps: BackupDeps, { ctx }: StepInput, signal: AbortSignal) {
  signal.throwIfAborted();
  let worst = { freeBytes: Number.POSITIVE_INFINITY, freePercent: 100 };
  for (const dir of deps.profile.dataDirs) {
    const { free, total } = await deps.diskSpace(dir);
    const freePercent = total > 0 ? (free / total) * 100 : 0;
    if (freePercent < worst.freePercent) worst = { freeBytes: free, freePercent };
    if (freePercent < ctx.minFreePercent) {
      throw new CbrError(
        'CBR_ERR_INSUFFICIENT_SPACE',
        `only ${freePercent.toFixed(1)}% (${Math.round(free / 2 ** 20)} MiB) free on ${dir}; the backup needs at least ${ctx.minFreePercent}% (--min-free-percent)`,
      );
    }
  }
  return worst;
}
