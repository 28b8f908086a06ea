import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { lchown, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DecryptStream } from '../../archive/crypto.ts';
import { entryProblem, tableKey } from '../../archive/entries.ts';
import { decompressor } from '../../archive/format.ts';
import { blobBinding, type ContentCheck, contentCheck, sameContent } from '../../catalog/blobs.ts';
import { type BackupRecord, type RecordFile, recordKey } from '../../catalog/catalog.ts';
import { holdReadLease } from '../../catalog/leases.ts';
import { CbrError } from '../../core/errors.ts';
import { inPool } from '../../core/pool.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import { FetchJournal, holds } from './fetchJournal.ts';
import { FetchWorkers } from './fetchWorkers.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

export { JOURNAL } from './fetchJournal.ts';

const DEFAULT_CONCURRENCY = 4;
/**
 * A durable mark is taken (in the background, one at a time, the fetch going on) each time this many bytes were
 * listed since the last one: after a power cut a re-run reads back at most about this much plus what was in flight.
 * (A mark only syncs directories: every listed file was synced before it was listed.)
 */
const MARK_BYTES = 1 << 30;

/**
 * The restore's unpack step for an incremental backup: every file of the record is fetched from its blob,
 * decrypted, decompressed and written beside its place as `<file>.cbr-part` while it is hashed; only a file of
 * the recorded size and SHA-256 is synced to disk (fsync, its writeback overlapping the next files' work), renamed
 * into place and listed in the staging directory's journal (see FetchJournal: lines unsynced, a durable mark now
 * and then). Before the step ends every directory it created or renamed into is synced and every journal marked
 * durable, so the swap only ever moves files that are verified and on disk. No syncfs: what else is dirty on the
 * filesystem (a backup just written, another program's files) is not flushed on the restore's time.
 * Re-run after a kill, files the journal lists are not fetched again (those after its last mark once read back
 * and found whole). The swap removes the journal.
 *
 * While it fetches it holds a read lease on the host's blobs (src/catalog/leases.ts), under the restore's workflow
 * id: a delete or prune of this backup meanwhile removes its record, but no collection removes a blob until the
 * lease is released here (or, the restore killed, dies with its ttl). A re-run holds it again.
 */
/**
 * Where fetched files go: staging roots (one per data directory) and which root takes each `<ks>/<table>-<id>`.
 * Default: the restore's own staging directories and the check step's placement; a cluster backup's other parts
 * go each into a root of their own (fetchParts).
 */
export interface FetchTarget {
  roots: string[];
  placement: Record<string, number>;
  totals: { rawBytes: number; fileCount: number };
  /** The progress step name. */
  step: string;
}

export async function fetchFiles(deps: RestoreDeps, input: RestoreStepInput, rec: BackupRecord, signal: AbortSignal, target?: FetchTarget) {
  const lease = await holdReadLease(deps.store, rec.hostId, input.ctx.workflowId, { signal, log: deps.log });
  try {
    // Held, and no collection runs: if the record is still there now, every collection from here on keeps its
    // blobs. If it is gone, one may have removed some already: a clean refusal rather than a fetch failing midway.
    if (!(await deps.store.head(recordKey(rec.id), { signal }))) {
      throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `backup ${rec.id} was deleted before its restore fetched its files`);
    }
    const into = target ?? {
      roots: restorePaths(deps.profile, input.ctx.workflowId).stagings.map((s) => s.staging),
      placement: input.plan.placement,
      totals: { rawBytes: input.plan.rawBytes, fileCount: input.plan.fileCount },
      step: 'unpacking',
    };
    return await fetchAll(deps, input, rec, signal, into);
  } finally {
    await lease.release().catch((err: unknown) => deps.log.warn('could not release the read lease; it dies with its ttl', { error: (err as Error).message }));
  }
}

async function fetchAll(deps: RestoreDeps, { ctx }: RestoreStepInput, rec: BackupRecord, signal: AbortSignal, into: FetchTarget) {
  const stagings = into.roots.map((staging) => ({ staging }));
  const owner = { uid: deps.profile.owner.uid, gid: deps.profile.owner.gid };
  const journals: FetchJournal[] = [];
  let settleMarks: (() => Promise<void>) | undefined;
  let workers = null as FetchWorkers | null;
  try {
    for (const { staging } of stagings) journals.push(await FetchJournal.open(staging));
    const t0 = performance.now();
    const concurrency = (ctx as { concurrency?: number }).concurrency ?? DEFAULT_CONCURRENCY;
    // The CPU work of each file (decrypt, decompress, SHA-256, write) runs on worker threads, one per core at most,
    // started with the first file to fetch; gzip blobs (a stream of members that cannot be cut apart without
    // inflating them) keep the stream pipeline on this thread.
    const pool = () => {
      if (rec.compression === 'gzip') return null;
      workers ??= new FetchWorkers(Math.min(concurrency, availableParallelism()), deps.key);
      return workers;
    };
    const progress = { bytes: 0, files: 0, storedBytes: 0, totalBytes: into.totals.rawBytes, totalFiles: into.totals.fileCount };
    let lastReport = 0;
    const report = (force = false) => {
      const now = Date.now();
      if (!force && now - lastReport < 250) return;
      lastReport = now;
      deps.onProgress(into.step, { ...progress });
    };
    const dirs = new Map<string, Promise<void>>();
    // Directories whose entries changed (made in them, renamed into): a mark syncs them all.
    const touched = new Set<string>();
    for (const { staging } of stagings) {
      touched.add(staging);
      touched.add(dirname(staging));
    }
    // One level at a time, each directory owned as it is made (a re-run finds them made).
    const ensureDir = (dir: string): Promise<void> => {
      let made = dirs.get(dir);
      if (!made) {
        made = mkdir(dir, { mode: 0o755 })
          .catch((err: NodeJS.ErrnoException) => {
            if (err.code !== 'EEXIST') throw err;
          })
          .then(() => lchown(dir, owner.uid, owner.gid))
          .then(() => {
            // Only once it exists: a mark taken meanwhile would fail to open it (files go in only after this).
            touched.add(dir);
            touched.add(dirname(dir));
          });
        dirs.set(dir, made);
      }
      return made;
    };
    const marks = new Marks(journals, touched);
    settleMarks = () => marks.settled();
    let fetched = 0;
    let readBack = 0;
    await inPool(rec.files, concurrency, signal, async (f, _i, sig) => {
      const problem = entryProblem(f.path);
      if (problem) throw new CbrError('CBR_ERR_ARCHIVE_HOSTILE_ENTRY', `refused file ${JSON.stringify(f.path.slice(0, 200))}: ${problem}`);
      const index = into.placement[tableKey(f.path)] ?? 0;
      const root = stagings[index]!.staging;
      const journal = journals[index]!;
      const parts = f.path.split('/');
      for (let i = 1; i < parts.length; i++) await ensureDir(join(root, ...parts.slice(0, i)));
      const target = join(root, ...parts);
      const listed = journal.listed(f);
      let there = false;
      if (listed === 'durable') {
        const st = await stat(target).catch(() => null);
        there = st?.isFile() === true && st.size === f.size;
      } else if (listed === 'unsynced') {
        there = await holds(target, f, contentCheck(rec, f, deps.key));
        readBack++;
        // Read back and whole: synced (a run before this one may not have), listed again, so a mark taken from here
        // on covers it (open() kept only marked lines).
        if (there) {
          await syncFile(target);
          touched.add(dirname(target));
          journal.add(f);
          marks.listed(f.size);
        }
      }
      if (!there) {
        if (deps.fileDelayMs) await sleep(deps.fileDelayMs, undefined, { signal: sig });
        await fetchOne(deps, rec, f, target, owner, pool(), sig, (raw, stored) => {
          progress.bytes += raw;
          progress.storedBytes += stored;
          report();
        });
        touched.add(dirname(target));
        journal.add(f);
        marks.listed(f.size);
        fetched++;
      } else {
        progress.bytes += f.size;
      }
      progress.files++;
      report();
    });
    const fetchSeconds = (performance.now() - t0) / 1000;
    // Nothing reaches the node unsynced: every file was synced as it was fetched; the directories are now, and each
    // journal is marked whole.
    const t1 = performance.now();
    await marks.final(signal);
    const syncSeconds = (performance.now() - t1) / 1000;
    report(true);
    deps.log.info('files fetched', { fetched, alreadyThere: rec.files.length - fetched, readBack, fetchSeconds, syncSeconds });
    return { files: rec.files.length, bytes: progress.bytes, fetchSeconds, syncSeconds };
  } finally {
    // A background mark still flushing writes into its journals when done: they close after it (failed or aborted).
    await settleMarks?.();
    await workers?.close();
    for (const j of journals) j.close();
  }
}

/**
 * Durable marks for a set of journals: in the background every MARK_BYTES (never two at once, a failure is
 * thrown by the final one), and a final one over everything listed.
 */
class Marks {
  readonly #journals: FetchJournal[];
  readonly #dirs: Set<string>;
  #since = 0;
  #running: Promise<void> | null = null;
  #failed: { error: unknown } | null = null;

  constructor(journals: FetchJournal[], dirs: Set<string>) {
    this.#journals = journals;
    this.#dirs = dirs;
  }

  listed(bytes: number): void {
    this.#since += bytes;
    if (this.#since < MARK_BYTES || this.#running) return;
    this.#since = 0;
    this.#running = this.#take().then(
      () => {
        this.#running = null;
      },
      (error: unknown) => {
        this.#failed ??= { error };
        this.#running = null;
      },
    );
  }

  /** Waits for a background mark in flight, whatever its outcome. */
  async settled(): Promise<void> {
    await this.#running;
  }

  async final(signal: AbortSignal): Promise<void> {
    await this.#running;
    if (this.#failed) throw this.#failed.error;
    await this.#take(signal);
  }

  /**
   * Syncs the directories, then marks in each journal the lines listed before: each listed file was synced before
   * it was listed, its directory entry (and the directories above it) are now.
   */
  async #take(signal?: AbortSignal): Promise<void> {
    const counts = this.#journals.map((j) => j.count);
    if (this.#journals.every((j, i) => j.marked >= counts[i]!)) return;
    await inPool([...this.#dirs], 4, signal ?? new AbortController().signal, (dir) => syncFile(dir));
    signal?.throwIfAborted();
    await Promise.all(this.#journals.map((j, i) => j.mark(counts[i]!)));
  }
}

/** fsync of a file or a directory. */
async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** get -> decrypt -> decompress -> `<target>.cbr-part`, hashed on the way; renamed into place only when it is the recorded file. */
async function fetchOne(
  deps: RestoreDeps,
  rec: BackupRecord,
  f: RecordFile,
  target: string,
  owner: { uid: number; gid: number },
  workers: FetchWorkers | null,
  signal: AbortSignal,
  onBytes: (raw: number, stored: number) => void,
): Promise<void> {
  const part = `${target}.cbr-part`;
  // A part file left by a killed run is never trusted, only replaced.
  await rm(part, { force: true });
  const name = f.blob!.slice(f.blob!.lastIndexOf('/') + 1);
  if (rec.encryption && !deps.key) throw new CbrError('CBR_ERR_KEY_REQUIRED', `backup ${rec.id} is encrypted; give --decrypt-key-file`);
  if (workers && rec.compression !== 'gzip') {
    const source = await getBlob(deps, f, signal);
    try {
      const job = {
        path: f.path,
        part,
        size: f.size,
        check: contentCheck(rec, f, deps.key),
        compression: rec.compression,
        encrypted: !!rec.encryption,
        binding: rec.encryption ? blobBinding(name) : null,
        owner,
      };
      await workers.run(job, source, signal, onBytes);
    } catch (err) {
      source.destroy();
      await rm(part, { force: true });
      throw classify(err, f);
    }
    // Owned and synced by the worker.
    await rename(part, target);
    return;
  }
  const stages: NodeJS.ReadWriteStream[] = [];
  stages.push(
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        onBytes(0, chunk.length);
        cb(null, chunk);
      },
    }),
  );
  if (rec.encryption) stages.push(new DecryptStream(deps.key!, blobBinding(name)));
  stages.push(...decompressor(rec.compression));
  const check = new Checked(f, contentCheck(rec, f, deps.key), onBytes);
  const source = await getBlob(deps, f, signal);
  try {
    await pipeline(
      [source, ...stages, check, createWriteStream(part, { flags: 'wx', mode: 0o644, highWaterMark: 4 << 20 })] as unknown as [Readable, NodeJS.WritableStream],
      {
        signal,
      },
    );
  } catch (err) {
    await rm(part, { force: true });
    throw classify(err, f);
  }
  await placePart(part, target, owner);
}

async function getBlob(deps: RestoreDeps, f: RecordFile, signal: AbortSignal): Promise<Readable> {
  try {
    return await deps.store.get(f.blob!, { signal });
  } catch (err) {
    if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') {
      throw new CbrError('CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', `the blob of ${f.path} is missing from storage`);
    }
    throw err;
  }
}

/** A checked part file takes its place, owned and synced first (its directory entry: by the next mark). */
async function placePart(part: string, target: string, owner: { uid: number; gid: number }): Promise<void> {
  // Inside the caller's 0700 staging directory nobody else can swap the path between create and chown.
  await lchown(part, owner.uid, owner.gid);
  await syncFile(part);
  await rename(part, target);
}

/** Hashes and counts a file's bytes as they are written; fails the stream unless they are the recorded ones. */
class Checked extends Transform {
  readonly #hash = createHash('sha256');
  readonly #file: RecordFile;
  readonly #check: ContentCheck;
  readonly #onBytes: (raw: number, stored: number) => void;
  #size = 0;
  constructor(file: RecordFile, check: ContentCheck, onBytes: (raw: number, stored: number) => void) {
    super({ highWaterMark: 1 << 20 });
    this.#file = file;
    this.#check = check;
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
    else if (!sameContent(this.#check, this.#hash.digest('hex'))) cb(corrupt(this.#file, 'its SHA-256 differs from the record'));
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
