import { Transform, type TransformCallback } from 'node:stream';
import { CbrError } from '../core/errors.ts';

/**
 * Cuts a zstd stream at frame boundaries, so that no chunk handed on holds the end of one frame and the start of
 * the next. Node's zstd decompressor stops at the end of the first frame in a chunk and drops the rest of that
 * chunk (gunzip handles concatenated members; zstd does not), and cbr's archives are one frame per block.
 * Parses frame headers and block headers only (RFC 8878 §3.1); the bytes pass through unchanged.
 */
export class ZstdFrameSplitter extends Transform {
  #parts: Buffer[] = [];
  #partsLen = 0;
  /** Bytes still to pass of the current frame's known part; -1 while a header has to be parsed. */
  #state:
    | { kind: 'frameHeader' }
    | { kind: 'blockHeader' }
    | { kind: 'body'; left: number; next: 'blockHeader' | 'checksum' | 'frameEnd' }
    | { kind: 'checksum' } = { kind: 'frameHeader' };
  #checksum = false;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#parts.push(chunk);
    this.#partsLen += chunk.length;
    try {
      this.#advance();
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (this.#partsLen > 0 || this.#state.kind !== 'frameHeader') {
      cb(new CbrError('CBR_ERR_ARCHIVE_CORRUPT', 'the zstd stream ends inside a frame (truncated)'));
      return;
    }
    cb();
  }

  /** Emits whole frames and the known part of the current one; keeps back only an incomplete header. */
  #advance(): void {
    let buf = this.#take();
    let pos = 0;
    let frameStart = 0;
    for (;;) {
      const st = this.#state;
      if (st.kind === 'body') {
        const n = Math.min(st.left, buf.length - pos);
        pos += n;
        st.left -= n;
        if (st.left > 0) break;
        if (st.next === 'frameEnd') {
          this.push(buf.subarray(frameStart, pos));
          frameStart = pos;
          this.#state = { kind: 'frameHeader' };
        } else {
          this.#state = { kind: st.next };
        }
        continue;
      }
      if (st.kind === 'frameHeader') {
        if (pos === buf.length) break;
        const need = frameHeaderLength(buf, pos);
        if (need === null || buf.length - pos < need.length) break;
        pos += need.length;
        if (need.skippable !== undefined) {
          this.#state = { kind: 'body', left: need.skippable, next: 'frameEnd' };
        } else {
          this.#checksum = need.checksum;
          this.#state = { kind: 'blockHeader' };
        }
        continue;
      }
      if (st.kind === 'blockHeader') {
        const block = blockHeader(buf, pos, this.#checksum);
        if (!block) break;
        pos += 3;
        this.#state = { kind: 'body', ...block };
        continue;
      }
      // checksum
      this.#state = { kind: 'body', left: 4, next: 'frameEnd' };
    }
    // The current frame's bytes seen so far can go on (they are all of the same frame); an unparsed header waits.
    const keepFrom = this.#state.kind === 'frameHeader' || this.#state.kind === 'blockHeader' || this.#state.kind === 'checksum' ? pos : buf.length;
    if (keepFrom > frameStart) this.push(buf.subarray(frameStart, keepFrom));
    buf = buf.subarray(keepFrom);
    if (buf.length) {
      this.#parts = [buf];
      this.#partsLen = buf.length;
    }
  }

  #take(): Buffer {
    const all = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#partsLen);
    this.#parts = [];
    this.#partsLen = 0;
    return all;
  }
}

/** Length of the frame header at `pos` (magic included), or null when more bytes are needed to know. */
/**
 * The zstd block header at `pos` (3 bytes, little-endian: last flag, type, size): how many body bytes follow (one
 * for an RLE block) and what comes after them; null when fewer than 3 bytes are there. A reserved type is corrupt.
 */
function blockHeader(buf: Buffer, pos: number, checksum: boolean): { left: number; next: 'blockHeader' | 'checksum' | 'frameEnd' } | null {
  if (buf.length - pos < 3) return null;
  const h = buf[pos]! | (buf[pos + 1]! << 8) | (buf[pos + 2]! << 16);
  const type = (h >> 1) & 3;
  if (type === 3) throw new CbrError('CBR_ERR_ARCHIVE_CORRUPT', 'zstd stream has a reserved block type');
  const next = (h & 1) === 1 ? (checksum ? 'checksum' : 'frameEnd') : 'blockHeader';
  return { left: type === 1 ? 1 : h >>> 3, next };
}

function frameHeaderLength(buf: Buffer, pos: number): { length: number; checksum: boolean; skippable?: number } | null {
  if (buf.length - pos < 5) return null;
  const magic = buf.readUInt32LE(pos);
  if ((magic & 0xfffffff0) === 0x184d2a50) {
    if (buf.length - pos < 8) return null;
    return { length: 8, checksum: false, skippable: buf.readUInt32LE(pos + 4) };
  }
  if (magic !== 0xfd2fb528) throw new CbrError('CBR_ERR_ARCHIVE_CORRUPT', 'not a zstd frame (bad magic number)');
  const fhd = buf[pos + 4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = ((fhd >> 2) & 1) === 1;
  const didFlag = fhd & 3;
  const fcsBytes = fcsFlag === 0 ? singleSegment : fcsFlag === 1 ? 2 : fcsFlag === 2 ? 4 : 8;
  const didBytes = didFlag === 0 ? 0 : didFlag === 1 ? 1 : didFlag === 2 ? 2 : 4;
  return { length: 5 + (singleSegment ? 0 : 1) + didBytes + fcsBytes, checksum };
}

/**
 * Cuts a zstd stream into whole frames, for a caller that decompresses each frame in one call (the restore's
 * fetch workers, with zstdDecompressSync). cbr's frames hold 1 MiB of data each; a frame whose compressed bytes
 * pass `maxFrame` is refused (corrupt), so a hostile blob cannot make it buffer without bound. Skippable frames
 * are dropped.
 */
export class ZstdFrameCutter {
  readonly #maxFrame: number;
  /** The bytes of the current, incomplete frame, from its first byte. */
  #rest: Buffer = Buffer.alloc(0);
  /** How far into #rest the headers are parsed. */
  #pos = 0;
  #state:
    | { kind: 'frameHeader' }
    | { kind: 'blockHeader' }
    | { kind: 'body'; left: number; next: 'blockHeader' | 'checksum' | 'frameEnd'; skip: boolean }
    | { kind: 'checksum' } = {
    kind: 'frameHeader',
  };
  #checksum = false;

  constructor(maxFrame = 64 << 20) {
    this.#maxFrame = maxFrame;
  }

  /** The frames that `chunk` completes, in order. */
  update(chunk: Buffer): Buffer[] {
    const buf = this.#rest.length ? Buffer.concat([this.#rest, chunk]) : chunk;
    const out: Buffer[] = [];
    let pos = this.#pos;
    let frameStart = 0;
    for (;;) {
      const st = this.#state;
      if (st.kind === 'body') {
        const n = Math.min(st.left, buf.length - pos);
        pos += n;
        st.left -= n;
        if (st.left > 0) break;
        if (st.next === 'frameEnd') {
          if (!st.skip) out.push(buf.subarray(frameStart, pos));
          frameStart = pos;
          this.#state = { kind: 'frameHeader' };
        } else {
          this.#state = { kind: st.next };
        }
        continue;
      }
      if (st.kind === 'frameHeader') {
        if (pos === buf.length) break;
        const need = frameHeaderLength(buf, pos);
        if (need === null || buf.length - pos < need.length) break;
        pos += need.length;
        if (need.skippable !== undefined) {
          this.#state = { kind: 'body', left: need.skippable, next: 'frameEnd', skip: true };
        } else {
          this.#checksum = need.checksum;
          this.#state = { kind: 'blockHeader' };
        }
        continue;
      }
      if (st.kind === 'blockHeader') {
        const block = blockHeader(buf, pos, this.#checksum);
        if (!block) break;
        pos += 3;
        this.#state = { kind: 'body', ...block, skip: false };
        continue;
      }
      // checksum
      this.#state = { kind: 'body', left: 4, next: 'frameEnd', skip: false };
    }
    this.#rest = buf.subarray(frameStart);
    this.#pos = pos - frameStart;
    if (this.#rest.length > this.#maxFrame) throw new CbrError('CBR_ERR_ARCHIVE_CORRUPT', `a zstd frame is larger than ${this.#maxFrame} bytes`);
    return out;
  }

  /** Throws unless the stream ended on a frame boundary. */
  end(): void {
    if (this.#rest.length > 0 || this.#state.kind !== 'frameHeader') {
      throw new CbrError('CBR_ERR_ARCHIVE_CORRUPT', 'the zstd stream ends inside a frame (truncated)');
    }
  }
}
