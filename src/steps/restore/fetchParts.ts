import { existsSync } from 'node:fs';
import { lchown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { unpackArchive } from '../../archive/unpack.ts';
import { readRecord } from '../../catalog/catalog.ts';
import { removeTree, syncFilesystems } from '../../core/removeTree.ts';
import type { PartsStepInput } from '../../machines/restore.machine.ts';
import { checkSealed } from './checkRestore.ts';
import { fetchFiles } from './fetchFiles.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';
import { archiveChecks } from './unpackBackup.ts';

/**
 * A cluster backup into one node: every other host's part into a staging folder of its own, `<parts>/<n>/`
 * (n = the part's place in the cluster record), beside the first data directory, so the import is a rename on one
 * filesystem. The same code as the first part's unpack: a full part's archive streamed, decrypted, every entry
 * checked and its SHA-256 verified (unpackArchive); an incremental part's files fetched one by one, each checked
 * against its recorded SHA-256 (fetchFiles), only those of the imported keyspaces. A part done is flushed to disk
 * and marked (`<n>.done`); a re-run after a crash skips it and starts any other from empty (or, incremental, from
 * its journal). Runs while the target still serves: a bad part fails the restore before the node is stopped.
 */
export async function fetchParts(deps: RestoreDeps, input: PartsStepInput, signal: AbortSignal): Promise<{ files: number; bytes: number }> {
  const { ctx, parts } = input;
  const root = restorePaths(deps.profile, ctx.workflowId).parts;
  const owner = { uid: deps.profile.owner.uid, gid: deps.profile.owner.gid };
  // The node's user moves the files out of here (nodetool import): the folders are its own; nobody else's (0700).
  await mkdir(root, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  await lchown(root, owner.uid, owner.gid);
  let files = 0;
  let bytes = 0;
  for (const [i, part] of parts.parts.entries()) {
    const n = String(i + 2);
    const dir = join(root, n);
    const done = join(root, `${n}.done`);
    if (existsSync(done)) continue;
    const rec = await readRecord(deps.store, part.backupId, signal);
    checkSealed(deps, rec);
    const step = `fetching part ${part.backupId}`;
    if (rec.strategy === 'incremental') {
      const wanted = { ...rec, files: rec.files.filter((f) => part.keyspaces.includes(f.path.split('/')[0]!)) };
      await mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      await lchown(dir, owner.uid, owner.gid);
      const out = await fetchFiles(deps, input, wanted, signal, {
        roots: [dir],
        placement: {},
        totals: { rawBytes: part.rawBytes, fileCount: wanted.files.length },
        step,
      });
      files += out.files;
      bytes += out.bytes;
    } else {
      await removeTree(dir);
      await mkdir(dir, { mode: 0o700 });
      await lchown(dir, owner.uid, owner.gid);
      const out = await unpackArchive(await deps.store.get(rec.object, { signal }), dir, {
        ...archiveChecks(deps, rec),
        signal,
        owner,
        onProgress: (p) => deps.onProgress(step, { ...p, totalBytes: rec.rawBytes, totalFiles: rec.fileCount }),
      });
      files += out.files;
      bytes += out.bytes;
    }
    await syncFilesystems([dir], signal);
    await writeFile(done, `${part.backupId}\n`, { mode: 0o600 });
  }
  deps.log.info('parts fetched', { parts: parts.parts.length, files, bytes });
  return { files, bytes };
}
