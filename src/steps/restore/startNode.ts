import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import type { RestoreDeps } from './restoreDeps.ts';

/**
 * Starts Cassandra on the target with its current cassandra.yaml and waits until CQL answers. A node already
 * running or still booting (started before a crash) is not started twice: start() only waits for it then.
 */
export async function startNode(deps: RestoreDeps, _input: RestoreStepInput, signal: AbortSignal): Promise<void> {
  await deps.service.start(signal);
}
