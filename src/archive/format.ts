import { PassThrough, type Transform } from 'node:stream';
import { promisify } from 'node:util';
import { constants, createGunzip, createZstdDecompress, gzip, zstdCompress } from 'node:zlib';
import { ParallelCompress } from './parallel.ts';

const zstdAsync = promisify(zstdCompress);
const gzipAsync = promisify(gzip);
/** 1 MiB blocks: the tar writer hands over 1 MiB buffers, so a block is usually one buffer and never copied. */
const BLOCK = 1 << 20;

export type Compression = 'zstd' | 'gzip' | 'none';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'gzip', 'none'];

/** The object name of an archive: `archive.tar[.zst|.gz][.enc]`. */
export function archiveName(compression: Compression, encrypted: boolean): string {
  const ext = compression === 'zstd' ? '.zst' : compression === 'gzip' ? '.gz' : '';
  return `archive.tar${ext}${encrypted ? '.enc' : ''}`;
}

/**
 * zstd level 1 is the default (what `zstd -1` does); gzip uses level 6, the level of Trove's `tar | gzip`.
 * Both compress 1 MiB blocks in parallel on the thread pool, so every core works.
 */
export function compressor(compression: Compression, level?: number): Transform {
  switch (compression) {
    case 'zstd': {
      const params = { [constants.ZSTD_c_compressionLevel]: level ?? 1, [constants.ZSTD_c_checksumFlag]: 1 };
      // One call per block: with the default 16 KiB chunk the thread pool calls back into JS hundreds of times.
      return new ParallelCompress((block) => zstdAsync(block, { params, chunkSize: block.length + (64 << 10) }), { blockSize: BLOCK });
    }
    case 'gzip':
      return new ParallelCompress((block) => gzipAsync(block, { level: level ?? 6, chunkSize: block.length + (64 << 10) }), { blockSize: BLOCK });
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
