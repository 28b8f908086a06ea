import { COMPRESSIONS, type Compression } from '../archive/format.ts';
import { loadProfile, type Profile } from '../cassandra/profile.ts';
import { checkId, listRecords, readRecord } from '../catalog/catalog.ts';
import { CbrError } from '../core/errors.ts';
import type { BackupInput } from '../machines/backup.machine.ts';
import { openStore } from '../storage/open.ts';
import type { ObjectStore, StorageConfig } from '../storage/port.ts';
import { type KeySource, keySource } from './keySource.ts';

/**
 * A backup as it is asked for, by `cbr backup-create`'s options or a `backup.create` payload on the bus, turned
 * into the backup machine's input in one place: the same checks, defaults and key source wherever it comes from.
 */
export interface BackupRequest {
  name: string;
  description?: string | undefined;
  compression?: string | undefined;
  encryptKeyFile?: string | undefined;
  encryptKeyEnv?: string | undefined;
  minFreePercent?: number | undefined;
  /** Bytes per second of archive output; absent or null for no limit. */
  rateLimit?: number | null | undefined;
  /** `full` or `incremental`; absent: the profile's `backupStrategy`, then CBR_BACKUP_STRATEGY, then full. */
  strategy?: string | undefined;
  /** `--incremental`: the same as strategy incremental (the CLI's short form; not a payload field). */
  incremental?: boolean | undefined;
  /** The backup this one follows (implies incremental); absent: the host's latest COMPLETED backup. */
  parent?: string | undefined;
  /** Files in flight at once (incremental). */
  concurrency?: number | undefined;
  /** A cluster backup's part (bus only): the coordinator's id, and the hold after the snapshot until released. */
  clusterBackupId?: string | undefined;
  hold?: boolean | undefined;
  holdTimeoutMs?: number | undefined;
}

export const STRATEGIES = ['full', 'incremental'] as const;
export type BackupStrategy = (typeof STRATEGIES)[number];
export const DEFAULT_COMPRESSION: Compression = 'zstd';
export const DEFAULT_MIN_FREE_PERCENT = 10;
export const DEFAULT_CONCURRENCY = 4;
export const MAX_CONCURRENCY = 64;
export const STRATEGY_ENV = 'CBR_BACKUP_STRATEGY';

export interface CheckedBackupRequest {
  name: string;
  description: string;
  compression: Compression;
  keySource: KeySource;
  minFreePercent: number;
  rateLimit: number | null;
  /** As asked (a flag or the payload); undefined leaves the choice to the profile and the environment. */
  strategy: BackupStrategy | undefined;
  parent: string | undefined;
  concurrency: number;
}

/** The request checked against the record's schema before anything runs (a record it would refuse is never written), defaults applied. */
export function checkBackupRequest(r: BackupRequest): CheckedBackupRequest {
  if (r.name.length > 128 || /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(r.name))
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'the backup name must be one line of at most 128 characters');
  const description = r.description ?? '';
  if (description.length > 1024 || /[\u0000-\u0008\u000b-\u001f\u007f]/.test(description))
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'the description must be text of at most 1,024 characters');
  const compression = (r.compression ?? DEFAULT_COMPRESSION) as Compression;
  if (!COMPRESSIONS.includes(compression)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--compression must be one of ${COMPRESSIONS.join(', ')}`);
  const key = keySource(r.encryptKeyFile, r.encryptKeyEnv, 'encrypt');
  const minFreePercent = r.minFreePercent ?? DEFAULT_MIN_FREE_PERCENT;
  if (!Number.isFinite(minFreePercent) || minFreePercent < 0 || minFreePercent > 100)
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--min-free-percent must be 0..100');
  const concurrency = r.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY)
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--concurrency must be a whole number from 1 to ${MAX_CONCURRENCY}`);
  return {
    name: r.name,
    description,
    compression,
    keySource: key,
    minFreePercent,
    rateLimit: r.rateLimit ?? null,
    ...askedStrategy(r),
    concurrency,
  };
}

/** --strategy, --incremental and --parent as one choice; they may repeat each other, never contradict. */
function askedStrategy(r: BackupRequest): { strategy: BackupStrategy | undefined; parent: string | undefined } {
  if (r.strategy !== undefined && !(STRATEGIES as readonly string[]).includes(r.strategy))
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--strategy must be one of ${STRATEGIES.join(', ')}`);
  const parent = r.parent === undefined ? undefined : checkId(r.parent);
  if (r.strategy === 'full' && (r.incremental || parent !== undefined))
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--strategy full contradicts ${r.incremental ? '--incremental' : '--parent'}`);
  const strategy = r.incremental || parent !== undefined ? 'incremental' : (r.strategy as BackupStrategy | undefined);
  return { strategy, parent };
}

/** The `backup.create` payload for an agent: the checked request, key file paths absolute (they are paths on the agent's host). */
export function backupPayload(c: CheckedBackupRequest) {
  return {
    name: c.name,
    ...(c.description ? { description: c.description } : {}),
    compression: c.compression,
    ...(c.keySource?.file ? { encryptKeyFile: c.keySource.file } : {}),
    ...(c.keySource?.env ? { encryptKeyEnv: c.keySource.env } : {}),
    minFreePercent: c.minFreePercent,
    ...(c.rateLimit ? { rateLimit: c.rateLimit } : {}),
    // Only what was asked: the agent's profile and environment choose otherwise, and it finds the parent itself.
    ...(c.strategy ? { strategy: c.strategy } : {}),
    ...(c.parent ? { parent: c.parent } : {}),
    ...(c.concurrency !== DEFAULT_CONCURRENCY ? { concurrency: c.concurrency } : {}),
  };
}

/**
 * The strategy in force, by precedence: as asked (flag or payload) > the profile's `backupStrategy` >
 * CBR_BACKUP_STRATEGY (of the process that runs the backup) > full.
 */
export function chooseStrategy(asked: BackupStrategy | undefined, profile: BackupStrategy | undefined, env: NodeJS.ProcessEnv): BackupStrategy {
  if (asked) return asked;
  if (profile) return profile;
  const fromEnv = env[STRATEGY_ENV];
  if (fromEnv === undefined || fromEnv === '') return 'full';
  if (!(STRATEGIES as readonly string[]).includes(fromEnv))
    throw new CbrError('CBR_ERR_CONFIG', `${STRATEGY_ENV} must be one of ${STRATEGIES.join(', ')}, not ${JSON.stringify(fromEnv.slice(0, 40))}`);
  return fromEnv as BackupStrategy;
}

/**
 * The parent of an incremental backup of `hostId`: the one asked for, which must be a COMPLETED backup of that
 * host (CBR_ERR_BACKUP_NOT_FOUND, or CBR_ERR_INVALID_ARGUMENT for another host's), else the host's latest
 * COMPLETED backup, else null (the first incremental stores every file).
 */
export async function findParent(store: ObjectStore, hostId: string, asked: string | undefined, signal?: AbortSignal): Promise<string | null> {
  if (asked !== undefined) {
    const parent = await readRecord(store, asked, signal);
    if (parent.hostId !== hostId)
      throw new CbrError(
        'CBR_ERR_INVALID_ARGUMENT',
        `--parent ${asked} is a backup of host ${parent.hostId}, not of ${hostId}: a parent must be of the same node`,
      );
    return parent.id;
  }
  const own = (await listRecords(store, signal)).filter((r) => r.hostId === hostId);
  return own.at(-1)?.id ?? null;
}

/** Where and as what the backup runs: its id (the workflow's and the backup's), the node's profile, the storage. */
export interface BackupTarget {
  id: string;
  profilePath: string;
  storage: StorageConfig;
}

/**
 * The backup machine's input, the strategy and parent resolved here, before anything runs, so a resumed
 * backup keeps the parent it started with. `given` spares loading what the caller already has (and lets tests
 * hand in a profile and a store). A full backup reads neither: an unreadable profile is then the verify step's
 * to report, as before strategies existed.
 */
export async function backupInput(
  request: BackupRequest,
  target: BackupTarget,
  env: NodeJS.ProcessEnv,
  given: { profile?: Profile; store?: ObjectStore; signal?: AbortSignal } = {},
): Promise<BackupInput> {
  const c = checkBackupRequest(request);
  let profile = given.profile;
  let profileError: unknown = null;
  if (!profile && !c.strategy) {
    profile = await loadProfile(target.profilePath).catch((err: unknown) => {
      profileError = err;
      return undefined;
    });
  }
  const strategy = chooseStrategy(c.strategy, profile?.backupStrategy, env);
  let parent: string | null = null;
  if (strategy === 'incremental') {
    if (profileError) throw profileError;
    profile ??= await loadProfile(target.profilePath);
    parent = await findParent(given.store ?? openStore(target.storage), profile.hostId, c.parent, given.signal);
  }
  return {
    workflowId: target.id,
    backupId: target.id,
    name: c.name,
    description: c.description,
    profilePath: target.profilePath,
    storage: target.storage,
    compression: c.compression,
    keySource: c.keySource,
    minFreePercent: c.minFreePercent,
    startedAt: new Date().toISOString(),
    rateLimit: c.rateLimit,
    strategy,
    parent,
    concurrency: c.concurrency,
    ...(request.clusterBackupId ? { clusterBackupId: request.clusterBackupId } : {}),
    ...(request.hold ? { hold: true } : {}),
    ...(request.hold && request.holdTimeoutMs ? { holdTimeoutMs: request.holdTimeoutMs } : {}),
  };
}
