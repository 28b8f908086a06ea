import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CbrError } from '../core/errors.ts';
import { type Logger, silentLogger } from '../core/log.ts';
import type { ObjectStore } from '../storage/port.ts';
import { type BackupRecord, checkId, listRecords, readRecord, recordKey } from './catalog.ts';
import { type ClusterRecord, checkClusterBackupId, deleteClusterRecord, isProtectedPart, scanClusterRecords } from './clusterRecord.ts';
import { collectGarbage, type GcResult } from './leases.ts';
import { readSmall } from './readSmall.ts';
import { applyPolicy, describePolicy, type GroupBy, type RetentionPolicy } from './retention.ts';

/**
 * backup-prune: the retention policy (src/catalog/retention.ts) picks, among COMPLETED records only (a running
 * backup has none yet), the backups to remove; each is removed record first (it stops being listed), then its
 * objects; then each host's garbage collection runs once, deleting the blobs no remaining record names (skipped
 * while a backup of that host runs: its blobs are named by no record yet).
 *
 * Killed anywhere it is finished by the next run: before deleting anything a prune writes its journal
 * (`cbr.prune/<id>.json`: each backup it removes with its record's digest, and the hosts to collect); the next
 * prune first completes every journal it finds (a backup whose record is gone has its objects purged, one whose
 * record is back with another digest is a new backup under that id and is left alone), then collects those hosts.
 * A journal is deleted only once its hosts were collected.
 */

export const PRUNE_PREFIX = 'cbr.prune/';

export interface PrunedBackup {
  id: string;
  name: string;
  group: string;
  created: string;
  strategy: 'full' | 'incremental';
  /** Stored bytes the backup names (of blobs it shares with others too). */
  size: number;
  /** The cluster backup it is a part of (removed with all its parts). */
  cluster?: string;
}

export interface KeptBackup {
  id: string;
  name: string;
  group: string;
  created: string;
  strategy: 'full' | 'incremental';
  reasons: string[];
  /** The cluster backup it is a part of (kept with all its parts). */
  cluster?: string;
}

export interface PrunePlan {
  policy: string;
  groupBy: GroupBy;
  keep: KeptBackup[];
  remove: PrunedBackup[];
  /** Cluster backups removed: their cluster records go first, then their parts (in `remove`). */
  removeClusters: string[];
  /** Backups left out of the policy: parts of a cluster backup still running, or whose cluster record cannot be read. */
  protected: string[];
  /** Bytes the removal frees: archives of full backups, blobs only removed backups name (shared ones counted once). */
  freedBytes: number;
  /** Blobs named by removed backups only. */
  freedBlobs: number;
  /** The hosts whose garbage collection runs: those of the incremental backups removed. */
  hosts: string[];
}

export interface PruneResult extends PrunePlan {
  dryRun: boolean;
  /** Backups of earlier, interrupted prunes this run finished removing. */
  resumed: string[];
  /** Per host: its collection (`skipped: 'failed'` with the error, or 'backup-running' or 'restore-running': a later prune frees the bytes). */
  gc: { hostId: string; deleted: number; freedBytes: number; skipped: 'backup-running' | 'restore-running' | 'failed' | null; error?: string }[];
  /** Done: archives removed plus blobs collected. */
  freedBytesDone: number;
}

interface Journal {
  version: 1;
  id: string;
  created: string;
  backups: { id: string; sha256: string }[];
  /** Cluster records to delete before any backup (absent in journals of earlier versions). */
  clusters?: string[];
  hosts: string[];
}

const strategyOf = (r: BackupRecord): 'full' | 'incremental' => (r.strategy === 'incremental' ? 'incremental' : 'full');

/**
 * A cluster backup's group: its cluster name and the host ids of its nodes (two clusters of the stock name
 * "Test Cluster" are two groups), `cluster:<name>/<8 hex>`.
 */
function clusterGroup(c: ClusterRecord): string {
  const hosts = c.hosts.map((h) => h.hostId).sort();
  return `cluster:${c.clusterName}/${createHash('sha256').update(hosts.join(',')).digest('hex').slice(0, 8)}`;
}

/** What a policy removes and keeps, and what that frees, from the records in storage now. Reads only. */
export async function planPrune(
  store: ObjectStore,
  policy: RetentionPolicy,
  opts: { groupBy?: GroupBy; instance?: string; signal?: AbortSignal } = {},
): Promise<PrunePlan> {
  const groupBy = opts.groupBy ?? 'host';
  const all = await listRecords(store, opts.signal);
  const byId = new Map(all.map((r) => [r.id, r]));
  // A cluster backup is one candidate (grouped by its cluster's name), its parts never candidates of their own: the
  // policy keeps or drops all of a cluster backup's parts together. `--instance` narrows to host backups of that
  // instance, or to the cluster backups of a cluster of that name.
  // Parts of a cluster backup still running (its pending marker) or whose record cannot be read are no candidates at
  // all: kept, and named in `protected`.
  const { records: clusters, protectedIds } = await scanClusterRecords(store, opts.signal);
  const partOf = new Map(clusters.flatMap((c) => c.hosts.map((h) => [h.backupId, c] as const)));
  const shielded = all.filter((r) => !partOf.has(r.id) && isProtectedPart(protectedIds, r.id)).map((r) => r.id);
  const records = all.filter((r) => !partOf.has(r.id) && !shielded.includes(r.id) && (opts.instance === undefined || r.sourceInstance === opts.instance));
  const clusterCandidates = clusters
    .filter((c) => opts.instance === undefined || c.clusterName === opts.instance)
    .map((c) => ({ id: c.id, created: c.created, hostId: clusterGroup(c), sourceInstance: clusterGroup(c) }));
  const clusterById = new Map(clusters.map((c) => [c.id, c]));
  const decisions = applyPolicy([...records, ...clusterCandidates], policy, groupBy);
  const keep: KeptBackup[] = [];
  const remove: PrunedBackup[] = [];
  const removeClusters: string[] = [];
  for (const d of decisions) {
    const cluster = clusterById.get(d.id);
    if (cluster && !d.keep) removeClusters.push(cluster.id);
    const parts = cluster ? cluster.hosts.flatMap((h) => byId.get(h.backupId) ?? []) : [byId.get(d.id) as BackupRecord];
    for (const r of parts) {
      const base = { id: r.id, name: r.name, group: d.group, created: r.created, strategy: strategyOf(r), ...(cluster ? { cluster: cluster.id } : {}) };
      if (d.keep) keep.push({ ...base, reasons: d.reasons });
      else remove.push({ ...base, size: r.size });
    }
  }
  const removed = new Set(remove.map((b) => b.id));
  // Every record that stays (also of other instances, when --instance narrows the policy) keeps its blobs.
  const stays = new Set<string>();
  for (const r of all) if (!removed.has(r.id)) for (const f of r.files) if (f.blob) stays.add(f.blob);
  const doomed = new Map<string, number>();
  let freedBytes = 0;
  for (const b of remove) {
    const r = byId.get(b.id) as BackupRecord;
    if (r.strategy !== 'incremental') freedBytes += r.size;
    else for (const f of r.files) if (f.blob && !stays.has(f.blob)) doomed.set(f.blob, f.stored ?? 0);
  }
  for (const n of doomed.values()) freedBytes += n;
  const hosts = [...new Set(remove.flatMap((b) => (b.strategy === 'incremental' ? [(byId.get(b.id) as BackupRecord).hostId] : [])))].sort();
  return { policy: describePolicy(policy), groupBy, keep, remove, removeClusters, protected: shielded, freedBytes, freedBlobs: doomed.size, hosts };
}

export interface PruneOptions {
  groupBy?: GroupBy;
  instance?: string;
  dryRun?: boolean;
  signal?: AbortSignal;
  log?: Logger;
  /** Drill: a pause after each record is deleted, to widen kill windows in tests (CBR_DRILL_PRUNE_DELAY_MS). */
  delayMs?: number;
  /** Called after each backup is removed (progress). */
  onRemoved?: (id: string, done: number, total: number) => void;
}

/** Finishes interrupted prunes, removes what the policy does not keep, and collects each host's garbage once. */
export async function prune(store: ObjectStore, policy: RetentionPolicy, opts: PruneOptions = {}): Promise<PruneResult> {
  const { signal, log = silentLogger, dryRun = false } = opts;
  const so = signal ? { signal } : {};

  const planOpts = { ...(opts.groupBy ? { groupBy: opts.groupBy } : {}), ...(opts.instance !== undefined ? { instance: opts.instance } : {}), ...so };
  if (dryRun) {
    const plan = await planPrune(store, policy, planOpts);
    return { ...plan, dryRun, resumed: [], gc: [], freedBytesDone: 0 };
  }
  // 1. Earlier prunes killed midway: finish their removals first (so the plan below sees the store they meant).
  const journals = await readJournals(store, log, signal);
  const resumed: string[] = [];
  let freedBytesDone = 0;
  for (const j of journals) {
    for (const c of j.clusters ?? []) await deleteClusterRecord(store, c, signal);
    for (const b of j.backups) {
      if (await removeBackup(store, b.id, b.sha256, log, signal)) resumed.push(b.id);
    }
    if (j.backups.length > 0) await writeJournal(store, { ...j, backups: [] }, signal);
  }

  const plan = await planPrune(store, policy, planOpts);

  // 2. This prune's journal, then its removals, record first.
  const records = new Map((await listRecords(store, signal)).map((r) => [r.id, r]));
  const journal: Journal = {
    version: 1,
    id: `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`,
    created: new Date().toISOString(),
    backups: plan.remove.flatMap((b) => {
      const r = records.get(b.id);
      return r ? [{ id: b.id, sha256: r.sha256 }] : [];
    }),
    ...(plan.removeClusters.length > 0 ? { clusters: plan.removeClusters } : {}),
    hosts: plan.hosts,
  };
  if (journal.backups.length > 0) await writeJournal(store, journal, signal);
  // A cluster backup stops being listed (and protecting its parts) before any of its parts goes.
  for (const c of plan.removeClusters) await deleteClusterRecord(store, c, signal);
  let done = 0;
  for (const b of journal.backups) {
    await removeBackup(store, b.id, b.sha256, log, signal, opts.delayMs);
    if (records.get(b.id)?.strategy !== 'incremental') freedBytesDone += records.get(b.id)?.size ?? 0;
    opts.onRemoved?.(b.id, ++done, journal.backups.length);
  }
  if (journal.backups.length > 0) await writeJournal(store, { ...journal, backups: [] }, signal);

  // 3. One collection per host; journals whose hosts were all collected are done.
  const hosts = [...new Set([...journal.hosts, ...journals.flatMap((j) => j.hosts)])].sort();
  const gc: PruneResult['gc'] = [];
  for (const hostId of hosts) {
    let r: GcResult | null = null;
    try {
      r = await collectGarbage(store, hostId, { ...so, log });
      gc.push({ hostId, deleted: r.deleted, freedBytes: r.freedBytes, skipped: r.skipped ?? null });
      freedBytesDone += r.freedBytes;
    } catch (err) {
      if (err instanceof CbrError && err.code === 'CBR_ERR_ABORTED') throw err;
      log.warn('garbage collection failed (the next prune collects)', { hostId, error: (err as Error).message });
      gc.push({ hostId, deleted: 0, freedBytes: 0, skipped: 'failed', error: (err as Error).message });
    }
  }
  const collected = new Set(gc.filter((g) => g.skipped === null).map((g) => g.hostId));
  for (const j of [...journals, ...(journal.backups.length > 0 ? [journal] : [])]) {
    if (j.hosts.every((h) => collected.has(h))) await store.delete(journalKey(j.id), so);
  }
  log.info('prune done', { removed: journal.backups.length, resumed: resumed.length, freedBytes: freedBytesDone });
  return { ...plan, dryRun, resumed, gc, freedBytesDone };
}

/**
 * Removes one backup: its record (only if it is still the one the journal names), then every object under its id.
 * True when there was something to remove. Idempotent.
 */
async function removeBackup(store: ObjectStore, id: string, sha256: string, log: Logger, signal?: AbortSignal, delayMs = 0): Promise<boolean> {
  checkId(id);
  const so = signal ? { signal } : {};
  let record: BackupRecord | null;
  try {
    record = await readRecord(store, id, signal);
  } catch (err) {
    if (!(err instanceof CbrError) || (err.code !== 'CBR_ERR_BACKUP_NOT_FOUND' && err.code !== 'CBR_ERR_RECORD_INVALID')) throw err;
    if (err.code === 'CBR_ERR_RECORD_INVALID') {
      log.warn('a backup the prune journal names has a record that does not parse: left alone', { backupId: id });
      return false;
    }
    record = null;
  }
  if (record && record.sha256 !== sha256) {
    log.warn('a backup the prune journal names was made again under the same id: left alone', { backupId: id });
    return false;
  }
  if (record) await store.delete(recordKey(id), so);
  if (delayMs > 0) await sleep(delayMs, undefined, so);
  const removed = await store.purge(`${id}/`, so);
  return record !== null || removed > 0;
}

function journalKey(id: string): string {
  return `${PRUNE_PREFIX}${checkId(id)}.json`;
}

async function writeJournal(store: ObjectStore, j: Journal, signal?: AbortSignal): Promise<void> {
  const body = Readable.from([Buffer.from(`${JSON.stringify(j)}\n`)]);
  await store.put(journalKey(j.id), body, { contentType: 'application/json', ...(signal ? { signal } : {}) });
}

/** The journals of interrupted prunes; one that cannot be parsed is reported and left (it names nothing usable). */
async function readJournals(store: ObjectStore, log: Logger, signal?: AbortSignal): Promise<Journal[]> {
  const out: Journal[] = [];
  const keys: string[] = [];
  for await (const o of store.list(PRUNE_PREFIX, signal ? { signal } : {})) if (o.key.endsWith('.json')) keys.push(o.key);
  for (const key of keys) {
    try {
      const j = JSON.parse(
        (await readSmall(store, key, 64 * 2 ** 20, () => new Error('larger than a prune journal'), signal)).toString('utf8'),
      ) as Partial<Journal>;
      if (j.version !== 1 || typeof j.id !== 'string' || !Array.isArray(j.backups) || !Array.isArray(j.hosts)) throw new Error('not a prune journal');
      if (j.clusters !== undefined && !Array.isArray(j.clusters)) throw new Error('not a prune journal');
      for (const c of j.clusters ?? []) checkClusterBackupId(String(c));
      if (journalKey(j.id) !== key) throw new Error('journal id does not match its key');
      for (const b of j.backups) checkId(String(b?.id));
      out.push(j as Journal);
    } catch (err) {
      if (err instanceof CbrError && err.code === 'CBR_ERR_ABORTED') throw err;
      if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') continue;
      log.warn('an unreadable prune journal is left as it is', { key, error: (err as Error).message });
    }
  }
  return out;
}
