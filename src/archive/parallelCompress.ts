import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * Compresses a stream in independent blocks (each a list of the buffers that arrived, never copied together) on
 * the thread pool, several at once, and emits them in order.
 * Concatenated zstd frames (and gzip members) form one valid stream that `zstd -d`, `gunzip` and Node
 * decompress as a whole; this is how pzstd and pigz use every core. (libzstd's own worker threads are not
 * used: Node's zlib binding can end the stream before a multi-threaded frame is flushed.)
 */
export class ParallelCompress extends Transform {
  readonly #compress: (parts: Buffer[]) => Promise<Buffer>;
  readonly #blockSize: number;
  readonly #maxInFlight: number;
  readonly #recycle: ((parts: Buffer[]) => void) | undefined;
  readonly #queue: Promise<Buffer>[] = [];
  #parts: Buffer[] = [];
  #partsLen = 0;

  /**
   * `recycle` gets each block's input once it is compressed: the compressor has read it and nothing else holds it
   * (the chunks written in are handed on to no one else).
   */
  constructor(
    compress: (parts: Buffer[]) => Promise<Buffer>,
    opts: { blockSize?: number; concurrency?: number; recycle?: ((parts: Buffer[]) => void) | undefined } = {},
  ) {
    super({ highWaterMark: 1 << 20 });
    this.#compress = compress;
    this.#blockSize = opts.blockSize ?? 4 << 20;
    this.#maxInFlight = (opts.concurrency ?? availableParallelism()) + 1;
    this.#recycle = opts.recycle;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#parts.push(chunk);
    this.#partsLen += chunk.length;
    if (this.#partsLen < this.#blockSize) {
      cb();
      return;
    }
    this.#dispatch();
    this.#drain(this.#maxInFlight - 1).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    if (this.#partsLen > 0 || this.#queue.length === 0) this.#dispatch();
    this.#drain(0).then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    // Pending blocks finish on the thread pool; their results are dropped.
    for (const p of this.#queue) p.catch(() => {});
    this.#queue.length = 0;
    cb(err);
  }

  #dispatch(): void {
    const parts = this.#parts;
    this.#parts = [];
    this.#partsLen = 0;
    const p = this.#compress(parts);
    const recycle = this.#recycle;
    if (recycle)
      p.then(
        () => recycle(parts),
        () => {},
      );
    else p.catch(() => {});
    this.#queue.push(p);
  }

  /** Emits finished blocks in order until at most `keep` are in flight. */
  async #drain(keep: number): Promise<void> {
    while (this.#queue.length > keep) {
      const out = await this.#queue[0]!;
      this.#queue.shift();
      this.push(out);
    }
  }
}
