import { availableParallelism } from 'node:os';
import { PassThrough, type Transform } from 'node:stream';
import { promisify } from 'node:util';
import { createGunzip, createZstdDecompress, gzip } from 'node:zlib';
import type { BufferPool } from '../core/bufferPool.ts';
import { ZstdFramer } from './compressFrames.ts';
import { ParallelCompress } from './parallelCompress.ts';
import { ZstdFrameSplitter } from './splitFrames.ts';

const gzipAsync = promisify(gzip);
/** 1 MiB blocks: the size of the tar writer's buffers. */
export const BLOCK = 1 << 20;

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
export function compressor(compression: Compression, level?: number, shared?: ZstdFramers, pool?: BufferPool): Transform {
  // The input chunks, once compressed, go back to the pool they were read into (none for 'none': they flow on).
  const recycle = pool ? (parts: Buffer[]) => pool.give(parts) : undefined;
  switch (compression) {
    case 'zstd': {
      // Shared contexts serve several streams at once: one block of each in flight keeps them busy (with more, the
      // blocks only wait in the contexts' queues, holding their input and output meanwhile).
      if (shared) return new ParallelCompress((block) => shared.frame(block), { blockSize: BLOCK, concurrency: 0, recycle });
      const own = new ZstdFramers(level);
      const stream = new ParallelCompress((block) => own.frame(block), { blockSize: BLOCK, recycle });
      stream.once('close', () => own.close());
      return stream;
    }
    case 'gzip':
      return new ParallelCompress(
        (parts) => {
          const block = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
          return gzipAsync(block, { level: level ?? 6, chunkSize: block.length + (64 << 10) });
        },
        { blockSize: BLOCK, recycle },
      );
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
  }
}

/**
 * One zstd context per core, taking blocks in turn. A caller compressing many streams (an incremental backup's
 * files, several at once) shares one set among them: contexts are made once, not per file, and their memory does
 * not grow with the number of files in flight. Every block is a complete frame, so whose block comes first does
 * not matter.
 */
export class ZstdFramers {
  readonly #framers: ZstdFramer[];
  #next = 0;

  constructor(level?: number) {
    this.#framers = Array.from({ length: availableParallelism() }, () => new ZstdFramer(level ?? 1, BLOCK));
  }

  frame(parts: Buffer[]): Promise<Buffer> {
    return this.#framers[this.#next++ % this.#framers.length]!.frame(parts);
  }

  close(): void {
    for (const f of this.#framers) f.close();
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
