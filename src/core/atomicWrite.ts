import { randomUUID } from 'node:crypto';
import { type FileHandle, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Writes a file so readers see the old or the new content, never half of it: the content goes to a temporary
 * file beside the target (created 0600, so it is never readable by more than the final file), which is fsynced,
 * renamed over the target, and then the directory is fsynced, so after a crash the target holds the old or the
 * new content and, once this resolved, the new one (on a filesystem that honours fsync; a directory fsync the
 * filesystem does not support is skipped).
 *
 * Replacing a file keeps its owner, group and mode (a root:cassandra 0640 cassandra.yaml stays root:cassandra
 * 0640 when cbr runs as root); set-id and sticky bits are not carried over. `mode`, when given, sets the mode
 * whatever it was (owner and group are still kept): for secrets that must stay private (password files, 0600).
 * A new file belongs to this process, with `mode` or 0644. If the owner cannot be kept (not root, and the file
 * belongs to someone else), this throws and the target is left as it was. A symlink as target is replaced by
 * the new file; the owner and mode kept are those of the file it pointed to.
 */
export async function writeFileAtomic(path: string, content: string | Buffer, mode?: number): Promise<void> {
  const old = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  const finalMode = mode !== undefined ? mode & 0o7777 : old ? old.mode & 0o777 : 0o644;
  const tmp = `${path}.tmp-${randomUUID()}`;
  try {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(content);
      if (old) {
        const now = await fh.stat();
        if (now.uid !== old.uid || now.gid !== old.gid) {
          await fh.chown(old.uid, old.gid).catch((err: NodeJS.ErrnoException) => {
            throw Object.assign(new Error(`cannot keep the owner ${old.uid}:${old.gid} of ${path} (${err.code ?? err.message}): run as root or as its owner`), {
              code: err.code,
            });
          });
        }
      }
      // After chown, which clears set-id bits.
      await fh.chmod(finalMode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(dirname(path));
}

/** Makes a rename in `dir` durable. Some filesystems refuse fsync on a directory (EINVAL): nothing more to do there. */
async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EISDIR') throw err;
  } finally {
    await fh?.close();
  }
}
