import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { SnapshotFile } from '../cassandra/layout.ts';
import { BufferPool } from '../core/bufferPool.ts';
import { CbrError } from '../core/errors.ts';
import { bufferReleaser } from '../core/memory.ts';
import { EncryptStream } from './crypto.ts';
import { BLOCK, type Compression, compressor } from './format.ts';
import { tarStream } from './tarWriter.ts';
import { Throttle } from './throttle.ts';

/** Buffers kept for reuse: those in flight at once (the stream's buffers, the blocks being compressed) and a few more. */
const POOLED = 16;

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
  /** Binds the encryption to one backup (see crypto.ts subkey); with `key` only. */
  binding?: Buffer | undefined;
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
  // Hashes and counts what storage receives, on its way out.
  const release = bufferReleaser();
  const meter = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      storedBytes += chunk.length;
      release(chunk.length);
      // Reading runs ahead of storage by a few buffers; reporting here too keeps progress (and ETA) honest.
      report();
      cb(null, chunk);
    },
  });
  const out = new PassThrough({ highWaterMark: 1 << 20 });

  const sources = files.map((f) => ({ path: f.path, name: f.archivePath, size: f.size }));
  // The tar writer reads into these and the compressor gives them back: a handful of 1 MiB buffers for the whole
  // archive instead of a new one per MiB (see bufferPool.ts). Without compression the chunks flow on: no pool.
  const pool = opts.compression === 'none' ? undefined : new BufferPool(BLOCK, POOLED);
  const tar = Readable.from(
    tarStream(sources, {
      pool,
      ...(opts.signal ? { signal: opts.signal } : {}),
      onFile: (n) => {
        progress.bytes += n;
        report();
      },
    }),
    { objectMode: false, highWaterMark: 1 << 20 },
  );
  const stages: NodeJS.ReadWriteStream[] = [compressor(opts.compression, opts.level, undefined, pool)];
  if (opts.key) stages.push(new EncryptStream(opts.key, undefined, opts.binding));
  if (opts.rateLimit) stages.push(new Throttle(opts.rateLimit));

  const piped = pipeline([tar, ...stages, meter, out] as unknown as [Readable, NodeJS.WritableStream], opts.signal ? { signal: opts.signal } : {});
  const result = piped.then(
    () => {
      progress.files = files.length;
      report(true);
      return { sha256: hash.digest('hex'), size: storedBytes, rawBytes: progress.bytes, files: files.length };
    },
    (err: unknown) => {
      const e = err as NodeJS.ErrnoException;
      if (err instanceof CbrError || e.name === 'AbortError') throw err;
      if (e.syscall === 'open' || e.syscall === 'read' || /changed size|shorter than/.test(e.message)) {
        throw new CbrError('CBR_ERR_SNAPSHOT_FAILED', `cannot read snapshot file: ${e.message}`);
      }
      throw err;
    },
  );
  result.catch((err) => out.destroy(err));
  return { stream: out, result };
}
