import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { checkClusterName } from '../cassandra/yaml.ts';
import { checkId } from '../catalog/catalog.ts';
import { writeFileAtomic } from '../core/atomicWrite.ts';
import { CbrError } from '../core/errors.ts';
import { INSTANCE_NAME_RE, ROLE_RE } from '../core/ids.ts';
import { cbrHome } from '../core/paths.ts';
import type { RestoreInput } from '../machines/restore.machine.ts';
import type { StorageConfig } from '../storage/port.ts';
import { type KeySource, keySource } from './keySource.ts';

/**
 * A restore as it is asked for, by `cbr create --backup`'s options or a `restore.create` payload on the bus,
 * turned into the restore machine's input in one place: the same checks, defaults, key source and password file.
 */
export interface RestoreRequest {
  backupId: string;
  instanceName: string;
  /** Default: the instance name. */
  clusterName?: string | undefined;
  /** A file holding the new superuser password; default: one generated under $CBR_HOME/secrets. */
  passwordFile?: string | undefined;
  superuser?: string | undefined;
  decryptKeyFile?: string | undefined;
  decryptKeyEnv?: string | undefined;
  force?: boolean | undefined;
}

export const DEFAULT_SUPERUSER = 'cassandra';

export interface CheckedRestoreRequest {
  backupId: string;
  instanceName: string;
  clusterName: string;
  /** Absolute; null when the password is to be generated. */
  passwordFile: string | null;
  superuser: string;
  keySource: KeySource;
  force: boolean;
}

/** The request checked before anything is touched (a sandbox made, a password written), defaults applied. */
export function checkRestoreRequest(r: RestoreRequest): CheckedRestoreRequest {
  const backupId = checkId(r.backupId);
  if (!INSTANCE_NAME_RE.test(r.instanceName))
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `the instance name ${JSON.stringify(r.instanceName.slice(0, 80))} does not match ${INSTANCE_NAME_RE}`);
  const superuser = r.superuser ?? DEFAULT_SUPERUSER;
  if (!ROLE_RE.test(superuser)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--superuser must be a plain role name');
  const key = keySource(r.decryptKeyFile, r.decryptKeyEnv, 'decrypt');
  const clusterName = checkClusterName(r.clusterName ?? r.instanceName);
  return {
    backupId,
    instanceName: r.instanceName,
    clusterName,
    passwordFile: r.passwordFile ? resolve(r.passwordFile) : null,
    superuser,
    keySource: key,
    force: r.force ?? false,
  };
}

/** The `restore.create` payload for an agent, as asked (the agent checks it); file paths absolute (they are paths on the agent's host). */
export function restorePayload(r: RestoreRequest) {
  return {
    backupId: r.backupId,
    instanceName: r.instanceName,
    ...(r.clusterName ? { clusterName: r.clusterName } : {}),
    ...(r.passwordFile ? { passwordFile: resolve(r.passwordFile) } : {}),
    superuser: r.superuser ?? DEFAULT_SUPERUSER,
    ...(r.decryptKeyFile ? { decryptKeyFile: resolve(r.decryptKeyFile) } : {}),
    ...(r.decryptKeyEnv ? { decryptKeyEnv: r.decryptKeyEnv } : {}),
    force: r.force ?? false,
  };
}

/** Where the restore runs: its workflow id, the target node's profile, the storage the backup is in. */
export interface RestoreTarget {
  id: string;
  profilePath: string;
  storage: StorageConfig;
}

/**
 * The restore machine's input. Without a password file, a new password is generated into
 * `$CBR_HOME/secrets/<instance>-<superuser>-<workflow id>.password` (0600, in a 0700 folder): the workflow and its
 * persisted state only ever hold the path. One file per workflow: a second restore of the same instance (refused
 * later as a conflict) never overwrites the password a running restore is setting.
 */
export async function restoreInput(
  request: RestoreRequest,
  target: RestoreTarget,
  env: NodeJS.ProcessEnv,
): Promise<{ input: RestoreInput; passwordGenerated: boolean }> {
  const c = checkRestoreRequest(request);
  const passwordFile = c.passwordFile ?? (await generatePassword(`${c.instanceName}-${c.superuser}-${target.id}`, env));
  return {
    input: {
      workflowId: target.id,
      backupId: c.backupId,
      instanceName: c.instanceName,
      clusterName: c.clusterName,
      profilePath: target.profilePath,
      storage: target.storage,
      passwordFile,
      superuser: c.superuser,
      keySource: c.keySource,
      force: c.force,
      startedAt: new Date().toISOString(),
    },
    passwordGenerated: c.passwordFile === null,
  };
}

export async function generatePassword(name: string, env: NodeJS.ProcessEnv): Promise<string> {
  const dir = join(cbrHome(env), 'secrets');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${name}.password`);
  await writeFileAtomic(file, `${randomBytes(18).toString('base64url')}\n`, 0o600);
  return file;
}
