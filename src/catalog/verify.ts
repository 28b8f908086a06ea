import { createHash } from 'node:crypto';
import { type Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DecryptStream, keyFingerprint } from '../archive/crypto.ts';
import { decompressor } from '../archive/format.ts';
import { scanArchive } from '../archive/scan.ts';
import { CbrError, type ErrorCode } from '../core/errors.ts';
import { inPool } from '../core/pool.ts';
import type { ObjectStore } from '../storage/port.ts';
import { blobBinding, contentCheck, recordedForm } from './blobs.ts';
import { type BackupRecord, type RecordFile, readRecord } from './catalog.ts';
import { recordBinding, verifyRecord } from './record.ts';

/**
 * `cbr backup-verify`: is a backup still what its record says, without a Cassandra node?
 *
 * Shallow: every object the record names exists with its recorded size (a head per object). Deep: every byte is read
 * back, decrypted (each AES-GCM chunk authenticated), decompressed and checked: an incremental backup's files each
 * against their recorded size and SHA-256 (or, where an encrypted record keeps none, the keyed blob name the SHA-256
 * gives: blobs.ts contentCheck); a full backup's archive against the record's SHA-256 of the stored
 * object, and its tar entries against the record's paths and sizes (zstd frames carry their own content checksum).
 *
 * A sample checks one bucket of the files: each file's bucket is a hash of its blob's key (of its path where it has
 * none), so the same blob keeps its bucket in every backup that names it, and the caller names which bucket this
 * run takes (see sampleCursor.ts): `buckets` runs in a row check every file of one backup once, and, the cursor
 * following the newest backup of a host (`--latest`), every blob that lives through `buckets` successive backups.
 * A full backup is one object whose digest covers it whole: it is always checked whole.
 */

export type ProblemKind = 'missing' | 'size' | 'corrupt' | 'unexpected';

export interface VerifyProblem {
  kind: ProblemKind;
  /** The object in storage (archive or blob). */
  object: string;
  /** The backup file it holds, when one. */
  path?: string;
  expected?: number | string;
  found?: number | string;
  message: string;
}

/** What a verify came to: what the CLI prints with --json, the bus's result carries, and a metrics exporter records. */
export interface VerifyResult {
  id: string;
  host: string;
  sourceInstance: string;
  strategy: 'full' | 'incremental';
  deep: boolean;
  /** The bucket this run took, or null when everything was checked. */
  sample: { bucket: number; buckets: number } | null;
  /** Share of the backup's stored bytes this run checked (1 when whole). */
  sampledFraction: number;
  ok: boolean;
  problems: VerifyProblem[];
  objects: number;
  files: number;
  /** Stored bytes read back (deep), 0 when shallow. */
  bytesRead: number;
  startedAt: string;
  seconds: number;
}

export interface VerifyProgress {
  bytes: number;
  files: number;
  totalBytes: number;
  totalFiles: number;
  storedBytes: number;
}

export interface VerifyOptions {
  deep: boolean;
  /** Check one bucket of `buckets` (incremental backups); absent: all. */
  sample?: { bucket: number; buckets: number } | undefined;
  /** The archive key, for a deep check of an encrypted backup (and to check the record's MAC). */
  key?: Buffer | null | undefined;
  concurrency?: number;
  signal?: AbortSignal;
  onProgress?: (p: VerifyProgress) => void;
}

/** At most this many problems are listed (a store that lost everything would otherwise make a huge report). */
export const MAX_PROBLEMS = 1000;

/**
 * The bucket of one of `buckets` a key (a blob's, or a file's path) falls in: the first 48 bits of its SHA-256,
 * modulo `buckets`. It depends on the key alone, not on the other files of a record, so a blob shared by successive
 * backups stays in its bucket from one to the next (a split balancing bytes per record would move it: the files
 * that come and go shift every other one). Buckets hold about equal numbers of files, not of bytes.
 */
export function bucketOf(key: string, buckets: number): number {
  if (!Number.isInteger(buckets) || buckets < 1) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `buckets must be a whole number of at least 1, not ${buckets}`);
  return createHash('sha256').update(key).digest().readUIntBE(0, 6) % buckets;
}

/** `10%`, `10`, `2.5%` -> buckets = ceil(100 / percent): that many runs cover everything. */
export function bucketsFor(sample: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*%?\s*$/.exec(sample);
  const pct = m ? Number(m[1]) : Number.NaN;
  if (!(pct > 0 && pct <= 100))
    throw new CbrError(
      'CBR_ERR_INVALID_ARGUMENT',
      `--sample must be a percentage above 0 and at most 100, like 10% (got ${JSON.stringify(sample.slice(0, 40))})`,
    );
  return Math.ceil(100 / pct);
}

/** The coded error of a verify that found problems (missing objects alone: MISSING; anything else: CORRUPT), or null. */
export function verdictCode(result: Pick<VerifyResult, 'ok' | 'problems'>): ErrorCode | null {
  if (result.ok) return null;
  return result.problems.every((p) => p.kind === 'missing') ? 'CBR_ERR_VERIFY_MISSING' : 'CBR_ERR_VERIFY_CORRUPT';
}

/** One line saying what a failed verify found. */
export function verdictMessage(result: VerifyResult): string {
  const counts = new Map<ProblemKind, number>();
  for (const p of result.problems) counts.set(p.kind, (counts.get(p.kind) ?? 0) + 1);
  const parts = [...counts].map(([k, n]) => `${n} ${k}`);
  const first = result.problems[0];
  return `backup ${result.id}: ${parts.join(', ')}${first ? ` (first: ${first.message})` : ''}`;
}

export async function verifyBackup(store: ObjectStore, id: string, opts: VerifyOptions): Promise<VerifyResult> {
  const started = Date.now();
  const startedAt = new Date(started).toISOString();
  const rec = await readRecord(store, id, opts.signal);
  checkKey(rec, opts);
  const strategy = rec.strategy ?? 'full';
  const problems: VerifyProblem[] = [];
  const add = (p: VerifyProblem) => {
    if (problems.length < MAX_PROBLEMS) problems.push(p);
  };
  const progress: VerifyProgress = { bytes: 0, files: 0, totalBytes: 0, totalFiles: 0, storedBytes: 0 };
  let last = 0;
  const report = (force = false) => {
    const now = Date.now();
    if (!opts.onProgress || (!force && now - last < 250)) return;
    last = now;
    opts.onProgress({ ...progress });
  };
  let sample: VerifyResult['sample'] = null;
  let checkedStored = rec.size;
  let objects = 0;
  let files = 0;
  if (strategy === 'full') {
    progress.totalBytes = opts.deep ? rec.size : 0;
    progress.totalFiles = rec.fileCount;
    objects = 1;
    files = rec.fileCount;
    await verifyArchive(store, rec, opts, add, (stored, raw) => {
      progress.storedBytes += stored;
      progress.bytes += stored;
      void raw;
      report();
    });
    progress.files = rec.fileCount;
  } else {
    let chosen: RecordFile[] = rec.files;
    if (opts.sample && opts.sample.buckets > 1) {
      const { bucket, buckets } = opts.sample;
      if (!Number.isInteger(bucket) || bucket < 0 || bucket >= buckets)
        throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `bucket ${bucket} is not one of 0..${buckets - 1}`);
      chosen = rec.files.filter((f) => bucketOf(f.blob ?? f.path, buckets) === bucket);
      sample = { bucket, buckets };
    }
    checkedStored = chosen.reduce((s, f) => s + (f.stored ?? 0), 0);
    progress.totalBytes = checkedStored;
    progress.totalFiles = chosen.length;
    objects = chosen.length;
    files = chosen.length;
    await inPool(chosen, opts.concurrency ?? 4, opts.signal ?? new AbortController().signal, async (f, _i, signal) => {
      await verifyBlob(store, rec, f, { ...opts, signal }, add, (stored) => {
        progress.storedBytes += stored;
        if (!opts.deep) progress.bytes += stored;
        report();
      });
      if (opts.deep) progress.bytes = progress.storedBytes;
      progress.files++;
      report();
    });
  }
  report(true);
  return {
    id: rec.id,
    host: rec.hostId,
    sourceInstance: rec.sourceInstance,
    strategy,
    deep: opts.deep,
    sample,
    sampledFraction: rec.size > 0 ? Math.min(1, checkedStored / rec.size) : 1,
    ok: problems.length === 0,
    problems,
    objects,
    files,
    bytesRead: opts.deep ? progress.storedBytes : 0,
    startedAt,
    seconds: (Date.now() - started) / 1000,
  };
}

/** A key that is not the backup's is a coded error before anything is read, never a list of "corrupt" objects. */
function checkKey(rec: BackupRecord, opts: VerifyOptions): void {
  if (!rec.encryption) return;
  if (!opts.key) {
    if (opts.deep)
      throw new CbrError('CBR_ERR_KEY_REQUIRED', `backup ${rec.id} is encrypted; a deep verify needs its key (--decrypt-key-file or --decrypt-key-env)`);
    return;
  }
  if (keyFingerprint(opts.key) !== rec.encryption.keyFingerprint) {
    throw new CbrError('CBR_ERR_DECRYPT_FAILED', `wrong key: backup ${rec.id} was encrypted with key ${rec.encryption.keyFingerprint}`);
  }
  verifyRecord(rec, opts.key);
}

async function verifyArchive(
  store: ObjectStore,
  rec: BackupRecord,
  opts: VerifyOptions,
  add: (p: VerifyProblem) => void,
  onBytes: (stored: number, raw: number) => void,
): Promise<void> {
  const object = rec.object;
  const head = await store.head(object, sig(opts));
  if (!head) {
    add({ kind: 'missing', object, message: `${object} is missing` });
    return;
  }
  if (head.size !== rec.size) {
    add({ kind: 'size', object, expected: rec.size, found: head.size, message: `${object} holds ${head.size} bytes, the record says ${rec.size}` });
    if (!opts.deep) return;
  }
  if (!opts.deep) {
    onBytes(0, 0);
    return;
  }
  const source = await getOrNull(store, object, opts);
  if (!source) {
    add({ kind: 'missing', object, message: `${object} is missing` });
    return;
  }
  const scan = await scanArchive(source, {
    compression: rec.compression,
    key: rec.encryption ? (opts.key ?? undefined) : undefined,
    binding: rec.encryption?.bound ? recordBinding(rec) : undefined,
    expected: new Map(rec.files.map((f) => [f.path, f.size])),
    ...(opts.signal ? { signal: opts.signal } : {}),
    onBytes,
  });
  if (scan.streamError) {
    add({ kind: 'corrupt', object, message: `${object} could not be read back: ${scan.streamError.message}` });
  }
  if (!scan.streamError && scan.storedBytes !== rec.size && head.size === rec.size) {
    add({
      kind: 'size',
      object,
      expected: rec.size,
      found: scan.storedBytes,
      message: `${object} read back ${scan.storedBytes} bytes, the record says ${rec.size}`,
    });
  }
  if (!scan.streamError && scan.sha256 !== rec.sha256) {
    add({ kind: 'corrupt', object, expected: rec.sha256, found: scan.sha256, message: `${object}: its SHA-256 differs from the record` });
  }
  for (const e of scan.entryProblems) {
    const message =
      e.problem === 'unexpected'
        ? `${object} holds ${e.path}, which the record does not list`
        : e.problem === 'absent'
          ? `${object} lacks ${e.path}`
          : `${object}: ${e.path} holds ${e.found} bytes, the record says ${e.expected}`;
    add({
      kind: e.problem === 'unexpected' ? 'unexpected' : 'corrupt',
      object,
      path: e.path,
      ...(e.expected !== undefined ? { expected: e.expected } : {}),
      ...(e.found !== undefined ? { found: e.found } : {}),
      message,
    });
  }
}

async function verifyBlob(
  store: ObjectStore,
  rec: BackupRecord,
  f: RecordFile,
  opts: VerifyOptions & { signal: AbortSignal },
  add: (p: VerifyProblem) => void,
  onStored: (n: number) => void,
): Promise<void> {
  const object = f.blob!;
  const missing = () => add({ kind: 'missing', object, path: f.path, message: `the blob of ${f.path} (${object}) is missing` });
  const wrongSize = (found: number) =>
    add({ kind: 'size', object, path: f.path, expected: f.stored!, found, message: `the blob of ${f.path} holds ${found} bytes, the record says ${f.stored}` });
  if (!opts.deep) {
    const head = await store.head(object, { signal: opts.signal });
    if (!head) missing();
    else if (head.size !== f.stored) wrongSize(head.size);
    onStored(f.stored ?? 0);
    return;
  }
  const source = await getOrNull(store, object, opts);
  if (!source) {
    missing();
    return;
  }
  let stored = 0;
  const stages: NodeJS.ReadWriteStream[] = [
    new Transform({
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _enc, cb) {
        stored += chunk.length;
        onStored(chunk.length);
        cb(null, chunk);
      },
    }),
  ];
  if (rec.encryption) stages.push(new DecryptStream(opts.key!, blobBinding(object.slice(object.lastIndexOf('/') + 1))));
  stages.push(...decompressor(rec.compression));
  const check = new Digest();
  try {
    await pipeline([source, ...stages, check] as unknown as [Readable, NodeJS.WritableStream], { signal: opts.signal });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.name === 'AbortError' || (err instanceof CbrError && err.code === 'CBR_ERR_ABORTED')) throw new CbrError('CBR_ERR_ABORTED', 'verify aborted');
    if (err instanceof CbrError && err.code === 'CBR_ERR_STORAGE_FAILED') throw err;
    if (stored !== f.stored) wrongSize(stored);
    add({ kind: 'corrupt', object, path: f.path, message: `the blob of ${f.path} could not be read back: ${e.message}` });
    return;
  }
  if (stored !== f.stored) wrongSize(stored);
  const { size, sha256 } = check.result();
  if (size !== f.size) {
    add({
      kind: 'corrupt',
      object,
      path: f.path,
      expected: f.size,
      found: size,
      message: `${f.path} holds ${size} bytes once restored, the record says ${f.size}`,
    });
  } else {
    // Where the record keeps no SHA-256 (encrypted), the name the bytes give is compared and reported instead.
    const check = contentCheck(rec, f, opts.key);
    const found = recordedForm(check, sha256);
    if (found !== check.expected)
      add({ kind: 'corrupt', object, path: f.path, expected: check.expected, found, message: `${f.path}: its SHA-256 differs from the record` });
  }
}

/** Hashes and counts what reaches it, and drops it. */
class Digest extends Writable {
  readonly #hash = createHash('sha256');
  #size = 0;
  #digest = '';
  constructor() {
    super({ highWaterMark: 1 << 20 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#hash.update(chunk);
    this.#size += chunk.length;
    cb();
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.#digest = this.#hash.digest('hex');
    cb();
  }
  result(): { size: number; sha256: string } {
    return { size: this.#size, sha256: this.#digest };
  }
}

async function getOrNull(store: ObjectStore, key: string, opts: { signal?: AbortSignal | undefined }): Promise<Readable | null> {
  try {
    return await store.get(key, sig(opts));
  } catch (err) {
    if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') return null;
    throw err;
  }
}

function sig(opts: { signal?: AbortSignal | undefined }): { signal?: AbortSignal } {
  return opts.signal ? { signal: opts.signal } : {};
}
