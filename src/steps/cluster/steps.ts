import type { ClusterBackupInput, ClusterStepInput, HostOutcome } from '../../machines/clusterBackup.machine.ts';
import { bindStep } from '../bindStep.ts';
import { abortHosts } from './abortHosts.ts';
import { awaitSnapshots } from './awaitSnapshots.ts';
import type { ClusterDeps } from './deps.ts';
import { removeClusterRecord } from './removeClusterRecord.ts';
import { resolveHosts } from './resolveHosts.ts';
import { startHostBackups } from './startHostBackups.ts';
import { uploadHosts } from './uploadHosts.ts';
import { writeClusterRecord } from './writeClusterRecord.ts';

/** The coordinator's real steps, bound to its bus, storage and node; passed to `clusterBackupMachine.provide({ actors })`. */
export function createClusterBackupSteps(deps: ClusterDeps) {
  return {
    resolveHosts: bindStep<ClusterDeps, { ctx: ClusterBackupInput }, string[]>(deps, 'resolveHosts', resolveHosts),
    startHostBackups: bindStep<ClusterDeps, ClusterStepInput, HostOutcome[]>(deps, 'startHostBackups', startHostBackups),
    awaitSnapshots: bindStep<ClusterDeps, ClusterStepInput, HostOutcome[]>(deps, 'awaitSnapshots', awaitSnapshots),
    uploadHosts: bindStep<ClusterDeps, ClusterStepInput, HostOutcome[]>(deps, 'uploadHosts', uploadHosts),
    writeClusterRecord: bindStep<ClusterDeps, ClusterStepInput, { recordKey: string }>(deps, 'writeClusterRecord', writeClusterRecord),
    removeClusterRecord: bindStep<ClusterDeps, ClusterStepInput, void>(deps, 'removeClusterRecord', removeClusterRecord),
    abortHosts: bindStep<ClusterDeps, ClusterStepInput, HostOutcome[]>(deps, 'abortHosts', abortHosts),
  };
}
