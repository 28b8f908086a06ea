import { constants, createZstdCompress, type ZstdCompress } from 'node:zlib';

/**
 * A long-lived zstd stream that turns each block into one complete frame (flush with ZSTD_e_end), reusing its
 * compression context: one thread-pool job per block, instead of a new context and many small callbacks per
 * block as with `zlib.zstdCompress()`. Blocks given to one instance are compressed one after another.
 */
export class ZstdFramer {
  readonly #stream: ZstdCompress;
  #tail: Promise<unknown> = Promise.resolve();
  #out: Buffer[] = [];

  constructor(level: number, blockSize: number) {
    this.#stream = createZstdCompress({
      chunkSize: blockSize + (64 << 10),
      params: { [constants.ZSTD_c_compressionLevel]: level, [constants.ZSTD_c_checksumFlag]: 1 },
    });
    this.#stream.on('data', (d: Buffer) => this.#out.push(d));
  }

  frame(parts: Buffer[]): Promise<Buffer> {
    const run = this.#tail.then(
      () =>
        new Promise<Buffer>((resolve, reject) => {
          const onError = (err: Error) => reject(err);
          this.#stream.once('error', onError);
          for (const part of parts) this.#stream.write(part);
          this.#stream.flush(constants.ZSTD_e_end, () => {
            this.#stream.off('error', onError);
            const out = this.#out.length === 1 ? this.#out[0]! : Buffer.concat(this.#out);
            this.#out = [];
            resolve(out);
          });
        }),
    );
    this.#tail = run.catch(() => {});
    return run;
  }

  close(): void {
    this.#stream.destroy();
  }
}
