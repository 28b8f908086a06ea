import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Removes a directory tree that another (less privileged) user could write to, without following links they
 * plant on the way: the tree is first renamed into a fresh 0700 directory of the caller's beside it, where no
 * other user can reach into it by path, then removed by GNU rm, which walks relative to open directories and
 * never follows a link (a process already inside the tree can still rename within it; rm does not follow what
 * it finds there). Idempotent.
 */
export async function removeTree(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const trash = join(dirname(path), `.cbr-trash-${randomUUID()}`);
  await mkdir(trash, { mode: 0o700 });
  try {
    await rename(path, join(trash, basename(path)));
  } finally {
    // GNU rm walks with fts: directory file descriptors and O_NOFOLLOW, never a link, never another filesystem.
    await run('rm', ['-rf', '--one-file-system', '--', trash]).catch(() => rm(trash, { recursive: true, force: true }));
  }
}

/**
 * Flushes every filesystem holding the given paths to disk (syncfs through `sync -f`): what was unpacked and
 * renamed into place is durable before the old data it replaces is deleted.
 */
export async function syncFilesystems(paths: readonly string[], signal?: AbortSignal): Promise<void> {
  const existing = paths.filter((p) => existsSync(p));
  if (existing.length) await run('sync', ['-f', ...existing], signal ? { signal } : {});
}
