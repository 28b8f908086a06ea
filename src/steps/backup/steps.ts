import type { BackupResult, StepInput, WriteRecordInput } from '../../machines/backup.machine.ts';
import { bindStep } from '../bindStep.ts';
import type { BackupDeps } from '../nodeDeps.ts';
import { checkFreeSpace } from './checkFreeSpace.ts';
import { clearSnapshot } from './clearSnapshot.ts';
import { deleteBackupObjects } from './deleteBackupObjects.ts';
import { streamArchive } from './streamArchive.ts';
import { takeSnapshot } from './takeSnapshot.ts';
import { verifyNode } from './verifyNode.ts';
import { waitUntil } from './waitUntil.ts';
import { writeRecord } from './writeRecord.ts';

/** The real backup steps, bound to one node's dependencies; passed to `backupMachine.provide({ actors })`. */
export function createBackupSteps(deps: BackupDeps) {
  return {
    verifyNode: bindStep(deps, 'verifyNode', verifyNode),
    checkFreeSpace: bindStep(deps, 'checkFreeSpace', checkFreeSpace),
    clearSnapshot: bindStep(deps, 'clearSnapshot', clearSnapshot),
    takeSnapshot: bindStep(deps, 'takeSnapshot', takeSnapshot),
    streamArchive: bindStep<BackupDeps, StepInput, BackupResult>(deps, 'streamArchive', streamArchive),
    writeRecord: bindStep<BackupDeps, WriteRecordInput, void>(deps, 'writeRecord', writeRecord),
    deleteBackupObjects: bindStep(deps, 'deleteBackupObjects', deleteBackupObjects),
    // No step delay here: it is a wait already, and a drill's delay would only lengthen the hold.
    waitUntil: bindStep({ ...deps, stepDelayMs: 0 }, 'waitUntil', waitUntil),
  };
}
