import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import type { RestoreDeps } from './restoreDeps.ts';

/** Stops Cassandra on the target (idempotent: a stopped node stays stopped). */
export async function stopNode(deps: RestoreDeps, _input: RestoreStepInput, signal: AbortSignal): Promise<void> {
  if (await deps.service.isRunning()) await deps.service.stop(signal);
}
