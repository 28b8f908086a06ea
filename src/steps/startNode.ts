import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import type { RestoreDeps } from './restoreDeps.ts';

/** Starts Cassandra on the target with its current cassandra.yaml and waits until CQL answers. */
export async function startNode(deps: RestoreDeps, _input: RestoreStepInput, signal: AbortSignal): Promise<void> {
  if (!(await deps.service.isRunning())) await deps.service.start(signal);
}
