import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, fromPromise, waitFor } from 'xstate';
import { silentLogger } from '../../../src/core/log.ts';
import { type BackupInput, type BackupResult, backupMachine, type StepInput } from '../../../src/machines/backup.machine.ts';
import { WorkflowRuntime } from '../../../src/runtime/runtime.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { instantSteps } from '../../fixtures/steps.ts';

const input: BackupInput = {
  workflowId: 'old-1',
  backupId: 'old-1',
  name: 'n',
  description: '',
  profilePath: '/p',
  storage: { driver: 'local', root: '/nowhere', container: 'c' },
  compression: 'zstd',
  keySource: null,
  minFreePercent: 10,
  startedAt: new Date().toISOString(),
  rateLimit: null,
};

/** A persisted snapshot in `streaming`, with the context a v1 machine wrote (no heldSince, no released). */
async function streamingSnapshot(): Promise<unknown> {
  // The upload never ends here: the snapshot is taken while it runs.
  const never = fromPromise<BackupResult, StepInput>(() => new Promise<BackupResult>(() => {}));
  const actor = createActor(backupMachine.provide({ actors: { ...instantSteps.backup(input), streamArchive: never } }), { input }).start();
  await waitFor(actor, (s) => s.value === 'streaming');
  const snap = JSON.parse(JSON.stringify(actor.getPersistedSnapshot())) as { context: Record<string, unknown> };
  actor.stop();
  delete snap.context['heldSince'];
  delete snap.context['released'];
  return snap;
}

describe('persisted machine versions', () => {
  it('a backup persisted by machine v1 (before holding) resumes and completes; an unknown version is refused by name', async () => {
    const store = new StateDb(':memory:');
    const snapshot = await streamingSnapshot();
    for (const [id, version] of [
      ['old-1', 1],
      ['future-1', 99],
    ] as const) {
      store.create({
        id,
        kind: 'backup',
        machineVersion: version,
        status: 'active',
        state: 'streaming',
        snapshot,
        input: { ...input, workflowId: id, backupId: id },
        commandId: null,
        ownerPid: null,
      });
    }
    const runtime = new WorkflowRuntime({ stateDb: store, env: {}, log: silentLogger, steps: instantSteps });
    const outcome = await (await runtime.resume('old-1')).done;
    assert.equal(outcome.state, 'completed');
    await assert.rejects(
      runtime.resume('future-1'),
      (err: Error & { code?: string }) => err.code === 'CBR_ERR_WORKFLOW_CONFLICT' && /v99, this is v2/.test(err.message),
    );
  });
});
