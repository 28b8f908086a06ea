import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { type FileHandle, lchown, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DecryptStream } from '../../archive/crypto.ts';
import { entryProblem, tableKey } from '../../archive/entries.ts';
import { decompressor } from '../../archive/format.ts';
import { blobBinding } from '../../catalog/blobs.ts';
import { type BackupRecord, type RecordFile, recordKey } from '../../catalog/catalog.ts';
import { holdReadLease } from '../../catalog/leases.ts';
import { CbrError } from '../../core/errors.ts';
import { inPool } from '../../core/pool.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

export const JOURNAL = '.cbr-fetched';
const DEFAULT_CONCURRENCY = 4;
/** Files are synced and journaled in batches of this many bytes or files, whichever comes first. */
const BATCH_BYTES = 64 << 20;
const BATCH_FILES = 64;

/**
 * The restore's unpack step for an incremental backup: every file of the record is fetched from its blob,
 * decrypted, decompressed and written beside its place as `<file>.cbr-part` while it is hashed; only a file of
 * the recorded size and SHA-256 is renamed into place and written to the staging directory's journal
 * (`.cbr-fetched`, one `<sha256> <path>` line per file, appended in batches once the batch's files are synced). Re-run after a kill, files the journal lists
 * (at their recorded size) are not fetched again. The swap removes the journal.
 *
 * While it fetches it holds a read lease on the host's blobs (src/catalog/leases.ts), under the restore's workflow
 * id: a delete or prune of this backup meanwhile removes its record, but no collection removes a blob until the
 * lease is released here (or, the restore killed, dies with its ttl). A re-run holds it again.
 */
export async function fetchFiles(deps: RestoreDeps, input: RestoreStepInput, rec: BackupRecord, signal: AbortSignal) {
  const lease = await holdReadLease(deps.store, rec.hostId, input.ctx.workflowId, { signal, log: deps.log });
  try {
    // Held, and no collection runs: if the record is still there now, every collection from here on keeps its
    // blobs. If it is gone, one may have removed some already: a clean refusal rather than a fetch failing midway.
    if (!(await deps.store.head(recordKey(rec.id), { signal }))) {
      throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `backup ${rec.id} was deleted before its restore fetched its files`);
    }
    return await fetchAll(deps, input, rec, signal);
  } finally {
    await lease.release().catch((err: unknown) => deps.log.warn('could not release the read lease; it dies with its ttl', { error: (err as Error).message }));
  }
}

async function fetchAll(deps: RestoreDeps, { ctx, plan }: RestoreStepInput, rec: BackupRecord, signal: AbortSignal) {
  const { stagings } = restorePaths(deps.profile, ctx.workflowId);
  const owner = { uid: deps.profile.owner.uid, gid: deps.profile.owner.gid };
  const journals = await Promise.all(stagings.map(({ staging }) => Journal.open(staging)));
  try {
    const concurrency = (ctx as { concurrency?: number }).concurrency ?? DEFAULT_CONCURRENCY;
    const progress = { bytes: 0, files: 0, storedBytes: 0, totalBytes: plan.rawBytes, totalFiles: plan.fileCount };
    let lastReport = 0;
    const report = (force = false) => {
      const now = Date.now();
      if (!force && now - lastReport < 250) return;
      lastReport = now;
      deps.onProgress('unpacking', { ...progress });
    };
    const dirs = new Map<string, Promise<void>>();
    // One level at a time, each directory owned as it is made (a re-run finds them made).
    const ensureDir = (dir: string): Promise<void> => {
      let made = dirs.get(dir);
      if (!made) {
        made = mkdir(dir, { mode: 0o755 })
          .catch((err: NodeJS.ErrnoException) => {
            if (err.code !== 'EEXIST') throw err;
          })
          .then(() => lchown(dir, owner.uid, owner.gid));
        dirs.set(dir, made);
      }
      return made;
    };
    let fetched = 0;
    await inPool(rec.files, concurrency, signal, async (f, _i, sig) => {
      const problem = entryProblem(f.path);
      if (problem) throw new CbrError('CBR_ERR_ARCHIVE_HOSTILE_ENTRY', `refused file ${JSON.stringify(f.path.slice(0, 200))}: ${problem}`);
      const index = plan.placement[tableKey(f.path)] ?? 0;
      const root = stagings[index]!.staging;
      const journal = journals[index]!;
      const parts = f.path.split('/');
      for (let i = 1; i < parts.length; i++) await ensureDir(join(root, ...parts.slice(0, i)));
      const target = join(root, ...parts);
      if (!(await journal.has(f, target))) {
        if (deps.fileDelayMs) await sleep(deps.fileDelayMs, undefined, { signal: sig });
        await fetchOne(deps, rec, f, target, owner, sig, (raw, stored) => {
          progress.bytes += raw;
          progress.storedBytes += stored;
          report();
        });
        journal.add(f, target);
        fetched++;
      } else {
        progress.bytes += f.size;
      }
      progress.files++;
      report();
    });
    await Promise.all(journals.map((j) => j.finish()));
    report(true);
    deps.log.info('files fetched', { fetched, alreadyThere: rec.files.length - fetched });
    return { files: rec.files.length, bytes: progress.bytes };
  } finally {
    // A failed or aborted run still journals the files it finished (a kill leaves at most the last batch out).
    await Promise.all(journals.map((j) => j.finish().catch(() => {})));
    await Promise.all(journals.map((j) => j.close()));
  }
}

/** get -> decrypt -> decompress -> `<target>.cbr-part`, hashed on the way; renamed into place only when it is the recorded file. */
async function fetchOne(
  deps: RestoreDeps,
  rec: BackupRecord,
  f: RecordFile,
  target: string,
  owner: { uid: number; gid: number },
  signal: AbortSignal,
  onBytes: (raw: number, stored: number) => void,
): Promise<void> {
  const part = `${target}.cbr-part`;
  // A part file left by a killed run is never trusted, only replaced.
  await rm(part, { force: true });
  const name = f.blob!.slice(f.blob!.lastIndexOf('/') + 1);
  const stages: NodeJS.ReadWriteStream[] = [];
  stages.push(
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        onBytes(0, chunk.length);
        cb(null, chunk);
      },
    }),
  );
  if (rec.encryption) {
    if (!deps.key) throw new CbrError('CBR_ERR_KEY_REQUIRED', `backup ${rec.id} is encrypted; give --decrypt-key-file`);
    stages.push(new DecryptStream(deps.key, blobBinding(name)));
  }
  stages.push(...decompressor(rec.compression));
  const check = new Checked(f, onBytes);
  let source: Readable;
  try {
    source = await deps.store.get(f.blob!, { signal });
  } catch (err) {
    if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') {
      throw new CbrError('CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', `the blob of ${f.path} is missing from storage`);
    }
    throw err;
  }
  try {
    await pipeline([source, ...stages, check, createWriteStream(part, { flags: 'wx', mode: 0o644 })] as unknown as [Readable, NodeJS.WritableStream], {
      signal,
    });
  } catch (err) {
    await rm(part, { force: true });
    throw classify(err, f);
  }
  // Synced by the journal, in batches, before it lists the file (Journal.add).
  // Inside the caller's 0700 staging directory nobody else can swap the path between create and chown.
  await lchown(part, owner.uid, owner.gid);
  await rename(part, target);
}

/** Hashes and counts a file's bytes as they are written; fails the stream unless they are the recorded ones. */
class Checked extends Transform {
  readonly #hash = createHash('sha256');
  readonly #file: RecordFile;
  readonly #onBytes: (raw: number, stored: number) => void;
  #size = 0;
  constructor(file: RecordFile, onBytes: (raw: number, stored: number) => void) {
    super({ highWaterMark: 1 << 20 });
    this.#file = file;
    this.#onBytes = onBytes;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#size += chunk.length;
    if (this.#size > this.#file.size) {
      cb(corrupt(this.#file, `more than the recorded ${this.#file.size} bytes`));
      return;
    }
    this.#hash.update(chunk);
    this.#onBytes(chunk.length, 0);
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.#size !== this.#file.size) cb(corrupt(this.#file, `${this.#size} bytes, the record says ${this.#file.size}`));
    else if (this.#hash.digest('hex') !== this.#file.sha256) cb(corrupt(this.#file, 'its SHA-256 differs from the record'));
    else cb();
  }
}

function corrupt(f: RecordFile, why: string): CbrError {
  return new CbrError('CBR_ERR_ARCHIVE_CORRUPT', `restored file ${f.path}: ${why}`);
}

function classify(err: unknown, f: RecordFile): unknown {
  if (err instanceof CbrError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e.name === 'AbortError') return err;
  if (e.code === 'ENOSPC') return new CbrError('CBR_ERR_INSUFFICIENT_SPACE', 'no space left on the device while fetching');
  if (e.code === 'EEXIST') return new CbrError('CBR_ERR_ARCHIVE_HOSTILE_ENTRY', `${f.path} would overwrite an existing file`);
  return new CbrError('CBR_ERR_ARCHIVE_CORRUPT', `the blob of ${f.path} could not be read: ${e.message}`);
}

/**
 * The staging directory's record of files fetched and verified: append-only `<sha256> <path>` lines, written only
 * after the files they name are synced, so after a kill or a power cut it never lists a file that is not whole.
 */
class Journal {
  readonly #done: Set<string>;
  readonly #file: FileHandle;
  #tail: Promise<void> = Promise.resolve();
  #pending: { line: string; target: string }[] = [];
  #pendingBytes = 0;
  #failed: Error | undefined;

  private constructor(done: Set<string>, file: FileHandle) {
    this.#done = done;
    this.#file = file;
  }

  static async open(staging: string): Promise<Journal> {
    // Staging directories are the caller's (root's) and 0700 until the swap; a fresh one is made here, an existing
    // one (a re-run) is kept with what it holds.
    await mkdir(staging, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    const path = join(staging, JOURNAL);
    const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    // Only whole lines count: a kill mid-write leaves at most one partial last line.
    const done = new Set(text.split('\n').filter((l) => /^[0-9a-f]{64} \S/.test(l) && text.includes(`${l}\n`)));
    return new Journal(done, await open(path, 'a', 0o600));
  }

  /** Listed, and the file in place has its recorded size. */
  async has(f: RecordFile, target: string): Promise<boolean> {
    if (!this.#done.has(`${f.sha256} ${f.path}`)) return false;
    const st = await stat(target).catch(() => null);
    return st?.isFile() === true && st.size === f.size;
  }

  /**
   * Lists a file once its bytes are on disk: files are taken in batches (BATCH_BYTES or BATCH_FILES, whichever
   * comes first), each batch's files are synced, then their lines are appended and the journal synced, while the
   * next files are fetched. A failed sync fails the next add, or close.
   */
  add(f: RecordFile, target: string): void {
    if (this.#failed) throw this.#failed;
    this.#pending.push({ line: `${f.sha256} ${f.path}`, target });
    this.#pendingBytes += f.size;
    if (this.#pendingBytes >= BATCH_BYTES || this.#pending.length >= BATCH_FILES) this.#flush();
  }

  #flush(): void {
    const batch = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    if (batch.length === 0) return;
    this.#tail = this.#tail.then(async () => {
      if (this.#failed) return;
      try {
        // On disk before the journal says so: after a power cut, a file the journal lists is whole, not a hole of zeros.
        await Promise.all(batch.map(({ target }) => syncFile(target)));
        await this.#file.appendFile(batch.map(({ line }) => `${line}\n`).join(''));
        await this.#file.datasync();
        for (const { line } of batch) this.#done.add(line);
      } catch (err) {
        this.#failed = err as Error;
      }
    });
  }

  /** Journals what is pending; throws what a sync failed with. */
  async finish(): Promise<void> {
    this.#flush();
    await this.#tail;
    if (this.#failed) throw this.#failed;
  }

  async close(): Promise<void> {
    await this.#tail.catch(() => {});
    await this.#file.close();
  }
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.datasync();
  } finally {
    await fh.close();
  }
}
