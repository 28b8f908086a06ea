import { Transform, type TransformCallback } from 'node:stream';
import { CbrError } from '../core/errors.ts';

/**
 * Limits a stream to `bytesPerSecond` (token bucket, one second of burst), so a backup does not saturate the
 * node's disk or uplink while Cassandra serves traffic.
 */
export class Throttle extends Transform {
  readonly #rate: number;
  #allowance: number;
  #last = Date.now();

  constructor(bytesPerSecond: number) {
    super({ highWaterMark: 1 << 16 });
    this.#rate = bytesPerSecond;
    this.#allowance = bytesPerSecond;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const now = Date.now();
    this.#allowance = Math.min(this.#rate, this.#allowance + ((now - this.#last) / 1000) * this.#rate);
    this.#last = now;
    this.#allowance -= chunk.length;
    const wait = this.#allowance < 0 ? (-this.#allowance / this.#rate) * 1000 : 0;
    if (wait > 0) setTimeout(() => cb(null, chunk), wait);
    else cb(null, chunk);
  }
}

/** Parses "50M", "512K", "1G" or a plain number of bytes per second. */
export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]i?B?)?(?:\/s)?$/i.exec(text.trim());
  if (!m) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `cannot parse rate ${JSON.stringify(text)} (e.g. 50M, 512K)`);
  const unit = (m[2] ?? '').toUpperCase()[0];
  const mult = unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1;
  const n = Math.floor(Number(m[1]) * mult);
  if (n < 1024) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'rate limit must be at least 1K per second');
  return n;
}
