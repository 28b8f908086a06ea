import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CbrError } from '../../core/errors.ts';
import { KEY_RE, type ObjectInfo, type ObjectStore } from '../port.ts';

/**
 * Local filesystem driver: `<root>/<container>/<key>`. A put streams into a hidden temporary file beside the
 * target and renames it into place only when the whole stream arrived, so readers never see half an object.
 */
export function createLocalStore(root: string, container: string): ObjectStore {
  const base = join(root, container);
  const swept = new Set<string>();
  const pathOf = (key: string): string => {
    if (!KEY_RE.test(key) || key.split('/').some((p) => p === '..' || p === '.')) {
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `invalid object key ${JSON.stringify(key)}`);
    }
    return join(base, ...key.split('/'));
  };
  return {
    description: `local:${base}`,
    async put(key, body, opts = {}) {
      const target = pathOf(key);
      await mkdir(dirname(target), { recursive: true });
      // Once per directory: the leftovers of dead processes do not come back, and a directory read per put made
      // puts into a directory of many objects quadratic.
      if (!swept.has(dirname(target))) {
        await removeStalePartials(dirname(target));
        swept.add(dirname(target));
      }
      // The pid in the name tells a put still running (whose file must stay) from one killed with its process.
      const tmp = join(dirname(target), `.partial-${process.pid}-${randomUUID()}`);
      try {
        await pipeline(body, createWriteStream(tmp, { flags: 'wx' }), opts.signal ? { signal: opts.signal } : {});
        // Create-only: link(2) fails when the name exists, atomically; rename would replace it.
        if (opts.ifAbsent) await link(tmp, target).finally(() => rm(tmp, { force: true }));
        else await rename(tmp, target);
      } catch (err) {
        await rm(tmp, { force: true });
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new CbrError('CBR_ERR_OBJECT_EXISTS', `${key} already exists`);
        throw storageError('put', key, err);
      }
      return { size: (await stat(target)).size };
    },
    async get(key, opts = {}) {
      const path = pathOf(key);
      stopIfAborted(opts.signal, 'get', key);
      try {
        // A directory is only a prefix of other keys, as it is to Swift and S3.
        if (!(await stat(path)).isFile()) throw new CbrError('CBR_ERR_OBJECT_NOT_FOUND', `no object ${key}`);
      } catch (err) {
        throw storageError('get', key, err);
      }
      return createReadStream(path, { highWaterMark: 1 << 20, ...(opts.signal ? { signal: opts.signal } : {}) });
    },
    async head(key, opts = {}) {
      stopIfAborted(opts.signal, 'head', key);
      try {
        const st = await stat(pathOf(key));
        if (!st.isFile()) return null;
        return { key, size: st.size, modified: st.mtime.toISOString() };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw storageError('head', key, err);
      }
    },
    async *list(prefix = '', opts = {}) {
      const out: ObjectInfo[] = [];
      // Only the folder the prefix's complete segments name can hold its keys: `a/b/c` walks `a/b` (a backup's
      // folder, one host's leases) instead of every object of the container.
      const segments = prefix.split('/').slice(0, -1);
      const narrow = segments.length > 0 && segments.every((p) => p !== '' && p !== '.' && p !== '..' && !p.includes('\\'));
      await walk(narrow ? join(base, ...segments) : base, async (path) => {
        stopIfAborted(opts.signal, 'list', prefix);
        const key = relative(base, path).split(sep).join('/');
        if (key.split('/').some((p) => p.startsWith('.partial-'))) return;
        if (!key.startsWith(prefix)) return;
        const st = await stat(path);
        out.push({ key, size: st.size, modified: st.mtime.toISOString() });
      });
      out.sort((a, b) => (a.key < b.key ? -1 : 1));
      yield* out;
    },
    async purge(prefix, opts = {}) {
      stopIfAborted(opts.signal, 'purge', prefix);
      if (!prefix.endsWith('/') || !KEY_RE.test(prefix.slice(0, -1)))
        throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `invalid prefix ${JSON.stringify(prefix)}`);
      const dir = join(base, ...prefix.slice(0, -1).split('/'));
      let n = 0;
      // Partial files are counted by the walk too.
      await walk(dir, async () => {
        n++;
      });
      await rm(dir, { recursive: true, force: true });
      return n;
    },
    async delete(key, opts = {}) {
      const path = pathOf(key);
      stopIfAborted(opts.signal, 'delete', key);
      try {
        await rm(path, { force: true });
      } catch (err) {
        // A directory is no object: nothing to delete, as on Swift and S3.
        if ((err as NodeJS.ErrnoException).code !== 'ERR_FS_EISDIR') throw storageError('delete', key, err);
      }
      // Remove leftovers of killed puts, and the key's directory when it became empty (one backup = one directory).
      await removeStalePartials(dirname(path)).catch(() => {});
      await rmdir(dirname(path)).catch(() => {});
    },
  };
}

/**
 * A put killed with its process (kill -9) leaves its temporary file; the next put of that backup removes it. The
 * files of puts still running, in this process or another, stay.
 */
async function removeStalePartials(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const pid = /^\.partial-(\d+)-/.exec(name)?.[1];
    if (name.startsWith('.partial-') && !(pid && isRunning(Number(pid)))) await rm(join(dir, name), { force: true });
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function stopIfAborted(signal: AbortSignal | undefined, op: string, key: string): void {
  if (signal?.aborted) throw new CbrError('CBR_ERR_ABORTED', `storage ${op} ${key} aborted`);
}

async function walk(dir: string, visit: (path: string) => Promise<void>): Promise<void> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walk(p, visit);
    else if (e.isFile()) await visit(p);
  }
}

export function storageError(op: string, key: string, err: unknown): CbrError {
  if (err instanceof CbrError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e.name === 'AbortError') return new CbrError('CBR_ERR_ABORTED', `storage ${op} ${key} aborted`);
  if (e.code === 'ENOENT' && op !== 'put') return new CbrError('CBR_ERR_OBJECT_NOT_FOUND', `no object ${key}`);
  if (e.code === 'ENOSPC') return new CbrError('CBR_ERR_STORAGE_FAILED', `storage ${op} ${key}: no space left on the storage device`);
  return new CbrError('CBR_ERR_STORAGE_FAILED', `storage ${op} ${key}: ${e.message}`);
}

export type { Readable };
