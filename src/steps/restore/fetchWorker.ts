// A fetch worker (a worker_threads thread, see fetchWorkers.ts): turns the stored bytes of a blob, sent by the main
// thread as they are read, into `<file>.cbr-part`: decrypted, decompressed, hashed and written, all synchronously
// on this thread. Several files interleave; each is answered once: `done` (its size and SHA-256 are the recorded
// ones, the part file owned by the node's user, on disk (fsync, on libuv's pool while this thread goes on with the
// other files) and closed), `fail` or `aborted` (closed too).
import { createHash, type Hash } from 'node:crypto';
import { closeSync, fchownSync, fsync, openSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { constants, createZstdDecompress, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { Decryptor } from '../../archive/crypto.ts';
import { ZstdFrameCutter } from '../../archive/splitFrames.ts';
import { type ContentCheck, sameContent } from '../../catalog/blobs.ts';
import { bufferReleaser } from '../../core/memory.ts';
import type { FromWorker, ToWorker } from './fetchWorkers.ts';

/** A frame's output is 1 MiB (cbr's block); the first buffer zstd fills is this large, so one call fills one. */
const FRAME_OUT = (1 << 20) + (64 << 10);
/** The largest frame output taken: a frame that inflates past it is refused (corrupt) instead of filling memory. */
const MAX_FRAME_OUT = 64 << 20;

/** What Node's zlib handle offers under its streams (not a public API: checked by selfTest before it is used). */
interface ZlibHandle {
  writeSync(flush: number, input: Buffer, inOff: number, inLen: number, out: Buffer, outOff: number, outLen: number): void;
  onerror: (message: string, errno: number, code?: string) => void;
}

/**
 * zstd decompression of a whole blob through one context, into one reused output buffer, synchronously: about
 * 40% less CPU than a zstdDecompressSync per frame (a new context and a new 1 MiB buffer each), and no frame
 * cutting (the context goes from one frame to the next). Built on the handle under Node's zstd stream; if that
 * handle does not behave as expected (another Node), selfTest says so and the worker cuts frames instead.
 */
class ZstdContext {
  readonly #stream = createZstdDecompress();
  readonly #handle: ZlibHandle;
  readonly #state: Uint32Array;
  #error: Error | null = null;

  constructor() {
    const raw = this.#stream as unknown as { _handle?: ZlibHandle; _writeState?: Uint32Array };
    if (!raw._handle || !raw._writeState) throw new Error('no zlib handle');
    this.#handle = raw._handle;
    this.#state = raw._writeState;
    this.#handle.onerror = (message, _errno, code) => {
      this.#error = Object.assign(new Error(`zstd: ${message}`), { code: code ?? 'ZSTD_ERROR' });
    };
  }

  /** Decompresses `input`, handing each piece of output (valid until the next call) to `emit`. */
  update(input: Buffer, emit: (out: Buffer) => void): void {
    let off = 0;
    let left = input.length;
    for (;;) {
      this.#handle.writeSync(constants.ZSTD_e_continue, input, off, left, OUT, 0, OUT.length);
      if (this.#error) throw this.#error;
      const outLeft = this.#state[0]!;
      const inLeft = this.#state[1]!;
      if (outLeft < OUT.length) emit(OUT.subarray(0, OUT.length - outLeft));
      off += left - inLeft;
      left = inLeft;
      // Output room to spare and no input left: all of it went through.
      if (outLeft > 0 && inLeft === 0) return;
    }
  }

  close(): void {
    this.#stream.close();
  }
}

/** The output buffer every ZstdContext of this worker writes into (files are handled one call at a time). */
const OUT = Buffer.allocUnsafe(1 << 20);

/** Whether ZstdContext works on this Node: two frames in one input, split across calls, come out whole. */
function selfTest(): boolean {
  try {
    const a = Buffer.alloc(300_000, 'cbr fetch ');
    const b = Buffer.alloc(5_000, 'second frame ');
    const both = Buffer.concat([zstdCompressSync(a), zstdCompressSync(b)]);
    const ctx = new ZstdContext();
    const got: Buffer[] = [];
    ctx.update(both.subarray(0, 7), (o) => got.push(Buffer.from(o)));
    ctx.update(both.subarray(7), (o) => got.push(Buffer.from(o)));
    ctx.close();
    return Buffer.concat(got).equals(Buffer.concat([a, b]));
  } catch {
    return false;
  }
}
// workerData.cutFrames (tests) takes the other way on purpose.
const fastZstd = !(workerData as { cutFrames?: boolean }).cutFrames && selfTest();

interface Job {
  path: string;
  size: number;
  check: ContentCheck;
  fd: number;
  hash: Hash;
  written: number;
  decrypt: Decryptor | null;
  zstd: ZstdContext | null;
  frames: ZstdFrameCutter | null;
  /** Verified, its fsync in flight: the descriptor is closed only once it returns. */
  syncing: boolean;
  /** An abort came during the fsync: answered once it returns. */
  aborted: boolean;
}

const port = parentPort!;
const key = (workerData as { key: Uint8Array | null }).key;
const masterKey = key ? Buffer.from(key.buffer, key.byteOffset, key.byteLength) : null;
const jobs = new Map<number, Job>();
// workerData.failSyncForTest (tests): every fsync fails with EIO, as a failing disk's would.
const syncFile: (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => void = (workerData as { failSyncForTest?: boolean }).failSyncForTest
  ? (_fd, cb) => {
      setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' })));
    }
  : fsync;
// Every chunk received (and, cutting frames, every frame decompressed) is a new buffer outside V8's heap, dead once
// written: collected every 4 MiB (a worker's young generation is small, each collection cheap), not after ~64 MiB
// (without it the fetch's peak RSS was 376 MiB; every 16 MiB 253-298; CBR_GC_EVERY_MIB still overrides).
const release = bufferReleaser({ CBR_GC_EVERY_MIB: process.env['CBR_GC_EVERY_MIB'] ?? '4' });

/** A file refused by a check here, with the code the main thread gives it. */
class Refused extends Error {
  readonly code: 'CBR_ERR_ARCHIVE_CORRUPT' | 'CBR_ERR_KEY_REQUIRED';
  constructor(code: 'CBR_ERR_ARCHIVE_CORRUPT' | 'CBR_ERR_KEY_REQUIRED', message: string) {
    super(message);
    this.code = code;
  }
}

function send(m: FromWorker): void {
  port.postMessage(m);
}

function write(job: Job, data: Buffer): void {
  if (data.length === 0) return;
  job.written += data.length;
  if (job.written > job.size) throw new Refused('CBR_ERR_ARCHIVE_CORRUPT', `restored file ${job.path}: more than the recorded ${job.size} bytes`);
  job.hash.update(data);
  let off = 0;
  while (off < data.length) off += writeSync(job.fd, data, off, data.length - off);
}

function plain(job: Job, data: Buffer): void {
  if (job.zstd) {
    job.zstd.update(data, (out) => write(job, out));
    return;
  }
  if (!job.frames) {
    write(job, data);
    return;
  }
  for (const frame of job.frames.update(data)) {
    const left = job.size - job.written;
    // One byte more than the file still needs is enough to know a frame holds too much.
    const out = zstdDecompressSync(frame, { chunkSize: Math.max(64, Math.min(FRAME_OUT, left + 1)), maxOutputLength: Math.min(MAX_FRAME_OUT, left + 1) });
    write(job, out);
    release(out.length);
  }
}

function take(job: Job, stored: Buffer): void {
  if (job.decrypt) for (const p of job.decrypt.update(stored)) plain(job, p);
  else plain(job, stored);
}

function finish(job: Job): void {
  if (job.decrypt) plain(job, job.decrypt.final());
  job.frames?.end();
  if (job.written !== job.size) throw new Refused('CBR_ERR_ARCHIVE_CORRUPT', `restored file ${job.path}: ${job.written} bytes, the record says ${job.size}`);
  if (!sameContent(job.check, job.hash.digest('hex')))
    throw new Refused('CBR_ERR_ARCHIVE_CORRUPT', `restored file ${job.path}: its SHA-256 differs from the record`);
}

function close(id: number): void {
  const job = jobs.get(id);
  if (!job) return;
  jobs.delete(id);
  job.zstd?.close();
  try {
    closeSync(job.fd);
  } catch {
    /* already failed; the main thread removes the part file */
  }
}

function failed(id: number, err: unknown): void {
  close(id);
  const e = err as NodeJS.ErrnoException & { code?: string };
  // A CbrError (the decryptor's, the frame cutter's) or a Refused carries its code; a system error its errno.
  const code = typeof e.code === 'string' && e.code.startsWith('CBR_ERR_') ? e.code : undefined;
  const errno = code ? undefined : typeof e.code === 'string' ? e.code : undefined;
  send({ t: 'fail', id, error: { ...(code ? { code } : {}), ...(errno ? { errno } : {}), message: e.message ?? String(err) } });
}

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'open': {
      try {
        if (m.encrypted && !masterKey) throw new Refused('CBR_ERR_KEY_REQUIRED', 'the backup is encrypted and no key was given');
        const fd = openSync(m.part, 'wx', 0o644);
        // Owned before it is synced: the fsync makes the owner durable with the bytes.
        if (m.owner) {
          try {
            fchownSync(fd, m.owner.uid, m.owner.gid);
          } catch (err) {
            closeSync(fd);
            throw err;
          }
        }
        jobs.set(m.id, {
          path: m.path,
          size: m.size,
          check: m.check,
          fd,
          hash: createHash('sha256'),
          written: 0,
          decrypt: m.encrypted
            ? new Decryptor(masterKey!, m.binding ? Buffer.from(m.binding.buffer, m.binding.byteOffset, m.binding.byteLength) : undefined)
            : null,
          zstd: m.compression === 'zstd' && fastZstd ? new ZstdContext() : null,
          frames: m.compression === 'zstd' && !fastZstd ? new ZstdFrameCutter() : null,
          syncing: false,
          aborted: false,
        });
      } catch (err) {
        failed(m.id, err);
      }
      return;
    }
    case 'data': {
      const job = jobs.get(m.id);
      // A file that failed already: its remaining chunks, sent before the main thread heard, are dropped.
      if (!job) return;
      try {
        const before = job.written;
        take(job, Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength));
        send({ t: 'ack', id: m.id, raw: job.written - before, stored: m.chunk.byteLength });
        release(m.chunk.byteLength);
      } catch (err) {
        failed(m.id, err);
      }
      return;
    }
    case 'end': {
      const job = jobs.get(m.id);
      if (!job || job.syncing) return;
      const before = job.written;
      try {
        finish(job);
      } catch (err) {
        failed(m.id, err);
        return;
      }
      // Its writeback starts now, while this thread decompresses the next files: the step's durable mark then has
      // only directories left to flush. The descriptor stays open (and the file unanswered) until it is on disk.
      job.syncing = true;
      job.zstd?.close();
      job.zstd = null;
      syncFile(job.fd, (err) => {
        if (job.aborted) {
          close(m.id);
          send({ t: 'aborted', id: m.id });
        } else if (err) failed(m.id, err);
        else {
          close(m.id);
          send({ t: 'done', id: m.id, raw: job.written - before });
        }
      });
      return;
    }
    case 'abort': {
      const job = jobs.get(m.id);
      if (job?.syncing) {
        job.aborted = true;
        return;
      }
      close(m.id);
      send({ t: 'aborted', id: m.id });
      return;
    }
    case 'stall': {
      // Tests only: this thread takes no message until the main thread releases it.
      Atomics.wait(new Int32Array(m.flag), 0, 0);
      return;
    }
    case 'crash': {
      // Tests only: an uncaught error on this thread, as a bug or a failed allocation would be.
      throw new Error('fetch worker crash (test)');
    }
  }
});
