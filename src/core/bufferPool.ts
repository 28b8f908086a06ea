/**
 * Read buffers of one size, used again once whoever read into them is done with them.
 *
 * Why: a stream that allocates a new 1 MiB buffer per chunk read leaves glibc's heap fragmented. A dead buffer's
 * memory goes back to malloc only when V8 collects it, in batches and out of order, and malloc rarely hands a
 * hole to the next 1 MiB request or returns it to the system: the backups' peak resident set was ~100 MiB of such
 * heap above what was live. Buffers taken from a pool and given back once consumed are made once.
 *
 * A buffer may be given back only when nothing refers to its bytes any more (the compressor has finished with
 * it): the pool does not check, and a buffer still in use would be overwritten by the next read into it.
 */
export class BufferPool {
  readonly size: number;
  readonly #max: number;
  readonly #free: ArrayBuffer[] = [];
  /** The buffers this pool made: only these are taken back. */
  readonly #own = new WeakSet<ArrayBuffer>();

  constructor(size: number, max: number) {
    this.size = size;
    this.#max = max;
  }

  /** A buffer of `size` bytes, contents undefined. */
  take(): Buffer {
    const ab = this.#free.pop();
    if (ab) return Buffer.from(ab);
    const b = Buffer.allocUnsafeSlow(this.size);
    this.#own.add(b.buffer as ArrayBuffer);
    return b;
  }

  /**
   * Gives back the buffers behind `parts` (views of this pool's buffers, as read); anything else is ignored, so a
   * caller may hand over a whole block of mixed chunks.
   */
  give(parts: readonly Buffer[]): void {
    for (const b of parts) {
      const ab = b.buffer;
      if (!(ab instanceof ArrayBuffer) || !this.#own.has(ab) || this.#free.length >= this.#max || this.#free.includes(ab)) continue;
      this.#free.push(ab);
    }
  }
}
