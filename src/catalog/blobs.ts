import { createHash, createHmac, hkdfSync } from 'node:crypto';
import { CbrError } from '../core/errors.ts';

/**
 * Where an incremental backup's file bytes live: one object per distinct snapshot file, shared by every backup of
 * the same host that holds that file. The name is derived from what makes two files the same file (host, table
 * id, path below the table directory, size, SHA-256 of the content, compression), never from the name alone:
 * generation numbers repeat across nodes and after a truncate, and Statistics.db is rewritten in place.
 *
 * With encryption the name is an HMAC under a key derived from the archive key, so the store learns nothing of
 * the content from it (a plain SHA-256 would let anyone holding a candidate file confirm it is stored). For the
 * same reason an encrypted backup's record lists no file's SHA-256 (`fileHashes: 'keyed'`): the blob name is the
 * keyed digest of the file's identity, SHA-256 included, so a restore or verify checks a file's bytes by computing
 * the name they give (contentCheck, sameContent).
 */

export const BLOBS_PREFIX = 'cbr.blobs/';
export const LOCKS_PREFIX = 'cbr.locks/';

export interface BlobIdentity {
  hostId: string;
  tableId: string;
  /** The path below the table directory (`nb-1-big-Data.db`, `.idx/nb-1-big-Data.db`). */
  fileName: string;
  size: number;
  /** SHA-256 of the file's raw bytes, hex. */
  sha256: string;
  compression: string;
}

const NAME_RE = /^[0-9a-f]{64}$/;
/** Host ids that can be a key segment as they are; anything else is hashed (a dot keeps the two apart). */
const PLAIN_HOST_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** The key blob names are made with when the backup is encrypted: derived, never the archive key itself. */
export function dedupKey(key: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'cbr dedup v1', 32));
}

/** 64 hex characters naming the blob of one file: SHA-256 (plain) or HMAC-SHA256 under `dedupKey` (encrypted). */
export function blobName(f: BlobIdentity, dedup: Buffer | null): string {
  const text = JSON.stringify(['cbr blob v1', f.hostId, f.tableId, f.fileName, f.size, f.sha256, f.compression]);
  return (dedup ? createHmac('sha256', dedup) : createHash('sha256')).update(text).digest('hex');
}

/**
 * How a fetched or verified file's bytes are known to be the recorded ones, in plain data (it goes to worker
 * threads): `expected` is what the record holds, the file's SHA-256, or, where the record keeps none (an encrypted
 * record with `fileHashes: 'keyed'`), its blob's name, which the SHA-256 of the bytes must give under `keyed`.
 */
export interface ContentCheck {
  expected: string;
  keyed: { identity: Omit<BlobIdentity, 'sha256'>; dedup: Uint8Array } | null;
}

/** Derived once per archive key (a restore or verify asks for every file), in a buffer of its own to send to threads. */
const dedupKeys = new WeakMap<Buffer, Uint8Array>();

/**
 * The check of one file of a record. `key` is the archive key; a record whose files keep no SHA-256 cannot be
 * checked without it (CBR_ERR_KEY_REQUIRED).
 */
export function contentCheck(
  rec: { hostId: string; compression: string; encryption: { fileHashes?: 'keyed' } | null },
  f: { path: string; size: number; sha256?: string | undefined; blob?: string | undefined },
  key: Buffer | null | undefined,
): ContentCheck {
  if (rec.encryption?.fileHashes !== 'keyed') {
    if (f.sha256 === undefined) throw new CbrError('CBR_ERR_INTERNAL', `the record lists no SHA-256 for ${f.path}`);
    return { expected: f.sha256, keyed: null };
  }
  if (!key) throw new CbrError('CBR_ERR_KEY_REQUIRED', `${f.path} is checked through its encrypted blob's name: the archive key is needed`);
  let dedup = dedupKeys.get(key);
  if (!dedup) {
    dedup = new Uint8Array(dedupKey(key));
    dedupKeys.set(key, dedup);
  }
  const name = (f.blob ?? '').slice((f.blob ?? '').lastIndexOf('/') + 1);
  if (!NAME_RE.test(name)) throw new CbrError('CBR_ERR_INTERNAL', `the record lists no blob for ${f.path}`);
  return {
    expected: name,
    keyed: { identity: { hostId: rec.hostId, tableId: tableIdOf(f.path), fileName: fileNameOf(f.path), size: f.size, compression: rec.compression }, dedup },
  };
}

/** What a record would hold for bytes of this SHA-256 (hex): the SHA-256 itself, or the blob name it gives. */
export function recordedForm(check: ContentCheck, sha256: string): string {
  if (!check.keyed) return sha256;
  const { dedup, identity } = check.keyed;
  return blobName({ ...identity, sha256 }, Buffer.from(dedup.buffer, dedup.byteOffset, dedup.byteLength));
}

/** True when bytes of this SHA-256 (hex) are the recorded file's. */
export function sameContent(check: ContentCheck, sha256: string): boolean {
  return recordedForm(check, sha256) === check.expected;
}

/** The storage segment of a host: its id when that is a safe key segment (Cassandra's UUIDs are), else a digest. */
export function hostSegment(hostId: string): string {
  if (PLAIN_HOST_RE.test(hostId)) return hostId;
  return `h.${createHash('sha256').update(hostId).digest('hex').slice(0, 32)}`;
}

/** `cbr.blobs/<host>/`: every blob of one host, the `object` of its incremental records. */
export function blobPrefix(hostId: string): string {
  return `${BLOBS_PREFIX}${hostSegment(hostId)}/`;
}

/** `cbr.blobs/<host>/<first 2 hex>/<name>`: the fan-out keeps listings and local directories small. */
export function blobKey(hostId: string, name: string): string {
  if (!NAME_RE.test(name)) throw new CbrError('CBR_ERR_INTERNAL', `not a blob name: ${JSON.stringify(name.slice(0, 80))}`);
  return `${blobPrefix(hostId)}${name.slice(0, 2)}/${name}`;
}

/** True when `key` is a well-formed blob key under `prefix` (a record's `object`). */
export function isBlobKeyUnder(key: string, prefix: string): boolean {
  if (!key.startsWith(prefix)) return false;
  const rest = key.slice(prefix.length).split('/');
  return rest.length === 2 && NAME_RE.test(rest[1]!) && rest[0] === rest[1]!.slice(0, 2);
}

/** The binding a blob's encryption is sealed with, so one blob cannot be swapped in for another. */
export function blobBinding(name: string): Buffer {
  return createHash('sha256').update('cbr blob binding v1').update(name).digest();
}

/** The 32-hex table id of an archive path `<ks>/<table>-<id>/...`. */
export function tableIdOf(archivePath: string): string {
  const m = /^[^/]+\/[^/]+-([0-9a-f]{32})\//.exec(archivePath);
  if (!m) throw new CbrError('CBR_ERR_INTERNAL', `no table id in ${JSON.stringify(archivePath.slice(0, 120))}`);
  return m[1]!;
}

/** The path below the table directory: the blob identity's file name (index subdirectory included). */
export function fileNameOf(archivePath: string): string {
  return archivePath.split('/').slice(2).join('/');
}
