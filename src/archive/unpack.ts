import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { lchown, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { CbrError } from '../core/errors.ts';
import { DecryptStream } from './crypto.ts';
import { entryProblem } from './entries.ts';
import { type Compression, decompressor } from './format.ts';

export interface UnpackOptions {
  compression: Compression;
  key?: Buffer | undefined;
  /** The backup's binding when its archive was sealed with one (records with `encryption.bound`). */
  binding?: Buffer | undefined;
  /** Expected SHA-256 (hex) of the stored object; checked when the stream ends. */
  sha256: string;
  /** Expected archive entries and their sizes (from the backup record); anything else is refused. */
  expected?: ReadonlyMap<string, number>;
  signal?: AbortSignal;
  onProgress?: (p: { bytes: number; files: number; storedBytes: number }) => void;
  /** Owner of every directory and file unpacked, set on each as it is created (the restore runs as root). */
  owner?: { uid: number; gid: number };
}

/**
 * Unpacks a stored archive into `target` (or, per entry, the directory `target(name)` gives), which must be new,
 * empty directories. Refuses absolute paths,
 * '..', links, devices, FIFOs and anything outside the data-dir layout; verifies the object's SHA-256 at the
 * end. On any failure the caller discards the target directories: nothing outside them was written.
 */
export async function unpackArchive(
  source: Readable,
  target: string | ((entry: string) => string),
  opts: UnpackOptions,
): Promise<{ files: number; bytes: number }> {
  const hash = createHash('sha256');
  let storedBytes = 0;
  const meter = new PassThrough({ highWaterMark: 1 << 20 });
  meter.on('data', (c: Buffer) => {
    hash.update(c);
    storedBytes += c.length;
  });
  const extract = tar.extract();
  const stages: NodeJS.ReadWriteStream[] = [];
  if (opts.key) stages.push(new DecryptStream(opts.key, opts.binding));
  stages.push(...decompressor(opts.compression));

  const seen = new Set<string>();
  const dirs = new Set<string>();
  let bytes = 0;
  let files = 0;
  let lastReport = 0;

  const consume = (async () => {
    for await (const entry of extract) {
      opts.signal?.throwIfAborted();
      const h = entry.header;
      const name = h.name;
      if (h.type !== 'file') throw hostile(name, `entry type ${h.type} is not allowed (only regular files)`);
      checkName(name);
      if (seen.has(name)) throw hostile(name, 'duplicate entry');
      seen.add(name);
      const size = h.size ?? 0;
      if (opts.expected) {
        const want = opts.expected.get(name);
        if (want === undefined) throw hostile(name, 'entry is not in the backup record');
        if (want !== size) throw hostile(name, `size ${size} differs from the record (${want})`);
      }
      const root = typeof target === 'string' ? target : target(name);
      const parts = name.split('/');
      // One level at a time, each directory owned as it is made: nothing is chowned by a walk afterwards.
      for (let i = 1; i < parts.length; i++) {
        const dir = join(root, ...parts.slice(0, i));
        if (dirs.has(dir)) continue;
        await mkdir(dir, { mode: 0o755 });
        if (opts.owner) await lchown(dir, opts.owner.uid, opts.owner.gid);
        dirs.add(dir);
      }
      const path = join(root, ...parts);
      // 'wx': never overwrite, never follow an existing link.
      entry.on('data', (c: unknown) => {
        bytes += (c as Buffer).length;
        const now = Date.now();
        if (opts.onProgress && now - lastReport > 250) {
          lastReport = now;
          opts.onProgress({ bytes, files, storedBytes });
        }
      });
      await pipeline(entry, createWriteStream(path, { flags: 'wx', mode: 0o644 }));
      // Inside the caller's 0700 staging directory nobody else can swap the path between create and chown.
      if (opts.owner) await lchown(path, opts.owner.uid, opts.owner.gid);
      files++;
    }
  })();

  const piped = pipeline([source, meter, ...stages, extract] as unknown as [Readable, NodeJS.WritableStream], opts.signal ? { signal: opts.signal } : {});
  try {
    await Promise.all([piped, consume]);
  } catch (err) {
    extract.destroy();
    source.destroy();
    throw classify(err);
  }
  const digest = hash.digest('hex');
  if (digest !== opts.sha256) {
    throw new CbrError('CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', `archive SHA-256 ${digest.slice(0, 12)}… does not match the record (${opts.sha256.slice(0, 12)}…)`);
  }
  if (opts.expected && seen.size !== opts.expected.size) {
    throw new CbrError('CBR_ERR_ARCHIVE_CORRUPT', `archive holds ${seen.size} files, the record lists ${opts.expected.size}`);
  }
  opts.onProgress?.({ bytes, files, storedBytes });
  return { files, bytes };
}

function checkName(name: string): void {
  const problem = entryProblem(name);
  if (problem) throw hostile(name, problem);
}

function hostile(name: string, why: string): CbrError {
  return new CbrError('CBR_ERR_ARCHIVE_HOSTILE_ENTRY', `refused archive entry ${JSON.stringify(name.slice(0, 200))}: ${why}`);
}

function classify(err: unknown): CbrError {
  if (err instanceof CbrError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e.name === 'AbortError') return new CbrError('CBR_ERR_ABORTED', 'unpack aborted');
  if (e.code === 'ENOSPC') return new CbrError('CBR_ERR_INSUFFICIENT_SPACE', 'no space left on the device while unpacking');
  if (e.code === 'EEXIST') return new CbrError('CBR_ERR_ARCHIVE_HOSTILE_ENTRY', 'archive entry would overwrite an existing file');
  return new CbrError('CBR_ERR_ARCHIVE_CORRUPT', `archive could not be read: ${e.message}`);
}
