import { Readable } from 'node:stream';
import type { Compression } from '../archive/format.ts';
import type { DataSettings } from '../cassandra/dataSettings.ts';
import type { TableCount } from '../cassandra/rowCounts.ts';
import { CbrError } from '../core/errors.ts';
import { ID_RE } from '../core/ids.ts';
import type { Logger } from '../core/log.ts';
import { inPool } from '../core/pool.ts';
import type { ObjectStore } from '../storage/port.ts';
import { collectGarbage, type GcResult } from './leases.ts';
import { MAX_RECORD_BYTES, readSmall } from './readSmall.ts';
import { parseRecord } from './record.ts';

/**
 * A backup in storage is `<id>/archive.tar.*` plus `<id>/backup.json`, the record, written only after the
 * archive is complete. Without a COMPLETED record nothing is listed as usable. An incremental backup has no
 * archive: its record lists the blobs (src/catalog/blobs.ts) holding each file's bytes.
 */
export interface BackupRecord {
  /**
   * 1: before MACs and bindings; 2: an encrypted backup's record carries `mac` and its archive is bound;
   * 3: an incremental backup (files name their blobs).
   */
  format: 1 | 2 | 3;
  /** Absent: full (records written before strategies). */
  strategy?: 'full' | 'incremental';
  /** The backup this one followed (informational: dedup works against every earlier backup of the host). */
  parent?: string | null;
  id: string;
  name: string;
  description: string;
  state: 'COMPLETED';
  datastore: 'cassandra';
  sourceInstance: string;
  hostId: string;
  clusterName: string;
  cassandraVersion: string;
  created: string;
  finished: string;
  /** Key of the archive object; for an incremental backup the host's blob prefix `cbr.blobs/<host>/`. */
  object: string;
  /** Stored bytes: of the archive, or of every blob an incremental backup references. */
  size: number;
  /** SHA-256 of the archive, or of an incremental backup's file list (canonical JSON). */
  sha256: string;
  compression: Compression;
  /**
   * `fileHashes: 'keyed'` (incremental): the files list no SHA-256, each file's blob name (an HMAC of its identity,
   * SHA-256 included) is checked instead; absent in records written before it, which list plain SHA-256s.
   */
  encryption: { algorithm: 'aes-256-gcm-chunked'; keyFingerprint: string; bound?: true; fileHashes?: 'keyed' } | null;
  rawBytes: number;
  fileCount: number;
  keyspaces: string[];
  files: RecordFile[];
  /** Incremental: raw bytes of the files this backup stored, of those it shares with earlier ones, stored bytes it added. */
  newBytes?: number;
  sharedBytes?: number;
  newStoredBytes?: number;
  /** Settings the data depends on (tokens, partitioner, SSTable identifiers and format); absent in older records. */
  settings?: DataSettings;
  /** Row counts of the user tables at backup time (src/cassandra/rowCounts.ts); absent in older records. */
  tables?: TableCount[];
  /** HMAC-SHA256 of the record, with a key derived from the archive key (encrypted backups, format 2). */
  mac?: string;
}

/** A file of a backup; an incremental record adds where its bytes are. */
export interface RecordFile {
  path: string;
  size: number;
  /** SHA-256 of the file's raw bytes (incremental; absent when `encryption.fileHashes` is 'keyed'). */
  sha256?: string;
  /** Key of the blob holding the file (incremental). */
  blob?: string;
  /** Stored bytes of that blob (compressed, encrypted). */
  stored?: number;
  /** The blob existed before this backup. */
  shared?: boolean;
}

export const RECORD_NAME = 'backup.json';
export { MAX_RECORD_BYTES };

export function recordKey(id: string): string {
  return `${checkId(id)}/${RECORD_NAME}`;
}

export function checkId(id: string): string {
  if (!ID_RE.test(id)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `invalid backup id ${JSON.stringify(id.slice(0, 80))}`);
  return id;
}

export async function writeRecord(store: ObjectStore, record: BackupRecord, signal?: AbortSignal): Promise<void> {
  const body = Readable.from([Buffer.from(`${JSON.stringify(record, null, 1)}\n`)]);
  await store.put(recordKey(record.id), body, { contentType: 'application/json', ifAbsent: true, ...(signal ? { signal } : {}) });
}

export async function readRecord(store: ObjectStore, id: string, signal?: AbortSignal): Promise<BackupRecord> {
  const key = recordKey(id);
  let text: string;
  try {
    const tooLarge = (max: number) => new CbrError('CBR_ERR_RECORD_INVALID', `the record of backup ${id} is larger than ${max} bytes: not a record cbr wrote`);
    text = (await readSmall(store, key, MAX_RECORD_BYTES, tooLarge, signal)).toString('utf8');
  } catch (err) {
    if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `no backup ${id}`);
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CbrError('CBR_ERR_RECORD_INVALID', `the record of backup ${id} is not JSON`);
  }
  return parseRecord(parsed, id) as BackupRecord;
}

export async function listRecords(store: ObjectStore, signal?: AbortSignal): Promise<BackupRecord[]> {
  const ids: string[] = [];
  for await (const o of store.list('', signal ? { signal } : {})) {
    const [id, name, ...rest] = o.key.split('/');
    if (id && name === RECORD_NAME && rest.length === 0) ids.push(id);
  }
  // Several at once: a year of daily backups of six nodes is over 2000 records, one round trip each.
  const out: BackupRecord[] = [];
  await inPool(ids, 8, signal ?? new AbortController().signal, async (id, _i, sig) => {
    try {
      out.push(await readRecord(store, id, sig));
    } catch {
      /* unreadable records are not usable backups */
    }
  });
  return out.sort((a, b) => (a.created < b.created ? -1 : 1));
}

/**
 * The id of the newest usable backup (of one host when `hostId` is given): what a scheduled verify or drill takes,
 * since a fixed id would keep checking one old backup, or one a prune has removed.
 */
export async function latestBackupId(store: ObjectStore, hostId?: string, signal?: AbortSignal): Promise<string> {
  const records = (await listRecords(store, signal)).filter((r) => !hostId || r.hostId === hostId);
  const newest = records.at(-1);
  if (!newest) throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `no completed backup${hostId ? ` of host ${hostId}` : ''} in this storage`);
  return newest.id;
}

export interface DeleteResult {
  /** Objects removed under `<id>/` besides the record. */
  removed: number;
  /** The record as it was before the delete; null when there was none or it could not be read. */
  record: BackupRecord | null;
  /** An incremental backup's garbage collection (`skipped: 'failed'`: the backup is deleted, its bytes are not yet). */
  gc: (GcResult | (Omit<GcResult, 'skipped'> & { skipped: 'failed'; error: string })) | null;
}

/**
 * Removes the record first (so the backup stops being listed), then everything of the backup. Idempotent. Blobs an
 * incremental backup shared are kept; the host's garbage collection then removes those no remaining record names.
 */
export async function deleteBackup(store: ObjectStore, id: string, signal?: AbortSignal, log?: Logger): Promise<DeleteResult> {
  checkId(id);
  const opts = signal ? { signal } : {};
  const record = await readRecord(store, id, signal).catch((err: unknown) => {
    if (err instanceof CbrError && err.code === 'CBR_ERR_ABORTED') throw err;
    return null;
  });
  await store.delete(recordKey(id), opts);
  const removed = await store.purge(`${id}/`, opts);
  if (record?.strategy !== 'incremental') return { removed, record, gc: null };
  try {
    return { removed, record, gc: await collectGarbage(store, record.hostId, { ...opts, ...(log ? { log } : {}) }) };
  } catch (err) {
    if (err instanceof CbrError && err.code === 'CBR_ERR_ABORTED') throw err;
    log?.warn('backup deleted; its garbage collection failed (a later delete collects it)', { backupId: id, error: (err as Error).message });
    return { removed, record, gc: { deleted: 0, freedBytes: 0, skipped: 'failed', error: (err as Error).message } };
  }
}
