import { lchown, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import type { RestoreDeps } from './restoreDeps.ts';

/** chown -R of the restored directories to the OS user and group of the target profile (never follows links). */
export async function chownData(deps: RestoreDeps, _input: RestoreStepInput, signal: AbortSignal): Promise<void> {
  const { uid, gid } = deps.profile.owner;
  const p = deps.profile;
  for (const dir of [...p.dataDirs, p.commitlogDir, p.savedCachesDir, p.hintsDir]) await chownTree(dir, uid, gid, signal);
}

async function chownTree(path: string, uid: number, gid: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  await lchown(path, uid, gid);
  for (const e of await readdir(path, { withFileTypes: true })) {
    const child = join(path, e.name);
    if (e.isDirectory()) await chownTree(child, uid, gid, signal);
    else await lchown(child, uid, gid);
  }
}
