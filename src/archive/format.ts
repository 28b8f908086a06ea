import { constants, createGunzip, createGzip, createZstdCompress, createZstdDecompress } from 'node:zlib';
import { availableParallelism } from 'node:os';
import { PassThrough, type Transform } from 'node:stream';

export type Compression = 'zstd' | 'gzip' | 'none';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'gzip', 'none'];

/** The object name of an archive: `archive.tar[.zst|.gz][.enc]`. */
export function archiveName(compression: Compression, encrypted: boolean): string {
  const ext = compression === 'zstd' ? '.zst' : compression === 'gzip' ? '.gz' : '';
  return `archive.tar${ext}${encrypted ? '.enc' : ''}`;
}

/**
 * zstd level 1 with worker threads (libzstd's own, beside Node's thread pool) is the default: it keeps both
 * cores busy and matches `zstd -1 -T0`. gzip uses level 6, the level of Trove's `tar | gzip` pipeline.
 */
export function compressor(compression: Compression, level?: number): Transform {
  switch (compression) {
    case 'zstd':
      return createZstdCompress({
        chunkSize: 1 << 20,
        params: {
          [constants.ZSTD_c_compressionLevel]: level ?? 1,
          [constants.ZSTD_c_nbWorkers]: Math.max(1, availableParallelism()),
          [constants.ZSTD_c_checksumFlag]: 1,
        },
      });
    case 'gzip':
      return createGzip({ level: level ?? 6, chunkSize: 1 << 20 });
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
  }
}

export function decompressor(compression: Compression): Transform {
  switch (compression) {
    case 'zstd':
      return createZstdDecompress({ chunkSize: 1 << 20 });
    case 'gzip':
      return createGunzip({ chunkSize: 1 << 20 });
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
  }
}
