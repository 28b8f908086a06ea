import { lchown } from 'node:fs/promises';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import type { RestoreDeps } from './restoreDeps.ts';

/**
 * The restored directories themselves to the OS user and group of the target profile. Nothing is walked: every
 * file and directory inside was owned as the unpack created it (in a 0700 staging directory no other user can
 * enter), and lchown never follows a link someone may have put in place of a directory.
 */
export async function chownData(deps: RestoreDeps, _input: RestoreStepInput, signal: AbortSignal): Promise<void> {
  const { uid, gid } = deps.profile.owner;
  const p = deps.profile;
  for (const dir of [...p.dataDirs, p.commitlogDir, p.savedCachesDir, p.hintsDir]) {
    signal.throwIfAborted();
    await lchown(dir, uid, gid);
  }
}
