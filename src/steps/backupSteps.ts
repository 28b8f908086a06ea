import { fromPromise } from 'xstate';
import type { BackupContext, BackupResult, StepInput } from '../../machines/backup.machine.ts';
import { checkFreeSpace } from './checkFreeSpace.ts';
import { clearSnapshot } from './clearSnapshot.ts';
import { deleteBackupObjects } from './deleteBackupObjects.ts';
import type { BackupDeps } from './deps.ts';
import { streamArchive } from './streamArchive.ts';
import { takeSnapshot } from './takeSnapshot.ts';
import { verifyNode } from './verifyNode.ts';
import { writeRecord } from './writeRecord.ts';

/** The real backup steps, bound to one node's dependencies; passed to `backupMachine.provide({ actors })`. */
export function createBackupSteps(deps: BackupDeps) {
  const bind = <I, O>(name: string, fn: (deps: BackupDeps, input: I, signal: AbortSignal) => Promise<O>) =>
    fromPromise<O, I>(async ({ input, signal }) => {
      const log = deps.log.child({ step: name });
      log.debug('step start');
      try {
        const out = await fn({ ...deps, log }, input, signal);
        log.debug('step done');
        return out;
      } catch (err) {
        log.warn('step failed', { code: (err as { code?: string }).code, error: (err as Error).message, stack: (err as Error).stack });
        throw err;
      }
    });
  return {
    verifyNode: bind('verifyNode', verifyNode),
    checkFreeSpace: bind('checkFreeSpace', checkFreeSpace),
    clearSnapshot: bind('clearSnapshot', clearSnapshot),
    takeSnapshot: bind('takeSnapshot', takeSnapshot),
    streamArchive: bind<StepInput, BackupResult>('streamArchive', streamArchive),
    writeRecord: bind<StepInput & { node: BackupContext['node']; result: BackupResult }, void>('writeRecord', writeRecord),
    deleteBackupObjects: bind('deleteBackupObjects', deleteBackupObjects),
  };
}
