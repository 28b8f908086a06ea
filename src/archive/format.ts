import { availableParallelism } from 'node:os';
import { PassThrough, type Transform } from 'node:stream';
import { promisify } from 'node:util';
import { createGunzip, createZstdDecompress, gzip } from 'node:zlib';
import { ZstdFramer } from './compressFrames.ts';
import { ParallelCompress } from './parallelCompress.ts';
import { ZstdFrameSplitter } from './splitFrames.ts';

const gzipAsync = promisify(gzip);
/** 1 MiB blocks: the size of the tar writer's buffers. */
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
      const framers = Array.from({ length: availableParallelism() }, () => new ZstdFramer(level ?? 1, BLOCK));
      let next = 0;
      const stream = new ParallelCompress((block) => framers[next++ % framers.length]!.frame(block), { blockSize: BLOCK });
      stream.once('close', () => {
        for (const f of framers) f.close();
      });
      return stream;
    }
    case 'gzip':
      return new ParallelCompress(
        (parts) => {
          const block = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
          return gzipAsync(block, { level: level ?? 6, chunkSize: block.length + (64 << 10) });
        },
        { blockSize: BLOCK },
      );
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
  }
}

/** The stages that undo `compressor` (zstd needs its frames split first; see zstdFrames.ts). */
export function decompressor(compression: Compression): Transform[] {
  switch (compression) {
    case 'zstd':
      return [new ZstdFrameSplitter(), createZstdDecompress({ chunkSize: 1 << 20 })];
    case 'gzip':
      return [createGunzip({ chunkSize: 1 << 20 })];
    case 'none':
      return [];
  }
}
