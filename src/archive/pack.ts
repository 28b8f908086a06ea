import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import type { SnapshotFile } from '../cassandra/layout.ts';
import { CbrError } from '../errors.ts';
import { EncryptStream } from './crypto.ts';
import { type Compression, compressor } from './format.ts';
import { Throttle } from './throttle.ts';

export interface PackProgress {
  /** Bytes of file content read so far. */
  bytes: number;
  files: number;
  totalBytes: number;
  totalFiles: number;
  /** Bytes of the stored object written so far (after compression and encryption). */
  storedBytes: number;
}

export interface PackOptions {
  compression: Compression;
  level?: number;
  key?: Buffer | undefined;
  /** Bytes per second of stored output; null or undefined for no limit. */
  rateLimit?: number | null | undefined;
  signal?: AbortSignal;
  onProgress?: (p: PackProgress) => void;
}

export interface PackResult {
  /** SHA-256 of the stored object (what storage holds), hex. */
  sha256: string;
  size: number;
  rawBytes: number;
  files: number;
}

/**
 * One TAR of the given files (paths already rewritten to `<ks>/<table-id>/<file>`), compressed and optionally
 * encrypted, as a stream: nothing is buffered whole. `result` resolves when the last byte has gone through.
 */
export function packArchive(files: readonly SnapshotFile[], opts: PackOptions): { stream: Readable; result: Promise<PackResult> } {
  const pack = tar.pack();
  const hash = createHash('sha256');
  let storedBytes = 0;
  const totalBytes = files.reduce((s, f) => s + f.size, 0);
  const progress: PackProgress = { bytes: 0, files: 0, totalBytes, totalFiles: files.length, storedBytes: 0 };
  let lastReport = 0;
  const report = (force = false) => {
    const now = Date.now();
    if (!opts.onProgress || (!force && now - lastReport < 250)) return;
    lastReport = now;
    progress.storedBytes = storedBytes;
    opts.onProgress({ ...progress });
  };
  const meter = new PassThrough({ highWaterMark: 1 << 20 });
  meter.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    storedBytes += chunk.length;
  });
  const out = new PassThrough({ highWaterMark: 1 << 20 });

  const stages: NodeJS.ReadWriteStream[] = [compressor(opts.compression, opts.level)];
  if (opts.key) stages.push(new EncryptStream(opts.key));
  if (opts.rateLimit) stages.push(new Throttle(opts.rateLimit));

  const feed = (async () => {
    for (const f of files) {
      opts.signal?.throwIfAborted();
      const entry = pack.entry({ name: f.archivePath, size: f.size, mode: 0o644, mtime: new Date(0), type: 'file' });
      const src = createReadStream(f.path, { highWaterMark: 1 << 20 });
      src.on('data', (c) => {
        progress.bytes += c.length;
        report();
      });
      try {
        await pipeline(src, entry);
      } catch (err) {
        throw new CbrError('CBR_ERR_SNAPSHOT_FAILED', `cannot read snapshot file ${f.archivePath}: ${(err as Error).message}`);
      }
      progress.files++;
    }
    pack.finalize();
  })();
  feed.catch((err) => pack.destroy(err));

  const piped = pipeline([pack, ...stages, meter, out] as unknown as [Readable, NodeJS.WritableStream], opts.signal ? { signal: opts.signal } : {});
  const result = Promise.all([feed, piped]).then(() => {
    report(true);
    return { sha256: hash.digest('hex'), size: storedBytes, rawBytes: progress.bytes, files: progress.files };
  });
  result.catch((err) => out.destroy(err));
  return { stream: out, result };
}
