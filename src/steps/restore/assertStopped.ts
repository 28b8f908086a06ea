import { portOpen } from '../../cassandra/ready.ts';
import { CbrError } from '../../core/errors.ts';
import type { NodeDeps } from '../nodeDeps.ts';

/**
 * Stopped means stopped: no process of the node (found by command line for a sandbox; for a systemd unit, the
 * unit inactive and nothing answering on its CQL or JMX port). Checked before any rename or removal of a node's directories, so a node that could not be stopped
 * never has its live data moved or deleted under it.
 */
export async function assertStopped(deps: NodeDeps, what: string): Promise<void> {
  const p = deps.profile;
  if (await deps.service.isRunning()) {
    throw new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', `Cassandra on ${p.name} is still running: ${what} left alone`);
  }
  // A sandbox's processes are found by their command line (runningPid scans /proc), whatever pid file a crash
  // left; a service manager's unit can report inactive while a process still holds the ports.
  if (p.service?.kind === 'sandbox') return;
  for (const [host, port, name] of [
    [p.cql.host, p.cql.port, 'CQL'],
    [p.jmx.host, p.jmx.port, 'JMX'],
  ] as const) {
    if (await portOpen(host, port)) {
      throw new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', `something still answers on ${name} ${host}:${port} of ${p.name}: ${what} left alone`);
    }
  }
}
