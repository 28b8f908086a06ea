import { bindStep } from '../bindStep.ts';
import { checkParts } from './checkParts.ts';
import { checkRestore } from './checkRestore.ts';
import { chownData } from './chownData.ts';
import { discardStaging } from './discardStaging.ts';
import { fetchParts } from './fetchParts.ts';
import { finalizeRestore } from './finalizeRestore.ts';
import { forgetSourcePeers } from './forgetSourcePeers.ts';
import { importParts } from './importParts.ts';
import { lowerReplication } from './lowerReplication.ts';
import { resetIdentity } from './resetIdentity.ts';
import { restoreConfig } from './restoreConfig.ts';
import { restoreDataDirs } from './restoreDataDirs.ts';
import type { RestoreDeps } from './restoreDeps.ts';
import { startMaintenance } from './startMaintenance.ts';
import { startNode } from './startNode.ts';
import { stopNode } from './stopNode.ts';
import { swapDataDirs } from './swapDataDirs.ts';
import { unpackBackup } from './unpackBackup.ts';
import { verifyRestore } from './verifyRestore.ts';
import { writeFinalConfig } from './writeFinalConfig.ts';

/** The real restore steps, bound to the target's dependencies; passed to `restoreMachine.provide({ actors })`. */
export function createRestoreSteps(deps: RestoreDeps) {
  return {
    checkRestore: bindStep(deps, 'checkRestore', checkRestore),
    unpackBackup: bindStep(deps, 'unpackBackup', unpackBackup),
    stopNode: bindStep(deps, 'stopNode', stopNode),
    swapDataDirs: bindStep(deps, 'swapDataDirs', swapDataDirs),
    chownData: bindStep(deps, 'chownData', chownData),
    startMaintenance: bindStep(deps, 'startMaintenance', startMaintenance),
    resetIdentity: bindStep(deps, 'resetIdentity', resetIdentity),
    writeFinalConfig: bindStep(deps, 'writeFinalConfig', writeFinalConfig),
    startNode: bindStep(deps, 'startNode', startNode),
    verifyRestore: bindStep(deps, 'verifyRestore', verifyRestore),
    finalizeRestore: bindStep(deps, 'finalizeRestore', finalizeRestore),
    restoreConfig: bindStep(deps, 'restoreConfig', restoreConfig),
    restoreDataDirs: bindStep(deps, 'restoreDataDirs', restoreDataDirs),
    discardStaging: bindStep(deps, 'discardStaging', discardStaging),
    checkParts: bindStep(deps, 'checkParts', checkParts),
    fetchParts: bindStep(deps, 'fetchParts', fetchParts),
    forgetSourcePeers: bindStep(deps, 'forgetSourcePeers', forgetSourcePeers),
    importParts: bindStep(deps, 'importParts', importParts),
    lowerReplication: bindStep(deps, 'lowerReplication', lowerReplication),
  };
}
