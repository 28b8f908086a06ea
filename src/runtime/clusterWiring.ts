import { connectCql } from '../cassandra/cql.ts';
import { loadCredentials, loadProfile } from '../cassandra/profile.ts';
import type { Logger } from '../core/log.ts';
import type { ClusterBackupInput } from '../machines/clusterBackup.machine.ts';
import type { ClusterDeps, HostBus } from '../steps/cluster/deps.ts';
import { createClusterBackupSteps } from '../steps/cluster/steps.ts';
import { openStore } from '../storage/open.ts';
import type { StorageConfig } from '../storage/port.ts';
import type { ClusterStepsFactory } from './runtime.ts';

/** The coordinator's bus port, for the bus layer to implement (src/bus/hostBus.ts). */
export type { HostBus, HostReply } from '../steps/cluster/deps.ts';

/** Env knobs of the coordinator (operators rarely need them; tests shorten them). */
const POLL_ENV = 'CBR_CLUSTER_POLL_MS';
const BARRIER_ENV = 'CBR_CLUSTER_BARRIER_TIMEOUT_MS';
const ABORT_ENV = 'CBR_CLUSTER_ABORT_TIMEOUT_MS';
/** Test-only: a file naming coordinator steps (one a line) that wait while it names them (see ClusterDeps.pauseFile). */
const PAUSE_ENV = 'CBR_TEST_CLUSTER_PAUSE_FILE';

function ms(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const v = Number(env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

/**
 * The coordinator's steps as an agent runs them: the agent's bus (a session per step), its storage, and CQL on its
 * own node for the ring and the schema. Built from the agent's options and the persisted input alone.
 */
export function clusterSteps(o: {
  bus: () => Promise<HostBus>;
  storage: StorageConfig;
  profilePath: string;
  env: NodeJS.ProcessEnv;
  log: Logger;
  stepDelayMs?: number;
}): ClusterStepsFactory {
  return (input: ClusterBackupInput) => {
    const deps: ClusterDeps = {
      bus: o.bus,
      store: openStore(o.storage),
      cql: async () => {
        const { cql } = await loadProfile(o.profilePath);
        return connectCql({ ...cql, credentials: await loadCredentials(cql.credentialsFile) });
      },
      log: o.log.child({ workflowId: input.workflowId, kind: 'clusterBackup' }),
      pollMs: ms(o.env, POLL_ENV, 1000),
      barrierTimeoutMs: ms(o.env, BARRIER_ENV, 15 * 60 * 1000),
      abortTimeoutMs: ms(o.env, ABORT_ENV, 5 * 60 * 1000),
      stepDelayMs: o.stepDelayMs ?? 0,
      pauseFile: o.env[PAUSE_ENV] || undefined,
    };
    return createClusterBackupSteps(deps);
  };
}

/**
 * The cluster_name and broadcast address of the node a profile describes, read once over CQL; retried until it answers (an agent may start
 * before its node), given up when `signal` aborts.
 */
export async function readClusterName(profilePath: string, signal: AbortSignal, retryMs = 5000): Promise<{ cluster: string; address: string }> {
  const { setTimeout: sleep } = await import('node:timers/promises');
  for (;;) {
    try {
      const { cql } = await loadProfile(profilePath);
      const session = await connectCql({ ...cql, credentials: await loadCredentials(cql.credentialsFile) });
      try {
        const [row] = await session.execute('SELECT cluster_name, broadcast_address FROM system.local');
        const name = String(row?.['cluster_name'] ?? '');
        if (name) return { cluster: name, address: String(row?.['broadcast_address'] ?? '').replace(/^\//, '') };
      } finally {
        await session.close();
      }
    } catch {
      /* not up yet */
    }
    await sleep(retryMs, undefined, { signal });
  }
}
