import { join, resolve } from 'node:path';
import { CbrError } from '../core/errors.ts';
import { createLogger, type Logger } from '../core/log.ts';
import { cbrHome } from '../core/paths.ts';
import { type WorkflowEvent, WorkflowRuntime } from '../runtime/runtime.ts';
import { StateDb } from '../state/stateDb.ts';
import { openStore } from '../storage/open.ts';
import { DEFAULT_CONTAINER, type ObjectStore, type StorageConfig } from '../storage/port.ts';
import type { CliIO } from './io.ts';
import { ProgressBar } from './progress.ts';

/** Options every storage-touching command takes. */
export const storageOptions = {
  storage: { type: 'string' },
  'storage-root': { type: 'string' },
  container: { type: 'string' },
  'swift-auth-url': { type: 'string' },
  'swift-auth-version': { type: 'string' },
  'swift-credentials-file': { type: 'string' },
  'swift-project': { type: 'string' },
  'swift-region': { type: 'string' },
  'swift-interface': { type: 'string' },
  'segment-size': { type: 'string' },
  's3-endpoint': { type: 'string' },
  's3-region': { type: 'string' },
  's3-credentials-file': { type: 'string' },
  's3-part-size': { type: 'string' },
} as const;

type StorageValues = { [K in keyof typeof storageOptions]?: string | undefined };

export const commonOptions = {
  json: { type: 'boolean', default: false },
  ...storageOptions,
} as const;

/**
 * --storage local (default) keeps backups under --storage-root (default $CBR_STORAGE_ROOT or
 * $CBR_HOME/storage); --storage swift talks to Swift (--swift-auth-url, --swift-credentials-file, ... or the
 * CBR_SWIFT_* variables). The container is `database_backups` unless --container says otherwise.
 */
export function storageConfig(values: StorageValues, env: NodeJS.ProcessEnv): StorageConfig {
  const driver = values.storage ?? env['CBR_STORAGE'] ?? 'local';
  const container = values.container ?? env['CBR_CONTAINER'] ?? DEFAULT_CONTAINER;
  if (driver === 'local') {
    return { driver: 'local', root: values['storage-root'] ?? env['CBR_STORAGE_ROOT'] ?? join(cbrHome(env), 'storage'), container };
  }
  if (driver === 'swift') {
    const authUrl = values['swift-auth-url'] ?? env['CBR_SWIFT_AUTH_URL'];
    const credentialsFile = values['swift-credentials-file'] ?? env['CBR_SWIFT_CREDENTIALS_FILE'];
    if (!authUrl || !credentialsFile) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--storage swift needs --swift-auth-url and --swift-credentials-file');
    const version = Number(values['swift-auth-version'] ?? env['CBR_SWIFT_AUTH_VERSION'] ?? (/\/v3\/?$/.test(authUrl) ? 3 : 1));
    if (version !== 1 && version !== 3) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--swift-auth-version must be 1 or 3');
    const iface = values['swift-interface'] ?? env['CBR_SWIFT_INTERFACE'];
    if (iface && !['public', 'internal', 'admin'].includes(iface))
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--swift-interface must be public, internal or admin');
    const segment = values['segment-size'] ?? env['CBR_SWIFT_SEGMENT_SIZE'];
    const project = values['swift-project'] ?? env['CBR_SWIFT_PROJECT'];
    const region = values['swift-region'] ?? env['CBR_SWIFT_REGION'];
    return {
      driver: 'swift',
      authUrl,
      authVersion: version,
      credentialsFile: resolve(credentialsFile),
      container,
      ...(project ? { projectName: project } : {}),
      ...(region ? { region } : {}),
      ...(iface ? { interface: iface as 'public' | 'internal' | 'admin' } : {}),
      ...(segment ? { segmentSize: parseSize(segment) } : {}),
    };
  }
  if (driver === 's3') {
    const credentialsFile = values['s3-credentials-file'] ?? env['CBR_S3_CREDENTIALS_FILE'];
    if (!credentialsFile) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--storage s3 needs --s3-credentials-file');
    const endpoint = values['s3-endpoint'] ?? env['CBR_S3_ENDPOINT'];
    const part = values['s3-part-size'] ?? env['CBR_S3_PART_SIZE'];
    const partSize = part ? parseSize(part) : undefined;
    if (partSize !== undefined && partSize < 5 * 2 ** 20) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--s3-part-size must be at least 5M');
    return {
      driver: 's3',
      container,
      region: values['s3-region'] ?? env['CBR_S3_REGION'] ?? 'us-east-1',
      credentialsFile: resolve(credentialsFile),
      ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
      ...(partSize ? { partSize } : {}),
    };
  }
  throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `unknown --storage ${JSON.stringify(driver)} (local, swift, s3)`);
}

/** "1G", "512M", "5242880". */
export function parseSize(text: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(text.trim());
  if (!m) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `cannot parse size ${JSON.stringify(text)}`);
  const unit = (m[2] ?? '').toUpperCase()[0];
  return Number(m[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1);
}

export function openStorage(values: StorageValues, env: NodeJS.ProcessEnv): ObjectStore {
  return openStore(storageConfig(values, env));
}

export function stateDbPath(env: NodeJS.ProcessEnv): string {
  return env['CBR_STATE_DB'] ?? join(cbrHome(env), 'state.db');
}

export function cliLogger(io: CliIO): Logger {
  return createLogger({ level: (io.env['CBR_LOG_LEVEL'] as 'debug' | 'info' | 'warn' | 'error') ?? 'warn', sink: (l) => io.stderr(`${l}\n`) });
}

/** A runtime for local mode: the workflow runs in this process; progress goes to a bar on a TTY. */
export function localRuntime(io: CliIO, json: boolean): { runtime: WorkflowRuntime; state: StateDb; bar: ProgressBar | null } {
  const state = new StateDb(stateDbPath(io.env));
  const bar = io.isTTY && !json ? new ProgressBar(io.stderr) : null;
  const onEvent = (e: WorkflowEvent) => {
    if (!bar) return;
    if (e.type === 'state') bar.step(e.state);
    else bar.update(e.progress.bytes, e.progress.totalBytes);
  };
  const runtime = new WorkflowRuntime({ stateDb: state, env: io.env, log: cliLogger(io), onEvent });
  return { runtime, state, bar };
}
