import { existsSync } from 'node:fs';
import { chmod, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { syncFilesystems } from '../../core/removeTree.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { assertStopped } from './assertStopped.ts';
import { FetchJournal, JOURNAL } from './fetchJournal.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

/**
 * Moves the target's data, commitlog, saved caches and hints aside (`<dir>.cbr-old-<id>`) and each verified
 * staging directory into its data directory's place. Renames only, on one filesystem; each move is skipped
 * when already done, so a re-run after a crash finishes the job.
 */
export async function swapDataDirs(deps: RestoreDeps, { ctx }: RestoreStepInput, signal: AbortSignal): Promise<void> {
  const paths = restorePaths(deps.profile, ctx.workflowId);
  await assertStopped(deps, 'the data directories are');
  // An incremental restore's fetch step ends with every staging filesystem flushed and its journal marked durable;
  // should a journal list a file after its last mark, nothing moves before the stagings are flushed.
  for (const { staging } of paths.stagings) {
    if (!existsSync(join(staging, JOURNAL))) continue;
    const journal = await FetchJournal.open(staging);
    const whole = journal.marked >= journal.count;
    journal.close();
    if (!whole) {
      await syncFilesystems(
        paths.stagings.map((s) => s.staging),
        signal,
      );
      break;
    }
  }
  for (const { live, old } of paths.moves) {
    signal.throwIfAborted();
    if (existsSync(old)) continue;
    if (existsSync(live)) await rename(live, old);
    else await mkdir(old, { recursive: true });
  }
  for (const { live, staging } of paths.stagings) {
    signal.throwIfAborted();
    // An incremental restore's fetch journal has served its purpose: it never goes into the data directory.
    await rm(join(existsSync(staging) ? staging : live, JOURNAL), { force: true });
    if (existsSync(staging)) {
      if (existsSync(live)) throw new Error(`${live} exists while its staging directory is not yet moved`);
      await rename(staging, live);
    } else if (!existsSync(live)) continue;
    // The staging directory was 0700; the data directory gets the mode the old one had (chownData owns it), also
    // when a crash came between the rename and this chmod.
    const old = paths.moves.find((m) => m.live === live)!.old;
    await chmod(live, existsSync(old) ? (await stat(old)).mode & 0o7777 : 0o750);
  }
  for (const { live } of paths.moves) await mkdir(live, { recursive: true });
}
