import type { Profile } from '../cassandra/profile.ts';
import type { ServiceControl } from '../cassandra/service.ts';
import { CbrError } from '../core/errors.ts';
// process.ts, not sandbox.ts: a backup of a sandbox node does not load the installer (and its yaml library).
import { runningPid, startInstance, stopInstance } from './process.ts';

/** A sandbox node behind the service port: started and stopped as cbr's own CassandraDaemon process. */
export function createSandboxControl(profile: Profile): ServiceControl {
  const service = profile.service;
  if (service.kind !== 'sandbox') throw new CbrError('CBR_ERR_CONFIG', `profile service kind ${service.kind} is not sandbox`);
  return {
    isRunning: async () => runningPid(service.instanceDir) !== null,
    start: async (signal, endpoint) => {
      try {
        await startInstance(profile, { requireAuth: false, ...(endpoint ? { cql: endpoint } : {}), ...(signal ? { signal } : {}) });
      } catch (err) {
        throw err instanceof CbrError && err.code === 'CBR_ERR_SANDBOX_START_FAILED' ? new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', err.message) : err;
      }
    },
    stop: () => stopInstance(service.instanceDir),
  };
}
