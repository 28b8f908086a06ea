import { join } from 'node:path';
import { CbrError } from '../errors.ts';
import { cbrHome } from '../home.ts';
import { createLogger, type Logger } from '../log.ts';
import { type WorkflowEvent, WorkflowRuntime } from '../runtime/runtime.ts';
import { StateStore } from '../state/store.ts';
import { openStore } from '../storage/index.ts';
import { DEFAULT_CONTAINER, type ObjectStore, type StorageConfig } from '../storage/types.ts';
import type { CliIO } from './io.ts';
import { ProgressBar } from './progress.ts';

/** Options every storage-touching command takes. */
export const storageOptions = {
  storage: { type: 'string' },
  'storage-root': { type: 'string' },
  container: { type: 'string' },
} as const;

export const commonOptions = {
  json: { type: 'boolean', default: false },
  ...storageOptions,
} as const;

/**
 * --storage local (default) keeps backups under --storage-root (default $CBR_STORAGE_ROOT or
 * $CBR_HOME/storage), container `database_backups`.
 */
export function storageConfig(values: { storage?: string | undefined; 'storage-root'?: string | undefined; container?: string | undefined }, env: NodeJS.ProcessEnv): StorageConfig {
  const driver = values.storage ?? env['CBR_STORAGE'] ?? 'local';
  if (driver !== 'local') throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `unknown --storage ${JSON.stringify(driver)} (local)`);
  return {
    driver: 'local',
    root: values['storage-root'] ?? env['CBR_STORAGE_ROOT'] ?? join(cbrHome(env), 'storage'),
    container: values.container ?? DEFAULT_CONTAINER,
  };
}

export function openStorage(values: Parameters<typeof storageConfig>[0], env: NodeJS.ProcessEnv): ObjectStore {
  return openStore(storageConfig(values, env));
}

export function stateDbPath(env: NodeJS.ProcessEnv): string {
  return env['CBR_STATE_DB'] ?? join(cbrHome(env), 'state.db');
}

export function cliLogger(io: CliIO): Logger {
  return createLogger({ level: (io.env['CBR_LOG_LEVEL'] as 'debug' | 'info' | 'warn' | 'error') ?? 'warn', sink: (l) => io.stderr(`${l}\n`) });
}

/** A runtime for local mode: the workflow runs in this process; progress goes to a bar on a TTY. */
export function localRuntime(io: CliIO, json: boolean): { runtime: WorkflowRuntime; state: StateStore; bar: ProgressBar | null } {
  const state = new StateStore(stateDbPath(io.env));
  const bar = io.isTTY && !json ? new ProgressBar(io.stderr) : null;
  const onEvent = (e: WorkflowEvent) => {
    if (!bar) return;
    if (e.type === 'state') bar.step(e.state);
    else bar.update(e.progress.bytes, e.progress.totalBytes);
  };
  const runtime = new WorkflowRuntime({ store: state, env: io.env, log: cliLogger(io), onEvent });
  return { runtime, state, bar };
}
