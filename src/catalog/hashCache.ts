import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../core/atomicWrite.ts';

/**
 * The incremental backups' local cache of file hashes: the SHA-256 of a snapshot file, remembered by the identity
 * of the bytes on disk, `(device, inode, size, mtime in ns)`, so the next backup of an unchanged SSTable does not
 * read it again.
 *
 * Why the key is safe: a snapshot file is a hard link of a live SSTable, and SSTables are written once and never
 * modified in place (compaction writes new files; Cassandra rewrites a Statistics.db as a new file, a new inode),
 * so an inode that still has the same size and nanosecond mtime still holds the same bytes. ctime is not part of
 * the key: each new hard link (each snapshot) changes it. Files that are not SSTables (a snapshot's manifest.json
 * and schema.cql) are new files in every snapshot, so they never hit. What the key cannot see, a program writing
 * the same number of bytes into the file and then setting its mtime back, is what `CBR_REHASH=1` is for; and a
 * file whose cached hash was wrong is re-read before its blob is written (storeFiles hashes the bytes it uploads).
 *
 * One JSON file per host under `$CBR_HOME/hash-cache/`, replaced atomically. It holds the entries of the last
 * backup's files plus earlier ones whose live SSTable still exists unchanged, so it does not outgrow the node.
 */

export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
}

interface Entry {
  /** `dev:ino:size:mtimeNs`. */
  id: string;
  sha256: string;
  /** The live SSTable the snapshot file links to, to tell whether the entry can still be used. */
  live: string;
}

const VERSION = 1;

export function identityKey(st: FileIdentity): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
}

export class HashCache {
  readonly #path: string;
  readonly #old = new Map<string, Entry>();
  readonly #used = new Map<string, Entry>();
  #hits = 0;
  #misses = 0;

  private constructor(path: string) {
    this.#path = path;
  }

  /** The cache of one host; a missing or unreadable file is an empty cache (it only ever saves work). */
  static async open(home: string, hostId: string, opts: { trust?: boolean } = {}): Promise<HashCache> {
    const cache = new HashCache(join(home, 'hash-cache', `${hostId.replace(/[^A-Za-z0-9._-]/g, '_')}.json`));
    // Not trusted (CBR_REHASH=1): every file is read again, and the cache is rewritten from what was read.
    if (opts.trust === false) return cache;
    try {
      const doc = JSON.parse(await readFile(cache.#path, 'utf8')) as { version?: number; entries?: Entry[] };
      if (doc.version === VERSION && Array.isArray(doc.entries)) {
        for (const e of doc.entries) {
          if (typeof e?.id === 'string' && typeof e.live === 'string' && /^[0-9a-f]{64}$/.test(e.sha256)) cache.#old.set(e.id, e);
        }
      }
    } catch {
      /* absent or damaged: start empty */
    }
    return cache;
  }

  get path(): string {
    return this.#path;
  }

  get stats(): { hits: number; misses: number } {
    return { hits: this.#hits, misses: this.#misses };
  }

  /**
   * The remembered SHA-256 of the file with this identity, if any, and only when it was remembered for the same live
   * SSTable path (an inode reused by another file within one mtime tick is not taken for it).
   */
  get(st: FileIdentity, live: string): string | undefined {
    const id = identityKey(st);
    const e = this.#used.get(id) ?? this.#old.get(id);
    if (e && e.live === live) {
      this.#hits++;
      this.#used.set(id, e);
      return e.sha256;
    }
    this.#misses++;
    return undefined;
  }

  /** Remembers a hash just computed from the file's bytes. */
  set(st: FileIdentity, sha256: string, live: string): void {
    const id = identityKey(st);
    this.#used.set(id, { id, sha256, live });
  }

  /** Forgets an entry found wrong. */
  drop(st: FileIdentity): void {
    const id = identityKey(st);
    this.#used.delete(id);
    this.#old.delete(id);
  }

  /**
   * Writes the entries this run used or made, and the earlier ones whose live file still has the identity they
   * were remembered under (the others' files were compacted away, or belong to tables this run did not see).
   */
  async save(): Promise<void> {
    const keep = [...this.#used.values()];
    for (const [id, e] of this.#old) {
      if (this.#used.has(id)) continue;
      const st = await stat(e.live, { bigint: true }).catch(() => null);
      if (st && identityKey({ dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs }) === id) keep.push(e);
    }
    await mkdir(join(this.#path, '..'), { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.#path, JSON.stringify({ version: VERSION, entries: keep }), 0o600);
  }
}

/** A snapshot file's live SSTable: `<table>/snapshots/<tag>/<rel>` -> `<table>/<rel>`. */
export function livePathOf(snapshotPath: string, tag: string): string {
  const marker = `/snapshots/${tag}/`;
  const at = snapshotPath.lastIndexOf(marker);
  return at < 0 ? snapshotPath : `${snapshotPath.slice(0, at)}/${snapshotPath.slice(at + marker.length)}`;
}
