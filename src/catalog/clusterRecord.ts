import { Readable } from 'node:stream';
import { z } from 'zod';
import { CbrError } from '../core/errors.ts';
import { ID_RE } from '../core/ids.ts';
import type { Logger } from '../core/log.ts';
import type { ObjectStore } from '../storage/port.ts';
import { checkId, type DeleteResult, deleteBackup, listRecords, recordKey } from './catalog.ts';
import { readSmall } from './readSmall.ts';

/**
 * A cluster backup in storage. Each host's part is an ordinary host backup with an id of its own
 * (`<cluster backup id>-<n>`, n = the host's 1-based place in the coordinator's sorted host list), so single-node
 * restore, verify, drill, incremental chains and garbage collection work on a part unchanged. What makes them one
 * backup is the cluster record, written last by the coordinator:
 *
 *   cbr.clusters/<cluster backup id>.json   the hosts (agent name, part id, host id, datacenter, rack, tokens,
 *                                           address), the schema, the strategy
 *
 * A part whose cluster record exists belongs to that cluster backup: prune keeps or drops a cluster backup's parts
 * together, and a delete of the cluster backup deletes the record first (so it stops being listed), then its parts.
 */

export const CLUSTERS_PREFIX = 'cbr.clusters/';
/** The part id has `-<n>` appended: the cluster backup id leaves room for it within the 64 characters of an id. */
export const MAX_CLUSTER_BACKUP_ID = 58;

export function clusterRecordKey(id: string): string {
  return `${CLUSTERS_PREFIX}${checkClusterBackupId(id)}.json`;
}

export function checkClusterBackupId(id: string): string {
  checkId(id);
  if (id.length > MAX_CLUSTER_BACKUP_ID) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `a cluster backup id has at most ${MAX_CLUSTER_BACKUP_ID} characters`);
  return id;
}

/** The id of the `index`th (0-based) host's part of a cluster backup. */
export function partId(clusterBackupId: string, index: number): string {
  return `${checkClusterBackupId(clusterBackupId)}-${index + 1}`;
}

/** Names printed to terminals and written into properties files: no control or line-breaking characters. */
const PRINTABLE = /^[^\u0000-\u001f\u007f-\u009f\u2028\u2029=]{1,255}$/;
const token = z.string().regex(/^-?\d{1,20}$|^[0-9a-f]{1,64}$/i);
const hostSchema = z.strictObject({
  /** The agent's host name on the bus. */
  host: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/),
  /** The host's part: an ordinary backup id. */
  backupId: z.string().regex(ID_RE),
  /** Cassandra's host id of the node the part was taken from. */
  hostId: z.string().regex(/^[A-Za-z0-9-]{1,64}$/),
  address: z.string().regex(/^[0-9A-Za-z.:%-]{1,255}$/),
  datacenter: z.string().regex(PRINTABLE),
  rack: z.string().regex(PRINTABLE),
  tokens: z.array(token).min(1).max(65_536),
});

export const clusterRecordSchema = z.strictObject({
  format: z.literal(1),
  kind: z.literal('cluster'),
  id: z.string().regex(ID_RE).max(MAX_CLUSTER_BACKUP_ID),
  name: z.string().max(128),
  description: z.string().max(1024),
  state: z.literal('COMPLETED'),
  /** The source cluster's cluster_name. */
  clusterName: z.string().min(1).max(255),
  partitioner: z.string().min(1).max(255),
  strategy: z.enum(['full', 'incremental']),
  created: z.string(),
  finished: z.string(),
  /** The non-system schema as CREATE statements (DESCRIBE SCHEMA on one node). */
  schema: z.string().max(16 * 1024 * 1024),
  hosts: z.array(hostSchema).min(1).max(10_000),
});

export type ClusterRecord = z.infer<typeof clusterRecordSchema>;
export type ClusterRecordHost = ClusterRecord['hosts'][number];

export function parseClusterRecord(value: unknown, id: string): ClusterRecord {
  const parsed = clusterRecordSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CbrError('CBR_ERR_RECORD_INVALID', `the cluster record of ${id} is invalid: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  if (parsed.data.id !== id) throw new CbrError('CBR_ERR_RECORD_INVALID', `the cluster record of ${id} names ${parsed.data.id}`);
  // Parts are exactly `<id>-1..n` in order: a record can never name (and a delete or prune never remove) another backup.
  for (const [i, h] of parsed.data.hosts.entries()) {
    if (h.backupId !== partId(id, i))
      throw new CbrError('CBR_ERR_RECORD_INVALID', `the cluster record of ${id} names part ${i + 1} ${h.backupId}, not ${partId(id, i)}`);
  }
  return parsed.data;
}

/** Create-only: a second coordinator run writing the same id finds it there (the caller compares, see recording). */
export async function writeClusterRecord(store: ObjectStore, record: ClusterRecord, signal?: AbortSignal): Promise<void> {
  const body = Readable.from([Buffer.from(`${JSON.stringify(record, null, 1)}\n`)]);
  await store.put(clusterRecordKey(record.id), body, { contentType: 'application/json', ifAbsent: true, ...(signal ? { signal } : {}) });
}

export async function readClusterRecord(store: ObjectStore, id: string, signal?: AbortSignal): Promise<ClusterRecord> {
  let text: string;
  try {
    const tooLarge = (max: number) =>
      new CbrError('CBR_ERR_CLUSTER_RECORD_INVALID', `the record of cluster backup ${id} is larger than ${max} bytes: not a record cbr wrote`);
    text = (await readSmall(store, clusterRecordKey(id), 16 * 2 ** 20, tooLarge, signal)).toString('utf8');
  } catch (err) {
    if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `no cluster backup ${id}`);
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CbrError('CBR_ERR_RECORD_INVALID', `the cluster record of ${id} is not JSON`);
  }
  return parseClusterRecord(parsed, id);
}

export interface ClusterRecordScan {
  /** Every readable cluster record, oldest first. */
  records: ClusterRecord[];
  /**
   * Cluster backup ids whose parts must be left alone though no readable record names them: a record that cannot be
   * read (a newer format, a torn write, a failing GET) and a backup still running (its pending marker). Prune and
   * delete treat every `<id>-<n>` of these as part of a cluster backup.
   */
  protectedIds: string[];
  /** Of protectedIds, those whose record exists but cannot be read. */
  unreadable: string[];
}

/** The cluster records, and the ids whose parts are protected without one (see ClusterRecordScan). */
export async function scanClusterRecords(store: ObjectStore, signal?: AbortSignal): Promise<ClusterRecordScan> {
  const ids: string[] = [];
  const pending: string[] = [];
  for await (const o of store.list(CLUSTERS_PREFIX, signal ? { signal } : {})) {
    const m = /^cbr\.clusters\/([^/]+)\.(json|pending)$/.exec(o.key);
    if (!m?.[1] || !ID_RE.test(m[1])) continue;
    (m[2] === 'json' ? ids : pending).push(m[1]);
  }
  const records: ClusterRecord[] = [];
  const unreadable: string[] = [];
  for (const id of ids) {
    try {
      records.push(await readClusterRecord(store, id, signal));
    } catch (err) {
      if (err instanceof CbrError && err.code === 'CBR_ERR_ABORTED') throw err;
      if (err instanceof CbrError && err.code === 'CBR_ERR_BACKUP_NOT_FOUND') continue; // deleted since the listing
      unreadable.push(id);
    }
  }
  return {
    records: records.sort((a, b) => (a.created < b.created ? -1 : 1)),
    protectedIds: [...new Set([...unreadable, ...pending])].sort(),
    unreadable: unreadable.sort(),
  };
}

/** Every readable cluster record, oldest first (listings; prune and delete use scanClusterRecords). */
export async function listClusterRecords(store: ObjectStore, signal?: AbortSignal): Promise<ClusterRecord[]> {
  return (await scanClusterRecords(store, signal)).records;
}

/** True when `backupId` is `<id>-<n>` of one of `protectedIds`. */
export function isProtectedPart(protectedIds: readonly string[], backupId: string): string | null {
  return protectedIds.find((id) => new RegExp(`^${id}-[1-9][0-9]{0,4}$`).test(backupId)) ?? null;
}

/** `cbr.clusters/<id>.pending`: written by the coordinator before any host backs up, removed once the record is written or the backup failed. */
export function pendingMarkerKey(id: string): string {
  return `${CLUSTERS_PREFIX}${checkClusterBackupId(id)}.pending`;
}

export interface PendingMarker {
  coordinator: string;
  started: string;
}

/**
 * Create-only: the marker reserves the id for one run. A marker already there is this run's own (a resumed
 * coordinator: same coordinator and start) or another run's, which is refused (CBR_ERR_BACKUP_EXISTS).
 */
export async function writePendingMarker(store: ObjectStore, id: string, body: PendingMarker, signal?: AbortSignal): Promise<void> {
  try {
    await store.put(pendingMarkerKey(id), Readable.from([Buffer.from(`${JSON.stringify(body)}\n`)]), {
      contentType: 'application/json',
      ifAbsent: true,
      ...(signal ? { signal } : {}),
    });
  } catch (err) {
    if (!(err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_EXISTS')) throw err;
    const there = await readPendingMarker(store, id, signal);
    if (there?.coordinator !== body.coordinator || there.started !== body.started)
      throw new CbrError(
        'CBR_ERR_BACKUP_EXISTS',
        `cluster backup ${id} is already running or was left pending (cbr.clusters/${id}.pending${there ? `, started ${there.started}` : ''}): choose another id`,
      );
  }
}

/** The pending marker, or null when there is none (or it is not a marker this version reads). */
export async function readPendingMarker(store: ObjectStore, id: string, signal?: AbortSignal): Promise<PendingMarker | null> {
  try {
    const tooLarge = () => new SyntaxError('not a pending marker');
    const v = JSON.parse((await readSmall(store, pendingMarkerKey(id), 2 ** 20, tooLarge, signal)).toString('utf8')) as Partial<PendingMarker>;
    return typeof v.coordinator === 'string' && typeof v.started === 'string' ? { coordinator: v.coordinator, started: v.started } : null;
  } catch (err) {
    if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') return null;
    if (err instanceof SyntaxError) return null;
    throw err;
  }
}

export async function deletePendingMarker(store: ObjectStore, id: string, signal?: AbortSignal): Promise<void> {
  await store.delete(pendingMarkerKey(id), signal ? { signal } : {});
}

/** Removes the cluster record only (idempotent); the caller deletes the parts after it. */
export async function deleteClusterRecord(store: ObjectStore, id: string, signal?: AbortSignal): Promise<void> {
  await store.delete(clusterRecordKey(id), signal ? { signal } : {});
}

/** The cluster backup whose record names `backupId` as a part, or null (a host backup of its own). */
export function clusterOwning(clusters: readonly ClusterRecord[], backupId: string): ClusterRecord | null {
  return clusters.find((c) => c.hosts.some((h) => h.backupId === backupId)) ?? null;
}

/** A host backup that is a part of a listed cluster backup cannot be deleted alone: it would break that backup. */
export async function refuseClusterPart(store: ObjectStore, backupId: string, signal?: AbortSignal): Promise<void> {
  const scan = await scanClusterRecords(store, signal);
  const unread = isProtectedPart(scan.protectedIds, backupId);
  if (unread)
    throw new CbrError(
      'CBR_ERR_CLUSTER_PART',
      `backup ${backupId} may be a part of cluster backup ${unread} (still running, or its record cbr.clusters/${unread}.json cannot be read): delete ${unread}`,
    );
  const owner = clusterOwning(scan.records, backupId);
  if (owner)
    throw new CbrError(
      'CBR_ERR_CLUSTER_PART',
      `backup ${backupId} is the part of host ${owner.hosts.find((h) => h.backupId === backupId)?.host} in cluster backup ${owner.id}: delete ${owner.id}`,
    );
}

export interface ClusterDeleteResult {
  id: string;
  /** Each part as its own delete removed it (a part already gone counts as removed, with no record). */
  parts: (DeleteResult & { id: string })[];
}

/**
 * Deletes a cluster backup: its record first (it stops being listed, and its parts stop being protected), then each
 * part as an ordinary backup delete (incremental parts collect their host's garbage). Idempotent: killed midway, the
 * parts left are host backups no cluster record names; deleting them by id, or the next prune, finishes the job.
 */
export async function deleteClusterBackup(store: ObjectStore, id: string, opts: { signal?: AbortSignal; log?: Logger } = {}): Promise<ClusterDeleteResult> {
  const record = await readClusterRecord(store, id, opts.signal);
  await deleteClusterRecord(store, id, opts.signal);
  const parts: ClusterDeleteResult['parts'] = [];
  for (const h of record.hosts) parts.push({ id: h.backupId, ...(await deleteBackup(store, h.backupId, opts.signal, opts.log)) });
  return { id, parts };
}

/** True when `id` names a cluster record (and no host backup of that id: host records are looked at first). */
export async function isClusterBackup(store: ObjectStore, id: string, signal?: AbortSignal): Promise<boolean> {
  if (id.length > MAX_CLUSTER_BACKUP_ID || (await store.head(recordKey(id), signal ? { signal } : {})) !== null) return false;
  return (await store.head(clusterRecordKey(id), signal ? { signal } : {})) !== null;
}

/**
 * The cluster record when `id` names a cluster backup, else null (`cbr create --backup` takes either kind of id).
 * A record that exists but cannot be read still fails, coded.
 */
export async function findClusterRecord(store: ObjectStore, id: string, signal?: AbortSignal): Promise<ClusterRecord | null> {
  if (id.length > MAX_CLUSTER_BACKUP_ID) return null;
  if (!(await store.head(clusterRecordKey(id), signal ? { signal } : {}))) return null;
  return readClusterRecord(store, id, signal);
}

/**
 * What a restore of `id` into one node restores: a cluster backup's id restores its first part, every other part's
 * tables imported into it (`clusterBackupId`); a host backup's id is restored as it is (null).
 */
export async function intoOneNode(store: ObjectStore, id: string, signal?: AbortSignal): Promise<IntoOneNode | null> {
  const cluster = await findClusterRecord(store, id, signal);
  return cluster ? intoOneNodeOf(cluster) : null;
}

export interface IntoOneNode {
  /** The part restored as usual. */
  backupId: string;
  clusterBackupId: string;
}

export function intoOneNodeOf(cluster: ClusterRecord): IntoOneNode {
  return { backupId: cluster.hosts[0]!.backupId, clusterBackupId: cluster.id };
}

/**
 * Deletes a cluster backup that never got its record, once its operator knows its coordinator is gone for good:
 * every part `<id>-<n>` in storage, then the marker (killed midway, the marker still protects what is left, and a
 * rerun finishes).
 */
export async function deleteAbandonedClusterBackup(
  store: ObjectStore,
  id: string,
  opts: { signal?: AbortSignal; log?: Logger } = {},
): Promise<ClusterDeleteResult> {
  const parts: ClusterDeleteResult['parts'] = [];
  for (const r of await listRecords(store, opts.signal)) {
    if (isProtectedPart([id], r.id)) parts.push({ id: r.id, ...(await deleteBackup(store, r.id, opts.signal, opts.log)) });
  }
  await deletePendingMarker(store, id, opts.signal);
  return { id, parts };
}
