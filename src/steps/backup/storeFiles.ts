import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { EncryptStream } from '../../archive/crypto.ts';
import { checkPackEntries } from '../../archive/entries.ts';
import { BLOCK, compressor, ZstdFramers } from '../../archive/format.ts';
import { Throttle } from '../../archive/throttle.ts';
import { listSnapshotFiles, type SnapshotFile } from '../../cassandra/layout.ts';
import { blobBinding, blobKey, blobName, blobPrefix, dedupKey, fileNameOf, tableIdOf } from '../../catalog/blobs.ts';
import { readRecord } from '../../catalog/catalog.ts';
import { type FileIdentity, HashCache, livePathOf } from '../../catalog/hashCache.ts';
import { holdBackupLease } from '../../catalog/leases.ts';
import { filesDigest } from '../../catalog/record.ts';
import { BufferPool } from '../../core/bufferPool.ts';
import { CbrError } from '../../core/errors.ts';
import { bufferReleaser } from '../../core/memory.ts';
import { inPool } from '../../core/pool.ts';
import type { BackupResult, ManifestFile, StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';

export const DEFAULT_CONCURRENCY = 4;
/** The buffer of each stage of an upload's pipeline: about one chunk per stage and file in flight. */
const STAGE_HWM = 256 << 10;
/**
 * An upload reads its file in chunks of this size (the compressor gathers them into 1 MiB blocks): the buffers
 * that wait between the stages of `concurrency` uploads are a quarter of what 1 MiB chunks made them.
 */
const UPLOAD_CHUNK = 256 << 10;

/**
 * The incremental backup's streaming step: every snapshot file is hashed, named by its identity (blobs.ts) and
 * stored as its own blob unless a blob of that name is already there, `concurrency` files at a time, each one a
 * stream (read -> compress -> encrypt -> store), so memory does not grow with file sizes.
 *
 * Re-run after a kill it does the same: heads find what the killed run stored, so only the rest is uploaded. The
 * backup's lease (leases.ts) keeps garbage collection away from blobs no record references yet; it stays in place
 * until writeRecord has written the record that references them.
 */
export async function storeFiles(deps: BackupDeps, { ctx }: StepInput, signal: AbortSignal): Promise<BackupResult> {
  // Where the step's time goes, logged at debug level (CBR_LOG_LEVEL=debug): wall ms per phase, summed ms per kind of call.
  let mark = performance.now();
  const timing: Record<string, number> = {};
  const phase = (name: string) => {
    const now = performance.now();
    timing[name] = Math.round(now - mark);
    mark = now;
  };
  const spent: Record<string, number> = { hashMs: 0, hashed: 0, headMs: 0, heads: 0, uploadMs: 0, uploads: 0 };
  const files = await listSnapshotFiles(deps.profile.dataDirs, ctx.backupId);
  phase('listMs');
  if (files.length === 0) throw new CbrError('CBR_ERR_SNAPSHOT_FAILED', `snapshot ${ctx.backupId} has no files`);
  checkPackEntries(files.map((f) => f.archivePath));
  const hostId = deps.profile.hostId;
  const concurrency = ctx.concurrency ?? DEFAULT_CONCURRENCY;
  const dedup = deps.key ? dedupKey(deps.key) : null;
  // Blobs modified before the second this backup started were stored by earlier backups: shared. Stores report
  // whole seconds (HTTP dates), so the comparison is made in whole seconds too.
  const startedSecond = Math.floor(Date.parse(ctx.startedAt) / 1000) * 1000;
  // A blob modified since may be either: an earlier backup's that ended around then (a fast backup right after
  // another; Swift also rounds Last-Modified up to the next second), or one a killed run of this backup stored.
  // The parent's record (read once, only then) tells: a blob it names was there before this backup.
  let parentBlobs: Promise<Set<string>> | null = null;
  const isShared = async (key: string, modified: string): Promise<boolean> => {
    if (Date.parse(modified) < startedSecond) return true;
    if (!ctx.parent) return false;
    parentBlobs ??= readRecord(deps.store, ctx.parent, signal).then(
      (r) => new Set(r.files.flatMap((f) => (f.blob ? [f.blob] : []))),
      () => new Set<string>(),
    );
    return (await parentBlobs).has(key);
  };
  const progress = {
    bytes: 0,
    files: 0,
    totalBytes: files.reduce((s, f) => s + f.size, 0),
    totalFiles: files.length,
    storedBytes: 0,
  };
  let lastReport = 0;
  const release = bufferReleaser();
  const report = (force = false) => {
    const now = Date.now();
    if (!force && now - lastReport < 250) return;
    lastReport = now;
    deps.onProgress('streaming', { ...progress });
  };

  const upload = async (f: SnapshotFile, sha256: string, name: string, key: string, sig: AbortSignal): Promise<number> => {
    let stored = 0;
    // Small buffers between the stages: `concurrency` files are in flight, each holding about one chunk per stage.
    const meter = new Transform({
      highWaterMark: STAGE_HWM,
      transform(chunk: Buffer, _enc, cb) {
        stored += chunk.length;
        progress.storedBytes += chunk.length;
        release(chunk.length);
        report();
        cb(null, chunk);
      },
    });
    const out = new PassThrough({ highWaterMark: STAGE_HWM });
    const stages: NodeJS.ReadWriteStream[] = [new SameContent(f, sha256), compressor(ctx.compression, undefined, framers ?? undefined, pool ?? undefined)];
    if (deps.key) stages.push(new EncryptStream(deps.key, undefined, blobBinding(name)));
    if (ctx.rateLimit) stages.push(new Throttle(Math.max(1024, Math.floor(ctx.rateLimit / concurrency))));
    // Read into the pool's buffers, which the compressor gives back; uncompressed, the chunks flow on to the store.
    const source = pool ? Readable.from(fileChunks(f.path, pool, sig), { objectMode: false }) : createReadStream(f.path, { highWaterMark: 1 << 20 });
    const piped = pipeline([source, ...stages, meter, out] as unknown as [Readable, NodeJS.WritableStream], { signal: sig });
    const put = deps.store.put(key, out, { signal: sig, ifAbsent: true });
    // A put that gives up without reading its body must not leave the pipeline waiting for a reader.
    put.catch((err: unknown) => out.destroy(err as Error));
    const [reading, storing] = await Promise.allSettled([piped, put]);
    // One failure tears down both ends: report the side that caused it.
    if (reading.status === 'rejected') {
      const cause = reading.reason as NodeJS.ErrnoException;
      if (cause instanceof CbrError || cause.syscall || storing.status === 'fulfilled') throw readError(cause, f);
    }
    if (storing.status === 'rejected') throw storing.reason;
    return stored;
  };

  // SHA-256s of unchanged SSTables remembered from earlier backups (src/catalog/hashCache.ts): a hit skips reading
  // the file. A blob that the store already has is still trusted by its name and size alone, as without the cache.
  const cache = deps.hashCache ? await HashCache.open(deps.hashCache.home, hostId, { trust: deps.hashCache.trust }) : null;
  phase('cacheOpenMs');
  const hashOf = async (f: SnapshotFile, sig: AbortSignal): Promise<{ sha256: string; id: FileIdentity | null; cached: boolean }> => {
    let id: FileIdentity | null = null;
    if (cache) {
      const st = await stat(f.path, { bigint: true }).catch((err: unknown) => {
        throw readError(Object.assign(err as Error, { syscall: 'open' }), f);
      });
      id = { dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs };
      const known = Number(st.size) === f.size ? cache.get(id, livePathOf(f.path, ctx.backupId)) : undefined;
      if (known) {
        progress.bytes += f.size;
        report();
        return { sha256: known, id, cached: true };
      }
    }
    const t0 = performance.now();
    const sha256 = await hashFile(f, hashPool, sig, (n) => {
      progress.bytes += n;
      report();
    });
    spent['hashMs']! += performance.now() - t0;
    spent['hashed']!++;
    if (cache && id) cache.set(id, sha256, livePathOf(f.path, ctx.backupId));
    return { sha256, id, cached: false };
  };

  const storeOne = async (f: SnapshotFile, sig: AbortSignal): Promise<ManifestFile & { found: boolean }> => {
    if (deps.fileDelayMs) await sleep(deps.fileDelayMs, undefined, { signal: sig });
    const hashed = await hashOf(f, sig);
    try {
      return await storeHashed(f, hashed.sha256, sig);
    } catch (err) {
      // The upload hashes the bytes it sends: a remembered hash they do not match is forgotten, the file read again.
      if (!(hashed.cached && hashed.id && err instanceof CbrError && err.code === 'CBR_ERR_SNAPSHOT_FAILED')) throw err;
      deps.log.warn('a remembered file hash was wrong; hashing the file again', { path: f.archivePath });
      cache!.drop(hashed.id);
      const again = await hashOf(f, sig);
      return storeHashed(f, again.sha256, sig);
    }
  };

  const storeHashed = async (f: SnapshotFile, sha256: string, sig: AbortSignal): Promise<ManifestFile & { found: boolean }> => {
    const name = blobName(
      { hostId, tableId: tableIdOf(f.archivePath), fileName: fileNameOf(f.archivePath), size: f.size, sha256, compression: ctx.compression },
      dedup,
    );
    const key = blobKey(hostId, name);
    // Encrypted, the record keeps no plain SHA-256 (it would confirm a guessed file): the keyed name stands for it.
    const entry = { path: f.archivePath, size: f.size, ...(dedup ? {} : { sha256 }), blob: key };
    let t0 = performance.now();
    const there = await deps.store.head(key, { signal: sig });
    spent['headMs']! += performance.now() - t0;
    spent['heads']!++;
    if (there) return { ...entry, stored: there.size, shared: await isShared(key, there.modified), found: true };
    try {
      t0 = performance.now();
      const stored = await upload(f, sha256, name, key, sig);
      spent['uploadMs']! += performance.now() - t0;
      spent['uploads']!++;
      return { ...entry, stored, shared: false, found: false };
    } catch (err) {
      if (!(err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_EXISTS')) throw err;
      // Stored meanwhile by another backup of this host: the same bytes under the same name.
      const now = await deps.store.head(key, { signal: sig });
      if (!now) throw err;
      return { ...entry, stored: now.size, shared: false, found: true };
    }
  };

  const lease = await holdBackupLease(deps.store, hostId, ctx.backupId, { signal, log: deps.log });
  phase('leaseMs');
  // One set of zstd contexts for every file of this backup (not two per file).
  const framers = ctx.compression === 'zstd' ? new ZstdFramers() : null;
  // Read buffers, used again instead of a new buffer per chunk (see bufferPool.ts): the uploads' come back from
  // the compressor, the hashes' as soon as hashed. Each upload in flight holds about twelve (read ahead, stage
  // buffers, a block being gathered and one being compressed), each hash two.
  const pool = ctx.compression === 'none' ? null : new BufferPool(UPLOAD_CHUNK, concurrency * 12);
  const hashPool = new BufferPool(BLOCK, concurrency * 2);
  try {
    const stored: (ManifestFile & { found: boolean })[] = new Array(files.length);
    await inPool(files, concurrency, signal, async (f, i, sig) => {
      stored[i] = await storeOne(f, sig);
      progress.files++;
      report();
    });
    phase('storeMs');
    // A collection that began before the lease was written may have removed a blob after its head found it: look
    // again now that the lease holds, and store any that vanished.
    const found = stored.map((e, i) => (e.found ? i : -1)).filter((i) => i >= 0);
    let restored = 0;
    await inPool(found, concurrency * 2, signal, async (i, _n, sig) => {
      const e = stored[i]!;
      if (await deps.store.head(e.blob, { signal: sig })) return;
      const again = await storeOne(files[i]!, sig);
      stored[i] = { ...again, shared: false };
      restored++;
    });
    phase('recheckMs');
    if (restored > 0) deps.log.warn('blobs vanished while the backup ran and were stored again', { count: restored });
    if (cache) {
      // Only once every file is stored: a cache never remembers hashes a failed run did not finish with.
      await cache.save().catch((err: unknown) => deps.log.warn('cannot save the file hash cache', { error: (err as Error).message }));
      deps.log.info('file hash cache', { ...cache.stats });
    }
    phase('cacheSaveMs');
    deps.log.debug('storeFiles timing', { ...timing, ...Object.fromEntries(Object.entries(spent).map(([k, v]) => [k, Math.round(v)])) });
    report(true);
    const manifest: ManifestFile[] = stored.map(({ found: _, ...e }) => e);
    const fresh = manifest.filter((e) => !e.shared);
    const result: BackupResult = {
      objectKey: blobPrefix(hostId),
      size: manifest.reduce((s, e) => s + e.stored, 0),
      sha256: filesDigest(manifest as unknown as Record<string, unknown>[]),
      rawBytes: progress.totalBytes,
      files: manifest.length,
      strategy: 'incremental',
      newBytes: fresh.reduce((s, e) => s + e.size, 0),
      sharedBytes: manifest.reduce((s, e) => s + (e.shared ? e.size : 0), 0),
      newStoredBytes: fresh.reduce((s, e) => s + e.stored, 0),
      newFiles: fresh.length,
      sharedFiles: manifest.length - fresh.length,
      manifest,
    };
    // When the last good write of the lease began, stamped with this process (writeRecord in another process, a
    // resumed backup, looks at every blob again), and only if every write landed within half a ttl of the one
    // before and that one is recent.
    const stamp = lease.stamp();
    if (stamp) result.leaseWrittenAt = stamp;
    const { manifest: _m, ...summary } = result;
    deps.log.info('files stored', summary);
    return result;
  } finally {
    lease.stop();
    framers?.close();
  }
}

/** SHA-256 of a snapshot file, read into `pool`'s buffers; its size must still be the listed one (snapshot files never change). */
async function hashFile(f: SnapshotFile, pool: BufferPool, signal: AbortSignal, onBytes: (n: number) => void): Promise<string> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of fileChunks(f.path, pool, signal)) {
      hash.update(chunk);
      size += chunk.length;
      onBytes(chunk.length);
      // Hashed: nothing refers to these bytes any more.
      pool.give([chunk]);
    }
  } catch (err) {
    throw readError(err, f);
  }
  if (size !== f.size) throw new CbrError('CBR_ERR_SNAPSHOT_FAILED', `snapshot file ${f.archivePath} changed size while it was read`);
  return hash.digest('hex');
}

/**
 * A file's bytes to its end, in chunks read into `pool`'s buffers (the caller gives each back once done with it),
 * with one read ahead so the disk works while the previous chunk is hashed or compressed.
 */
export async function* fileChunks(path: string, pool: BufferPool, signal: AbortSignal): AsyncGenerator<Buffer> {
  signal.throwIfAborted();
  const fh = await open(path, 'r');
  let ahead: Promise<Buffer> | null = null;
  const readAt = (pos: number) => {
    const buf = pool.take();
    return fh.read(buf, 0, buf.length, pos).then(({ bytesRead }) => buf.subarray(0, bytesRead));
  };
  try {
    let pos = 0;
    ahead = readAt(0);
    for (;;) {
      const chunk = await ahead;
      ahead = null;
      if (chunk.length === 0) {
        pool.give([chunk]);
        return;
      }
      pos += chunk.length;
      signal.throwIfAborted();
      ahead = readAt(pos);
      yield chunk;
    }
  } finally {
    // Never close the file under a read in flight (an abort, or a consumer that stopped early).
    await ahead?.catch(() => {});
    await fh.close();
  }
}

/**
 * Passes a file's bytes on while hashing them again, and fails the stream (so the put leaves no object) when
 * they are not the bytes the blob is named after.
 */
class SameContent extends Transform {
  readonly #hash = createHash('sha256');
  readonly file: SnapshotFile;
  readonly sha256: string;
  #size = 0;
  constructor(file: SnapshotFile, sha256: string) {
    super({ highWaterMark: STAGE_HWM });
    this.file = file;
    this.sha256 = sha256;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.#size += chunk.length;
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.#size !== this.file.size || this.#hash.digest('hex') !== this.sha256) {
      cb(new CbrError('CBR_ERR_SNAPSHOT_FAILED', `snapshot file ${this.file.archivePath} changed while it was stored`));
    } else cb();
  }
}

function readError(err: unknown, f: SnapshotFile): unknown {
  const e = err as NodeJS.ErrnoException;
  if (err instanceof CbrError || e.name === 'AbortError') return err;
  if (e.syscall === 'open' || e.syscall === 'read') return new CbrError('CBR_ERR_SNAPSHOT_FAILED', `cannot read snapshot file ${f.archivePath}: ${e.message}`);
  return err;
}
