import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { zstdCompressSync } from 'node:zlib';
import { EncryptStream } from '../../../src/archive/crypto.ts';
import { ZstdFrameCutter } from '../../../src/archive/splitFrames.ts';
import { blobBinding } from '../../../src/catalog/blobs.ts';
import { CbrError } from '../../../src/core/errors.ts';
import { type FetchJob, FetchWorkers, type FromWorker, IN_FLIGHT, type ToWorker, WORKER_LIMITS } from '../../../src/steps/restore/fetchWorkers.ts';

/**
 * The restore fetch's worker threads (fetchWorkers.ts, fetchWorker.ts) on their own: a blob's stored bytes in, the
 * checked part file out; a refused file, a crashed or ended worker and an abort each end as a coded error (or
 * the abort), never a hang, with the part file closed before the call returns.
 */

const dir = mkdtempSync(join(tmpdir(), 'cbr-fetch-workers-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** 1 MiB zstd frames, as cbr's compressor writes them. */
function zstdFrames(data: Buffer): Buffer {
  const frames: Buffer[] = [];
  for (let off = 0; off < data.length; off += 1 << 20) frames.push(zstdCompressSync(data.subarray(off, off + (1 << 20))));
  return Buffer.concat(frames);
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function jobFor(data: Buffer, over: Partial<FetchJob> = {}): FetchJob {
  return {
    path: `ks/t-1/f${n}`,
    part: join(dir, `part-${n++}`),
    size: data.length,
    check: { expected: sha(data), keyed: null },
    compression: 'zstd',
    encrypted: false,
    binding: null,
    owner: null,
    ...over,
  };
}

/** Some bytes zstd compresses, some it does not. */
function content(size: number): Buffer {
  const b = Buffer.alloc(size, 'cassandra row ');
  randomBytes(size >> 2).copy(b, size >> 1);
  return b;
}

/** In chunks of `chunk` bytes, as a store's stream gives them. */
function chunked(b: Buffer, chunk = 100_000): Readable {
  const parts: Buffer[] = [];
  for (let off = 0; off < b.length; off += chunk) parts.push(b.subarray(off, off + chunk));
  return Readable.from(parts);
}

/** Rejects with a CbrError of this code. */
async function rejectsWith(p: Promise<unknown>, code: string): Promise<CbrError> {
  const err = await p.then(
    () => assert.fail('expected a rejection'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof CbrError, `a CbrError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

describe('restore fetch workers', () => {
  it('writes the recorded file from zstd frames, in any chunking, from a file read stream or any stream', async () => {
    const workers = new FetchWorkers(2, null);
    try {
      const data = content(3 * (1 << 20) + 12_345);
      const blob = zstdFrames(data);
      const blobFile = join(dir, 'blob.zst');
      writeFileSync(blobFile, blob);
      const jobs = [jobFor(data), jobFor(data), jobFor(data)];
      let raw = 0;
      let stored = 0;
      await Promise.all([
        workers.run(jobs[0]!, chunked(blob, 4099), new AbortController().signal, () => {}),
        workers.run(jobs[1]!, createReadStream(blobFile, { highWaterMark: 1 << 20 }), new AbortController().signal, (r, s) => {
          raw += r;
          stored += s;
        }),
        workers.run(jobs[2]!, chunked(blob, 1 << 20), new AbortController().signal, () => {}),
      ]);
      for (const j of jobs) assert.ok(readFileSync(j.part).equals(data));
      assert.equal(raw, data.length, 'every byte written is reported');
      assert.equal(stored, blob.length, 'every byte read is reported');
      // Uncompressed blobs go through as they are.
      const plain = jobFor(data, { compression: 'none' });
      await workers.run(plain, chunked(data), new AbortController().signal, () => {});
      assert.ok(readFileSync(plain.part).equals(data));
    } finally {
      await workers.close();
    }
  });

  it('cutting frames instead of one zstd context (the way taken on a Node whose zstd handle differs) writes the same file', async () => {
    const workers = new FetchWorkers(1, null, { cutFrames: true });
    try {
      const data = content(2 * (1 << 20) + 777);
      const blob = zstdFrames(data);
      const job = jobFor(data);
      await workers.run(job, chunked(blob, 300_000), new AbortController().signal, () => {});
      assert.ok(readFileSync(job.part).equals(data));
      await rejectsWith(
        workers.run(jobFor(data, { check: { expected: '1'.repeat(64), keyed: null } }), chunked(blob), new AbortController().signal, () => {}),
        'CBR_ERR_ARCHIVE_CORRUPT',
      );
    } finally {
      await workers.close();
    }
  });

  it('decrypts a blob sealed to its name, and refuses it under another name', async () => {
    const key = randomBytes(32);
    const workers = new FetchWorkers(1, key);
    try {
      const data = content(2 * (1 << 20) + 99);
      const sealed = Buffer.concat(
        await Readable.from([zstdFrames(data)])
          .pipe(new EncryptStream(key, undefined, blobBinding('b1')))
          .toArray(),
      );
      const job = jobFor(data, { encrypted: true, binding: blobBinding('b1') });
      await workers.run(job, chunked(sealed, 65_536), new AbortController().signal, () => {});
      assert.ok(readFileSync(job.part).equals(data));
      await rejectsWith(
        workers.run(jobFor(data, { encrypted: true, binding: blobBinding('b2') }), chunked(sealed), new AbortController().signal, () => {}),
        'CBR_ERR_DECRYPT_FAILED',
      );
    } finally {
      await workers.close();
    }
  });

  it('refuses bytes that are not the recorded file: another SHA-256, more or fewer bytes, a cut or corrupt frame', async () => {
    const workers = new FetchWorkers(2, null);
    try {
      const data = content(1 << 20);
      const blob = zstdFrames(data);
      const signal = new AbortController().signal;
      const sha = await rejectsWith(
        workers.run(jobFor(data, { check: { expected: '0'.repeat(64), keyed: null } }), chunked(blob), signal, () => {}),
        'CBR_ERR_ARCHIVE_CORRUPT',
      );
      assert.match(sha.message, /ks\/t-1\/f\d+: its SHA-256 differs/);
      await rejectsWith(
        workers.run(jobFor(data, { size: data.length - 1 }), chunked(blob), signal, () => {}),
        'CBR_ERR_ARCHIVE_CORRUPT',
      );
      await rejectsWith(
        workers.run(jobFor(data, { size: data.length + 1 }), chunked(blob), signal, () => {}),
        'CBR_ERR_ARCHIVE_CORRUPT',
      );
      await rejectsWith(
        workers.run(jobFor(data), chunked(blob.subarray(0, blob.length - 100)), signal, () => {}),
        'CBR_ERR_ARCHIVE_CORRUPT',
      );
      const flipped = Buffer.from(blob);
      flipped[flipped.length >> 1]! ^= 0xff;
      const err = await workers
        .run(jobFor(data), chunked(flipped), signal, () => {})
        .then(
          () => assert.fail('expected a rejection'),
          (e: NodeJS.ErrnoException) => e,
        );
      // A zstd error comes back as a system-level error the caller classifies (fetchFiles: CBR_ERR_ARCHIVE_CORRUPT).
      assert.ok(err instanceof CbrError ? err.code === 'CBR_ERR_ARCHIVE_CORRUPT' : typeof err.code === 'string', String(err));
      // The workers go on serving after refusals.
      const ok = jobFor(data);
      await workers.run(ok, chunked(blob), signal, () => {});
      assert.ok(readFileSync(ok.part).equals(data));
    } finally {
      await workers.close();
    }
  });

  it('a part file that exists already is not overwritten (EEXIST, for the caller to refuse)', async () => {
    const workers = new FetchWorkers(1, null);
    try {
      const data = content(1000);
      const job = jobFor(data);
      writeFileSync(job.part, 'already here');
      const err = await workers
        .run(job, chunked(zstdFrames(data)), new AbortController().signal, () => {})
        .then(
          () => assert.fail('expected a rejection'),
          (e: NodeJS.ErrnoException) => e,
        );
      assert.equal(err.code, 'EEXIST');
      assert.equal(readFileSync(job.part, 'utf8'), 'already here');
    } finally {
      await workers.close();
    }
  });

  it("reads a local store's file ahead of a stalled worker by at most the in-flight bound", async () => {
    const workers = new FetchWorkers(1, null);
    try {
      const data = randomBytes(8 * IN_FLIGHT);
      const blobPath = join(dir, 'bound.blob');
      writeFileSync(blobPath, zstdFrames(data));
      const chunk = 256 << 10;
      const release = workers.stallForTest();
      // As the local store gives it: a file read stream, each chunk a buffer of its own (transferred to the worker).
      const source = createReadStream(blobPath, { highWaterMark: chunk });
      const job = jobFor(data);
      const done = workers.run(job, source, new AbortController().signal, () => {});
      // Failed, it is awaited below; never left unhandled when an assertion ends the test first.
      done.catch(() => {});
      // Until the reading has started and then stopped for a while.
      let last = -1;
      while (source.bytesRead === 0 || source.bytesRead !== last) {
        last = source.bytesRead;
        await new Promise((r) => setTimeout(r, 200));
      }
      // The bound, one chunk over it, and the stream's own read-ahead: never the whole blob.
      assert.ok(source.bytesRead <= IN_FLIGHT + 3 * chunk, `read ${source.bytesRead} bytes ahead of a stalled worker`);
      assert.ok(source.bytesRead > 0);
      release();
      await done;
      assert.ok(readFileSync(job.part).equals(data));
    } finally {
      await workers.close();
    }
  });

  it('runs its workers with a small young generation (the restore peak RSS)', async () => {
    const workers = new FetchWorkers(2, null);
    try {
      const data = content(200_000);
      const job = jobFor(data);
      await workers.run(job, chunked(zstdFrames(data)), new AbortController().signal, () => {});
      assert.ok(WORKER_LIMITS.maxYoungGenerationSizeMb <= 8);
      for (const i of [0, 1]) assert.equal(workers.limitsForTest(i)?.maxYoungGenerationSizeMb, WORKER_LIMITS.maxYoungGenerationSizeMb);
    } finally {
      await workers.close();
    }
  });

  it('gives the part file its owner before it is synced; a file is done only once its fsync succeeded', async () => {
    const data = content(300_000);
    const workers = new FetchWorkers(1, null);
    try {
      const job = jobFor(data, { owner: { uid: 4321, gid: 4322 } });
      await workers.run(job, chunked(zstdFrames(data)), new AbortController().signal, () => {});
      const st = statSync(job.part);
      assert.deepEqual([st.uid, st.gid], [4321, 4322]);
      assert.ok(readFileSync(job.part).equals(data));
    } finally {
      await workers.close();
    }
    // A disk whose fsync fails: the file is refused with the error, its part file closed (removable), and the
    // worker goes on with the next file.
    const failing = new FetchWorkers(1, null, { failSyncForTest: true });
    try {
      for (let i = 0; i < 2; i++) {
        const job = jobFor(data);
        const err = await failing
          .run(job, chunked(zstdFrames(data)), new AbortController().signal, () => {})
          .then(
            () => assert.fail('expected a rejection'),
            (e: NodeJS.ErrnoException) => e,
          );
        assert.equal(err.code, 'EIO');
        rmSync(job.part);
      }
    } finally {
      await failing.close();
    }
  });

  it('a worker that crashes fails the file in flight and every later one with CBR_ERR_WORKER_FAILED, without waiting for the source', async () => {
    const workers = new FetchWorkers(1, null);
    try {
      const data = content(1 << 20);
      const blob = zstdFrames(data);
      // A source that gives one chunk and then nothing (a stalled download).
      const stalled = new PassThrough();
      stalled.write(blob.subarray(0, 1000));
      const inFlight = workers.run(jobFor(data), stalled, new AbortController().signal, () => {});
      await new Promise((r) => setTimeout(r, 50));
      workers.crashForTest();
      const err = await rejectsWith(inFlight, 'CBR_ERR_WORKER_FAILED');
      assert.equal(err.retryable, true);
      assert.ok(stalled.destroyed, 'the read ended');
      await rejectsWith(
        workers.run(jobFor(data), chunked(blob), new AbortController().signal, () => {}),
        'CBR_ERR_WORKER_FAILED',
      );
    } finally {
      await workers.close();
    }
  });

  it('closing the workers fails a file still in flight with CBR_ERR_WORKER_FAILED', async () => {
    const workers = new FetchWorkers(2, null);
    const data = content(1000);
    const stalled = new PassThrough();
    stalled.write(zstdFrames(data).subarray(0, 10));
    const inFlight = workers.run(jobFor(data), stalled, new AbortController().signal, () => {});
    await new Promise((r) => setTimeout(r, 50));
    const failed = rejectsWith(inFlight, 'CBR_ERR_WORKER_FAILED');
    await workers.close();
    await failed;
  });

  it('an abort ends a file at once, even on a stalled source; its part file is closed when the call returns', async () => {
    const workers = new FetchWorkers(1, null);
    try {
      const data = content(1 << 20);
      const stalled = new PassThrough();
      stalled.write(zstdFrames(data).subarray(0, 5000));
      const ac = new AbortController();
      const job = jobFor(data);
      const inFlight = workers.run(job, stalled, ac.signal, () => {});
      await new Promise((r) => setTimeout(r, 50));
      ac.abort();
      const err = await inFlight.then(
        () => assert.fail('expected a rejection'),
        (e: Error) => e,
      );
      assert.equal(err.name, 'AbortError');
      assert.ok(stalled.destroyed);
      // Closed by the worker: the caller can remove it, and the worker serves the next file.
      assert.ok(existsSync(job.part));
      rmSync(job.part);
      const next = jobFor(data);
      await workers.run(next, chunked(zstdFrames(data)), new AbortController().signal, () => {});
      assert.ok(readFileSync(next.part).equals(data));
      // Aborted before it starts: nothing is opened.
      const early = jobFor(data);
      await assert.rejects(
        workers.run(early, chunked(zstdFrames(data)), AbortSignal.abort(), () => {}),
        { name: 'AbortError' },
      );
      assert.equal(existsSync(early.part), false);
    } finally {
      await workers.close();
    }
  });
});

describe('fetch worker protocol', () => {
  it('acks each chunk, answers each file once (done, fail or aborted), and drops chunks of a file it gave up', async () => {
    const worker = new Worker(new URL('../../../src/steps/restore/fetchWorker.ts', import.meta.url), { workerData: { key: null } });
    const got: FromWorker[] = [];
    const waiters: (() => void)[] = [];
    worker.on('message', (m: FromWorker) => {
      got.push(m);
      waiters.shift()?.();
    });
    const next = async (): Promise<FromWorker> => {
      if (got.length === 0) await new Promise<void>((r) => waiters.push(r));
      return got.shift()!;
    };
    const send = (m: ToWorker) => worker.postMessage(m);
    try {
      const data = content(1 << 20);
      const blob = zstdFrames(data);
      const job = jobFor(data);
      send({ t: 'open', id: 1, ...job, binding: null });
      send({ t: 'data', id: 1, chunk: blob.subarray(0, 1000) });
      send({ t: 'data', id: 1, chunk: blob.subarray(1000) });
      send({ t: 'end', id: 1 });
      const acks = [await next(), await next()] as { t: string; id: number; raw: number; stored: number }[];
      assert.deepEqual(
        acks.map((a) => [a.t, a.id, a.stored]),
        [
          ['ack', 1, 1000],
          ['ack', 1, blob.length - 1000],
        ],
      );
      const done = (await next()) as { t: string; raw: number };
      assert.equal(done.t, 'done');
      assert.equal(acks[0]!.raw + acks[1]!.raw + done.raw, data.length, 'every byte written is counted once');
      assert.ok(readFileSync(job.part).equals(data));
      // A refused file: one fail, then its late chunks and its end are dropped; an abort of it is still answered.
      const bad = jobFor(data, { size: 10 });
      send({ t: 'open', id: 2, ...bad, binding: null });
      send({ t: 'data', id: 2, chunk: blob });
      send({ t: 'data', id: 2, chunk: blob });
      send({ t: 'end', id: 2 });
      send({ t: 'abort', id: 2 });
      const fail = await next();
      assert.equal(fail.t, 'fail');
      assert.equal((fail as { error: { code?: string } }).error.code, 'CBR_ERR_ARCHIVE_CORRUPT');
      assert.deepEqual(await next(), { t: 'aborted', id: 2 });
    } finally {
      await worker.terminate();
    }
  });
});

describe('ZstdFrameCutter', () => {
  it('gives whole frames whatever the chunking, drops skippable frames, and refuses a cut stream or an oversized frame', () => {
    const a = zstdCompressSync(content(20_000));
    const b = zstdCompressSync(content(1000));
    const skip = Buffer.alloc(8 + 5);
    skip.writeUInt32LE(0x184d2a50, 0);
    skip.writeUInt32LE(5, 4);
    const all = Buffer.concat([a, skip, b]);
    for (const step of [1, 3, 1000, all.length]) {
      const cut = new ZstdFrameCutter();
      const frames: Buffer[] = [];
      for (let off = 0; off < all.length; off += step) frames.push(...cut.update(all.subarray(off, off + step)).map((f) => Buffer.from(f)));
      cut.end();
      assert.equal(frames.length, 2, `step ${step}`);
      assert.ok(frames[0]!.equals(a) && frames[1]!.equals(b), `step ${step}`);
    }
    const cut = new ZstdFrameCutter();
    cut.update(all.subarray(0, all.length - 1));
    assert.throws(() => cut.end(), { code: 'CBR_ERR_ARCHIVE_CORRUPT' });
    // A frame not yet whole is held only up to the limit.
    assert.throws(() => new ZstdFrameCutter(1000).update(a.subarray(0, 2000)), { code: 'CBR_ERR_ARCHIVE_CORRUPT' });
  });
});
