import { hostname } from 'node:os';
import { join } from 'node:path';
import { loadProfile } from '../cassandra/profile.ts';
import { CbrError } from '../core/errors.ts';
import { createLogger, type Logger } from '../core/log.ts';
import { cbrHome } from '../core/paths.ts';
import type { OutcomeSample } from '../metrics/metrics.ts';
import { type Running, type WorkflowEvent, type WorkflowOutcome, WorkflowRuntime } from '../runtime/runtime.ts';
import { StateDb, type WorkflowKind } from '../state/stateDb.ts';
import { openStore } from '../storage/open.ts';
import type { ObjectStore } from '../storage/port.ts';
import type { CliIO } from './io.ts';
import { ProgressBar } from './progress.ts';
import { onInterrupt } from './signals.ts';
import { type StorageValues, storageConfig } from './storageOptions.ts';

export { metricsOptions, parseSize, type StorageValues, storageConfig, storageOptions } from './storageOptions.ts';

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
export function localRuntime(
  io: CliIO,
  json: boolean,
  listener?: (e: WorkflowEvent) => void,
): { runtime: WorkflowRuntime; state: StateDb; bar: ProgressBar | null } {
  const state = new StateDb(stateDbPath(io.env));
  const bar = io.isTTY && !json ? new ProgressBar(io.stderr) : null;
  const onEvent = (e: WorkflowEvent) => {
    listener?.(e);
    if (!bar) return;
    if (e.type === 'state') bar.step(e.state);
    else bar.update(e.progress.bytes, e.progress.totalBytes);
  };
  const runtime = new WorkflowRuntime({ stateDb: state, env: io.env, log: cliLogger(io), onEvent });
  return { runtime, state, bar };
}

/**
 * Runs one workflow in this process to its end, drawing its progress on a TTY. Ctrl-C or SIGTERM cancels it: the
 * machine compensates (backup) or rolls the target back (restore) before it ends.
 */
export async function runLocally<K extends WorkflowKind>(
  io: CliIO,
  json: boolean,
  workflowId: string,
  start: (runtime: WorkflowRuntime) => Promise<Running<K> | null>,
  opts: { metricsTextfile?: string | undefined } = {},
): Promise<WorkflowOutcome<K>> {
  const textfile = opts.metricsTextfile ? textfileRecorder(opts.metricsTextfile) : null;
  const { runtime, state, bar } = localRuntime(io, json, textfile?.onEvent);
  try {
    const running = await start(runtime);
    if (!running) throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `a workflow with id ${workflowId} already exists`);
    const dispose = onInterrupt(() => runtime.cancel(workflowId, 'interrupted'));
    return await running.done.finally(() => {
      dispose();
      bar?.end();
    });
  } finally {
    await textfile?.write(state, io);
    state.close();
  }
}

/** Records a run that starts no workflow (verify, drill) in the textfile, if one is asked for; a failure to write is a warning. */
export async function recordRun(io: CliIO, path: string | undefined, sample: OutcomeSample): Promise<void> {
  if (!path) return;
  const { writeTextfile } = await import('../metrics/textfile.ts');
  await writeTextfile(path, sample).catch((err: Error) => io.stderr(`warning: cannot write the metrics textfile ${path}: ${err.message}\n`));
}

/**
 * Collects the final event of each workflow this process runs, then writes them to a node_exporter textfile
 * (src/metrics/textfile.ts). The host label is the node profile's host id, as the agent's. A file that cannot be
 * written is a warning: the workflow's own outcome (and exit status) stands.
 */
export function textfileRecorder(path: string): { onEvent: (e: WorkflowEvent) => void; write: (state: StateDb, io: CliIO) => Promise<void> } {
  const ended: { event: Extract<WorkflowEvent, { type: 'state' }>; restoreBytes: number }[] = [];
  const restoreBytes = new Map<string, number>();
  return {
    onEvent: (e) => {
      if (e.type === 'progress') {
        if (e.kind === 'restore') restoreBytes.set(e.workflowId, e.progress.bytes);
      } else if (e.status === 'done') {
        ended.push({ event: e, restoreBytes: restoreBytes.get(e.workflowId) ?? 0 });
      }
    },
    write: async (state, io) => {
      if (ended.length === 0) return;
      // The metrics library loads only when there is something to write.
      const [{ outcomeSample }, { writeTextfile }] = await Promise.all([import('../metrics/metrics.ts'), import('../metrics/textfile.ts')]);
      for (const { event, restoreBytes: bytes } of ended.splice(0)) {
        try {
          const row = state.get(event.workflowId);
          const profilePath = (row?.input as { profilePath?: string } | undefined)?.profilePath;
          const host = profilePath ? (await loadProfile(profilePath).catch(() => null))?.hostId : undefined;
          await writeTextfile(path, outcomeSample(event, row, host ?? hostname(), bytes));
        } catch (err) {
          io.stderr(`warning: cannot write the metrics textfile ${path}: ${(err as Error).message}\n`);
        }
      }
    },
  };
}
