import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { CbrError } from '../core/errors.ts';
import { DecryptStream } from './crypto.ts';
import { type Compression, decompressor } from './format.ts';

export interface ScanOptions {
  compression: Compression;
  key?: Buffer | undefined;
  binding?: Buffer | undefined;
  /** The entries and sizes the record lists. */
  expected: ReadonlyMap<string, number>;
  signal?: AbortSignal;
  onBytes?: (stored: number, raw: number) => void;
}

/** What reading a whole archive found: the stored object's digest and size, and every entry that is not as recorded. */
export interface ScanResult {
  sha256: string;
  storedBytes: number;
  rawBytes: number;
  entries: number;
  /** Entries the record does not list, entries of another size, entries listed but absent. */
  entryProblems: { path: string; problem: 'unexpected' | 'size' | 'absent'; expected?: number; found?: number }[];
  /** Why the stream could not be read to its end (authentication, decompression, tar), or null. */
  streamError: CbrError | null;
}

/**
 * Reads a stored archive to its end without writing anything: decrypts it (each chunk authenticated), decompresses
 * it (zstd frames carry their content checksum), parses the tar and compares every entry with the record. The
 * SHA-256 of the stored bytes is computed on the way in; the caller compares it with the record's.
 */
export async function scanArchive(source: Readable, opts: ScanOptions): Promise<ScanResult> {
  const hash = createHash('sha256');
  let storedBytes = 0;
  let rawBytes = 0;
  const meter = new PassThrough({ highWaterMark: 1 << 20 });
  meter.on('data', (c: Buffer) => {
    hash.update(c);
    storedBytes += c.length;
    opts.onBytes?.(c.length, 0);
  });
  const stages: NodeJS.ReadWriteStream[] = [];
  if (opts.key) stages.push(new DecryptStream(opts.key, opts.binding));
  stages.push(...decompressor(opts.compression));
  const extract = tar.extract();
  const seen = new Set<string>();
  const entryProblems: ScanResult['entryProblems'] = [];
  let entries = 0;
  const consume = (async () => {
    for await (const entry of extract) {
      opts.signal?.throwIfAborted();
      const name = entry.header.name;
      const want = opts.expected.get(name);
      let size = 0;
      for await (const c of entry) {
        size += (c as Buffer).length;
        rawBytes += (c as Buffer).length;
        opts.onBytes?.(0, (c as Buffer).length);
      }
      entries++;
      if (want === undefined || seen.has(name)) entryProblems.push({ path: name, problem: 'unexpected', found: size });
      else if (want !== size) entryProblems.push({ path: name, problem: 'size', expected: want, found: size });
      seen.add(name);
    }
  })();
  const piped = pipeline([source, meter, ...stages, extract] as unknown as [Readable, NodeJS.WritableStream], opts.signal ? { signal: opts.signal } : {});
  let streamError: CbrError | null = null;
  const [p, c] = await Promise.allSettled([piped, consume]);
  const failure = p.status === 'rejected' ? p.reason : c.status === 'rejected' ? c.reason : null;
  if (failure) {
    source.destroy();
    extract.destroy();
    const e = failure as NodeJS.ErrnoException;
    if (e.name === 'AbortError' || (failure instanceof CbrError && failure.code === 'CBR_ERR_ABORTED')) throw new CbrError('CBR_ERR_ABORTED', 'verify aborted');
    if (failure instanceof CbrError && failure.code === 'CBR_ERR_STORAGE_FAILED') throw failure;
    streamError = failure instanceof CbrError ? failure : new CbrError('CBR_ERR_ARCHIVE_CORRUPT', `the archive could not be read: ${e.message}`);
  } else {
    for (const [path, size] of opts.expected) if (!seen.has(path)) entryProblems.push({ path, problem: 'absent', expected: size });
  }
  return { sha256: hash.digest('hex'), storedBytes, rawBytes, entries, entryProblems, streamError };
}
