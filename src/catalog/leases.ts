import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CbrError } from '../core/errors.ts';
import { type Logger, silentLogger } from '../core/log.ts';
import type { ObjectInfo, ObjectStore } from '../storage/port.ts';
import { blobPrefix, hostSegment, isBlobKeyUnder, LOCKS_PREFIX } from './blobs.ts';
import { MAX_RECORD_BYTES, MAX_SMALL_BYTES, readSmall } from './readSmall.ts';

/**
 * Leases keep garbage collection away from a running incremental backup, whose blobs no record references yet,
 * and from a running restore (or drill) of an incremental backup, which fetches blobs its record named when it
 * was read: a delete or prune of that record meanwhile removes the record, and the collection leaves the blobs
 * until the restore's lease is gone.
 * Swift's create-only puts are not atomic (two racing ones may both win), so exclusion is write-then-list: each
 * party writes its lease first and only then lists the others'. Of a backup and a collection that start together
 * at least one sees the other: the backup waits for the collection, the collection gives up and leaves the bytes
 * to the next one. A lease not refreshed within its ttl belongs to a process that died.
 * Every age is measured on the store's clock, never the reader's: "now" is the store-side modified time of the
 * reader's own lease, written just before it lists, and a lease's age is that minus its own store-side modified time
 * (a reader whose clock runs ahead would take live leases for dead). Where listings can lag behind writes (a loaded
 * Swift), CBR_GC_GRACE_MS adds a grace period: a collection then never deletes a blob younger than it on the store's
 * clock (BLOB_GRACE_MS is the value README suggests). It is 0 by default: a deleted backup's bytes go at once.
 */

export type LeaseKind = 'backup' | 'gc' | 'read';

export interface Lease {
  kind: LeaseKind;
  id: string;
  host: string;
  pid: number;
  created: string;
  refreshed: string;
  ttlMs: number;
}

export interface LeaseOptions {
  signal?: AbortSignal;
  log?: Logger;
  ttlMs?: number;
  /** How often a backup looks again while a collection runs (default 1 s). */
  pollMs?: number;
}

export interface GcResult {
  deleted: number;
  freedBytes: number;
  skipped?: 'backup-running' | 'restore-running';
}

export const BACKUP_LEASE_TTL_MS = 10 * 60_000;
/** A restore's read lease: refreshed every ttl/3 while it fetches, dead this long after its process is. */
export const READ_LEASE_TTL_MS = 10 * 60_000;
/** Shorter than a backup's: a collection killed midway blocks every backup of its host until its lease dies. */
export const GC_LEASE_TTL_MS = 2 * 60_000;
const MAX_TTL_MS = 24 * 3600_000;
/** The grace period suggested where listings lag: twice a backup lease's ttl. */
export const BLOB_GRACE_MS = 2 * BACKUP_LEASE_TTL_MS;

/** CBR_GC_GRACE_MS (ms, >= 0): a blob stored less than this long ago (store clock) is never collected; default 0. */
export function blobGraceMs(): number {
  const v = Number(process.env['CBR_GC_GRACE_MS'] ?? Number.NaN);
  return Number.isFinite(v) && v >= 0 ? v : 0;
}
/** A collection looks at the leases again after this many deletes (and every ttl/3), so a backup that started meanwhile stops it. */
const RELIST_EVERY = 256;
/** catalog.ts's RECORD_NAME, spelled again: catalog.ts imports this file, and runtime imports may not cycle. */
const RECORD_NAME = 'backup.json';

export function leasePrefix(hostId: string): string {
  return `${LOCKS_PREFIX}${hostSegment(hostId)}/`;
}

export function leaseKey(hostId: string, kind: LeaseKind, id: string): string {
  return `${leasePrefix(hostId)}${kind}-${id}.json`;
}

/** This process, in the stamps of holdBackupLease: a time of another process's monotonic clock means nothing here. */
const PROCESS_ID = randomUUID();
/** Intervals within this process are measured on the monotonic clock, which a wall-clock step does not move. */
const mono = () => performance.now();

/** Refreshes still in flight, by lease key: a release waits for them, so a late refresh cannot bring a lease back. */
const refreshing = new Map<string, Promise<void>>();
/** This process's refresh timers, by lease key: a release stops one its holder did not. */
const refreshers = new Map<string, () => void>();

/**
 * Writes the backup's lease, then waits while a live collection of this host runs. The lease is refreshed every
 * ttl/3 until `stop()` (the lease stays: the blobs are unreferenced until the record is written; the backup's
 * writeRecord step calls releaseBackupLease) or `release()` (stops and deletes it). A resumed backup holds it again
 * under the same key.
 */
export async function holdBackupLease(
  store: ObjectStore,
  hostId: string,
  backupId: string,
  opts: LeaseOptions = {},
): Promise<{
  stop(): void;
  release(): Promise<void>;
  lastWritten(): number;
  lastLanded(): number;
  stamp(): string | undefined;
  unbrokenSince(stamp: string | undefined): boolean;
  ttlMs: number;
}> {
  const ttlMs = opts.ttlMs ?? BACKUP_LEASE_TTL_MS;
  const lease = await holdLease(store, hostId, 'backup', backupId, ttlMs, opts);
  return {
    stop: lease.stop,
    /**
     * When the last successful write of the lease began (ms), provided every write since the first landed within
     * half a ttl of the start of the one before, and that start is less than half a ttl ago (the lease never looked
     * dead); else 0.
     */
    lastWritten: lease.lastWritten,
    /** When that same write landed (its put resolved), under the same proviso; else 0. */
    lastLanded: lease.lastLanded,
    /** lastWritten() as a stamp of this process (for a later step to hand to unbrokenSince), or undefined. */
    stamp: () => (lease.lastWritten() > 0 ? `${PROCESS_ID}@${lease.lastWritten()}` : undefined),
    /**
     * True when `stamp` is this process's and this lease's last write landed less than half a ttl after the write it
     * names began, this lease unbroken too: the lease never looked dead in between (the other half covers clocks that
     * disagree). A stamp of another process (a resumed backup) or none: false, whatever the wall clocks say.
     */
    unbrokenSince(stamp: string | undefined) {
      const [pid, at] = (stamp ?? '').split('@');
      const since = Number(at);
      const landed = lease.lastLanded();
      return pid === PROCESS_ID && Number.isFinite(since) && landed > 0 && landed - since >= 0 && landed - since < ttlMs / 2;
    },
    ttlMs,
    async release() {
      lease.stop();
      await releaseBackupLease(store, hostId, backupId);
    },
  };
}

/**
 * A restore's read lease on the blobs of `hostId`, under the restore's own id: written, then held while a live
 * collection of the host runs (one that started before the lease may not have seen it), refreshed every ttl/3
 * until `release()`. While it lives, every collection of the host deletes nothing (`restore-running`). After it
 * is held, the caller checks that the record it read is still there: if it is, no collection can remove its blobs.
 */
export async function holdReadLease(store: ObjectStore, hostId: string, readerId: string, opts: LeaseOptions = {}): Promise<{ release(): Promise<void> }> {
  const lease = await holdLease(store, hostId, 'read', readerId, opts.ttlMs ?? READ_LEASE_TTL_MS, opts);
  const key = leaseKey(hostId, 'read', readerId);
  return {
    async release() {
      lease.stop();
      await refreshing.get(key);
      // Without the caller's signal: an aborted restore still takes its lease away, or collections wait out its ttl.
      await store.delete(key);
    },
  };
}

/** Writes a lease, then waits while a live collection of the host runs; the lease is refreshed until stopped. */
async function holdLease(
  store: ObjectStore,
  hostId: string,
  kind: 'backup' | 'read',
  id: string,
  ttlMs: number,
  opts: LeaseOptions,
): Promise<{ stop(): void; lastWritten(): number; lastLanded(): number }> {
  const { signal, log = silentLogger, pollMs = 1000 } = opts;
  const key = leaseKey(hostId, kind, id);
  const refresher = startLease(store, key, newLease(kind, id, ttlMs), log);
  try {
    await refresher.written;
    let told = false;
    for (;;) {
      const gc = (await readLeases(store, hostId, key, log, signal)).leases.filter((l) => l.kind === 'gc' && l.live);
      if (gc.length === 0) break;
      if (!told)
        log.info('waiting for the garbage collection of this host to finish', {
          hostId,
          [kind === 'backup' ? 'backupId' : 'readerId']: id,
          collections: gc.map((l) => l.id),
        });
      told = true;
      await sleep(pollMs, undefined, signal ? { signal } : {}).catch(() => {
        throw new CbrError('CBR_ERR_ABORTED', `${kind === 'backup' ? 'backup' : 'restore'} ${id} aborted while waiting for a garbage collection`);
      });
    }
  } catch (err) {
    refresher.stop();
    throw err;
  }
  return { stop: refresher.stop, lastWritten: refresher.lastWritten, lastLanded: refresher.lastLanded };
}

/** Deletes a backup's lease (after its record is written, or when the backup is given up). Idempotent. */
export async function releaseBackupLease(store: ObjectStore, hostId: string, backupId: string, signal?: AbortSignal): Promise<void> {
  const key = leaseKey(hostId, 'backup', backupId);
  refreshers.get(key)?.();
  await refreshing.get(key);
  await store.delete(key, signal ? { signal } : {});
}

/**
 * Deletes every blob of `hostId` that no record references, unless a backup of that host is running (its blobs
 * are not referenced yet): then it deletes nothing and says so. Killed midway it leaves only unreferenced blobs,
 * which the next run removes. `dryRun` counts without a lease and without deleting.
 * While it deletes it looks at the leases again every ttl/3 and every RELIST_EVERY deletes, and stops (skipped, with
 * what it freed so far) once a live backup or read lease appeared; and it stops with CBR_ERR_STORAGE_FAILED once its
 * own lease was last written half a ttl ago: a backup may take that lease for dead and reuse a blob it would delete.
 */
export async function collectGarbage(
  store: ObjectStore,
  hostId: string,
  opts: LeaseOptions & { dryRun?: boolean; concurrency?: number; graceMs?: number } = {},
): Promise<GcResult> {
  const { signal, log = silentLogger, dryRun = false, concurrency = 8, graceMs = blobGraceMs() } = opts;
  const ttlMs = opts.ttlMs ?? GC_LEASE_TTL_MS;
  const prefix = blobPrefix(hostId);
  const gcId = `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
  const key = leaseKey(hostId, 'gc', gcId);
  const refresher = dryRun ? null : startLease(store, key, newLease('gc', gcId, ttlMs), log);
  try {
    // The store's clock when the collection began: a dry run, which writes no lease, reads its own (local) clock.
    let storeNow = Date.now();
    if (refresher) {
      await refresher.written;
      const look = await othersRunning(store, hostId, key, log, signal);
      if (look.busy) return { deleted: 0, freedBytes: 0, skipped: look.busy };
      storeNow = look.storeNow;
    }
    let listedAt = mono();
    const referenced = await referencedBlobs(store, prefix, log, signal);
    const garbage: ObjectInfo[] = [];
    let young = 0;
    for await (const o of store.list(prefix, signal ? { signal } : {})) {
      if (!isBlobKeyUnder(o.key, prefix) || referenced.has(o.key)) continue;
      // Stored within the grace period (or of no known age): perhaps a running backup's, whose lease we misjudged.
      const modified = Date.parse(o.modified);
      if (!(modified > 0) || storeNow - modified < graceMs) young++;
      else garbage.push(o);
    }
    if (young > 0) log.info('unreferenced blobs younger than the grace period are kept', { hostId, young, graceMs });
    let deleted = 0;
    let freedBytes = 0;
    if (dryRun || !refresher) return { deleted: garbage.length, freedBytes: garbage.reduce((n, o) => n + o.size, 0) };
    let sinceListed = 0;
    let stopped: GcResult['skipped'];
    let looking: Promise<void> | null = null;
    // Before each delete: the leases looked at again when due (one look shared by every worker), and this one's own
    // lease still fresh. A backup that wrote its lease after our last look waits for us while our lease is live; half a
    // ttl of it is the margin for clocks that disagree and for deletes still in flight.
    const mayDelete = async (): Promise<boolean> => {
      if (!looking && !stopped && (sinceListed >= RELIST_EVERY || mono() - listedAt >= ttlMs / 3)) {
        looking = (async () => {
          sinceListed = 0;
          listedAt = mono();
          stopped = (await othersRunning(store, hostId, key, log, signal)).busy;
        })().finally(() => {
          looking = null;
        });
      }
      // No delete starts while a look is under way.
      if (looking) await looking;
      if (stopped) return false;
      const age = mono() - refresher.lastSucceeded();
      if (age >= ttlMs / 2) {
        throw new CbrError(
          'CBR_ERR_STORAGE_FAILED',
          `garbage collection of host ${hostId} stopped after ${deleted} deletes: its lease could not be refreshed for ${Math.round(age / 1000)} s, so a backup could take it for dead; the next delete or prune collects the rest`,
        );
      }
      sinceListed++;
      return true;
    };
    await inParallel(garbage, concurrency, async (o) => {
      if (!(await mayDelete())) return;
      await store.delete(o.key, signal ? { signal } : {});
      deleted++;
      freedBytes += o.size;
    });
    if (stopped) {
      log.info('garbage collection stopped: a backup or restore of this host started; a later delete frees the rest', {
        hostId,
        deleted,
        freedBytes,
        why: stopped,
      });
      return { deleted, freedBytes, skipped: stopped };
    }
    log.info('garbage collected', { hostId, deleted, freedBytes, kept: referenced.size });
    return { deleted, freedBytes };
  } finally {
    if (refresher) {
      refresher.stop();
      await refreshing.get(key);
      // Without the signal: an aborted collection still takes its lease away, or backups would wait out its ttl.
      await store.delete(key).catch((err: unknown) => log.warn('could not remove the garbage collection lease', { key, error: (err as Error).message }));
    }
  }
}

/**
 * A live backup or read lease of the host (logged), which a collection must not delete under (else undefined), and
 * the store's clock as of the collection's own lease `ownKey`.
 */
async function othersRunning(
  store: ObjectStore,
  hostId: string,
  ownKey: string,
  log: Logger,
  signal?: AbortSignal,
): Promise<{ busy: GcResult['skipped']; storeNow: number }> {
  const seen = await readLeases(store, hostId, ownKey, log, signal);
  const storeNow = seen.storeNow;
  const leases = seen.leases.filter((l) => l.live);
  const running = leases.filter((l) => l.kind === 'backup');
  if (running.length > 0) {
    log.info('garbage collection skipped: a backup of this host is running; a later delete frees the bytes', { hostId, backups: running.map((l) => l.id) });
    return { busy: 'backup-running', storeNow };
  }
  const reading = leases.filter((l) => l.kind === 'read');
  if (reading.length > 0) {
    log.info('garbage collection skipped: a restore is fetching blobs of this host; a later delete frees the bytes', {
      hostId,
      restores: reading.map((l) => l.id),
    });
    return { busy: 'restore-running', storeNow };
  }
  return { busy: undefined, storeNow };
}

function newLease(kind: LeaseKind, id: string, ttlMs: number): Lease {
  const now = new Date().toISOString();
  return { kind, id, host: hostname(), pid: process.pid, created: now, refreshed: now, ttlMs };
}

/**
 * Writes the lease now and again every ttl/3 until stopped. A failed refresh is logged; the next one may succeed.
 * `lastSucceeded()` is when the last successful write began (0 before the first); `lastWritten()` and
 * `lastLanded()` are when it began and when it landed, or 0 once the lease may have looked dead. All three are times
 * of this process's monotonic clock.
 */
function startLease(
  store: ObjectStore,
  key: string,
  lease: Lease,
  log: Logger,
): { written: Promise<void>; stop(): void; lastWritten(): number; lastLanded(): number; lastSucceeded(): number } {
  const ctl = new AbortController();
  const half = lease.ttlMs / 2;
  let lastStart = 0;
  let landed = 0;
  let unbroken = true;
  const write = async () => {
    const at = mono();
    lease.refreshed = new Date().toISOString();
    const body = Readable.from([Buffer.from(`${JSON.stringify(lease)}\n`)]);
    await store.put(key, body, { contentType: 'application/json', signal: ctl.signal });
    const done = mono();
    // Until this write landed the stored lease was the one before, dated when that write began: measured from there
    // to this landing (not to this start: a put that starts on time may land late), more than half the ttl means
    // the lease may have looked dead in between (the other half is the margin for clocks that disagree), so it no
    // longer counts as held without a break.
    if (lastStart > 0 && done - lastStart > half) unbroken = false;
    if (at >= lastStart) {
      lastStart = at;
      landed = done;
    }
  };
  const track = (p: Promise<void>) => {
    const settled = p.catch(() => {});
    refreshing.set(key, settled);
    void settled.finally(() => {
      if (refreshing.get(key) === settled) refreshing.delete(key);
    });
    return p;
  };
  const written = track(write());
  const timer = setInterval(
    () => {
      if (refreshing.has(key)) return;
      track(write()).catch((err: unknown) => {
        if (!ctl.signal.aborted) log.warn('could not refresh a lease', { key, error: (err as Error).message });
      });
    },
    Math.max(1, Math.floor(lease.ttlMs / 3)),
  );
  timer.unref();
  const stop = () => {
    clearInterval(timer);
    ctl.abort();
    if (refreshers.get(key) === stop) refreshers.delete(key);
  };
  refreshers.get(key)?.();
  refreshers.set(key, stop);
  // A refresh still failing (or not yet landed) half a ttl after the last good one began: the lease may look dead now.
  const held = () => unbroken && lastStart > 0 && mono() - lastStart <= half;
  return {
    written,
    stop,
    lastWritten: () => (held() ? lastStart : 0),
    lastLanded: () => (held() ? landed : 0),
    lastSucceeded: () => lastStart,
  };
}

/**
 * The leases of a host, each judged live or dead on the store's clock: `storeNow` is the store-side modified time of
 * the reader's own lease `ownKey` (written before it lists; a little behind the store's true now, which errs towards
 * live), and a lease is live while storeNow minus its own store-side modified time is under its ttl. An unreadable
 * lease counts as live for the default backup ttl.
 */
async function readLeases(
  store: ObjectStore,
  hostId: string,
  ownKey: string,
  log: Logger,
  signal?: AbortSignal,
): Promise<{ leases: (Lease & { live: boolean })[]; storeNow: number }> {
  const prefix = leasePrefix(hostId);
  const infos: ObjectInfo[] = [];
  for await (const o of store.list(prefix, signal ? { signal } : {})) infos.push(o);
  // A listing that does not show our own lease yet (Swift's container listings may lag): its HEAD does.
  const own = infos.find((o) => o.key === ownKey) ?? (await store.head(ownKey, signal ? { signal } : {}));
  const now = own ? Date.parse(own.modified) : Number.NaN;
  if (!(now > 0)) {
    throw new CbrError('CBR_ERR_STORAGE_FAILED', `lease ${ownKey} is not in the store right after it was written: cannot tell which leases are live`);
  }
  const out: (Lease & { live: boolean })[] = [];
  for (const info of infos) {
    const name = info.key.slice(prefix.length);
    const kind: LeaseKind | null = name.startsWith('backup-') ? 'backup' : name.startsWith('gc-') ? 'gc' : name.startsWith('read-') ? 'read' : null;
    if (!kind) continue;
    let lease: Partial<Lease> = {};
    try {
      const tooLarge = () => new SyntaxError(`larger than ${MAX_SMALL_BYTES} bytes`);
      lease = JSON.parse((await readSmall(store, info.key, MAX_SMALL_BYTES, tooLarge, signal)).toString('utf8')) as Partial<Lease>;
    } catch (err) {
      if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') continue;
      if (err instanceof CbrError) throw err;
      log.warn('unreadable lease: taken as live', { key: info.key });
    }
    const ttl = typeof lease.ttlMs === 'number' && lease.ttlMs > 0 ? Math.min(lease.ttlMs, MAX_TTL_MS) : BACKUP_LEASE_TTL_MS;
    // The store's clock only: the holder's stamp is on another clock. Without a store time, the holder's (or live).
    let stored = Date.parse(info.modified);
    // A listing may lag behind the lease's last refresh (a loaded Swift's container listings): before a lease is
    // taken for dead, its HEAD (answered by the object itself, on the store's clock too) has the last word.
    if (stored > 0 && now - stored >= ttl) {
      const head = await store.head(info.key, signal ? { signal } : {});
      if (!head) continue;
      stored = Math.max(stored, Date.parse(head.modified) || 0);
    }
    const refreshed = stored > 0 ? stored : Date.parse(String(lease.refreshed)) || now;
    const id = typeof lease.id === 'string' ? lease.id : name.slice(kind.length + 1, -'.json'.length);
    out.push({
      kind,
      id,
      host: String(lease.host ?? ''),
      pid: Number(lease.pid ?? 0),
      created: String(lease.created ?? ''),
      refreshed: new Date(refreshed).toISOString(),
      ttlMs: ttl,
      live: now - refreshed < ttl,
    });
  }
  return { leases: out, storeNow: now };
}

/**
 * Every blob key under `prefix` that any record names, whatever its host or format: a record read as plain JSON,
 * so one the schema refuses still keeps its blobs. A record that cannot be read stops the collection (a blob
 * deleted by mistake is a broken backup); one that is not JSON restores nothing and is passed over.
 */
async function referencedBlobs(store: ObjectStore, prefix: string, log: Logger, signal?: AbortSignal): Promise<Set<string>> {
  const keys: string[] = [];
  for await (const o of store.list('', signal ? { signal } : {})) {
    const [id, name, ...rest] = o.key.split('/');
    if (id && name === RECORD_NAME && rest.length === 0) keys.push(o.key);
  }
  const referenced = new Set<string>();
  await inParallel(keys, 8, async (key) => {
    let text: string;
    try {
      // Too large to read is not "references nothing": it stops the collection like any unreadable record.
      const tooLarge = (max: number) => new CbrError('CBR_ERR_RECORD_INVALID', `record ${key} is larger than ${max} bytes: collection stopped`);
      text = (await readSmall(store, key, MAX_RECORD_BYTES, tooLarge, signal)).toString('utf8');
    } catch (err) {
      if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') return;
      throw err;
    }
    let record: { files?: unknown };
    try {
      record = JSON.parse(text) as { files?: unknown };
    } catch {
      log.warn('a record that is not JSON references no blob', { key });
      return;
    }
    if (!Array.isArray(record?.files)) return;
    for (const f of record.files as { blob?: unknown }[]) if (typeof f?.blob === 'string' && f.blob.startsWith(prefix)) referenced.add(f.blob);
  });
  return referenced;
}

/** Runs `fn` on every item, at most `limit` at once; the first failure stops new work and is thrown. */
async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
}
