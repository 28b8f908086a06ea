import { COMPRESSIONS, type Compression } from '../archive/format.ts';
import { CbrError } from '../core/errors.ts';
import type { BackupInput } from '../machines/backup.machine.ts';
import type { StorageConfig } from '../storage/port.ts';
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
}

export const DEFAULT_COMPRESSION: Compression = 'zstd';
export const DEFAULT_MIN_FREE_PERCENT = 10;

export interface CheckedBackupRequest {
  name: string;
  description: string;
  compression: Compression;
  keySource: KeySource;
  minFreePercent: number;
  rateLimit: number | null;
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
  return { name: r.name, description, compression, keySource: key, minFreePercent, rateLimit: r.rateLimit ?? null };
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
  };
}

/** Where and as what the backup runs: its id (the workflow's and the backup's), the node's profile, the storage. */
export interface BackupTarget {
  id: string;
  profilePath: string;
  storage: StorageConfig;
}

export function backupInput(request: BackupRequest, target: BackupTarget): BackupInput {
  const c = checkBackupRequest(request);
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
  };
}
