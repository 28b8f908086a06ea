import type { ClusterBackupInput, ClusterStepInput, HostOutcome, RecordStepInput, RingAtBarrier } from '../../machines/clusterBackup.machine.ts';
import { bindStep } from '../bindStep.ts';
import { abortHosts } from './abortHosts.ts';
import { awaitSnapshots } from './awaitSnapshots.ts';
import type { ClusterDeps } from './deps.ts';
import { readRing } from './readRing.ts';
import { removeClusterRecord } from './removeClusterRecord.ts';
import { reserveBackupId } from './reserveBackupId.ts';
import { resolveHosts } from './resolveHosts.ts';
import { startHostBackups } from './startHostBackups.ts';
import { uploadHosts } from './uploadHosts.ts';
import { writeClusterRecord } from './writeClusterRecord.ts';

/** The coordinator's real steps, bound to its bus, storage and node; passed to `clusterBackupMachine.provide({ actors })`. */
export function createClusterBackupSteps(deps: ClusterDeps) {
  return {
    resolveHosts: bindStep<ClusterDeps, { ctx: ClusterBackupInput }, string[]>(deps, 'resolveHosts', resolveHosts),
    reserveBackupId: bindStep<ClusterDeps, ClusterStepInput, void>(deps, 'reserveBackupId', reserveBackupId),
    startHostBackups: bindStep<ClusterDeps, ClusterStepInput, HostOutcome[]>(deps, 'startHostBackups', startHostBackups),
    awaitSnapshots: bindStep<ClusterDeps, ClusterStepInput, HostOutcome[]>(deps, 'awaitSnapshots', awaitSnapshots),
    readRing: bindStep<ClusterDeps, ClusterStepInput, RingAtBarrier>(deps, 'readRing', readRing),
    uploadHosts: bindStep<ClusterDeps, ClusterStepInput, HostOutcome[]>(deps, 'uploadHosts', uploadHosts),
    writeClusterRecord: bindStep<ClusterDeps, RecordStepInput, { recordKey: string; warnings?: string[] }>(deps, 'writeClusterRecord', writeClusterRecord),
    removeClusterRecord: bindStep<ClusterDeps, ClusterStepInput, void>(deps, 'removeClusterRecord', removeClusterRecord),
    abortHosts: bindStep<ClusterDeps, ClusterStepInput, HostOutcome[]>(deps, 'abortHosts', abortHosts),
  };
}
