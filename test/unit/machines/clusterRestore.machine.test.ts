import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, fromPromise, toPromise } from 'xstate';
import { CbrError } from '../../../src/core/errors.ts';
import { CLUSTER_RESTORE_PHASES, type ClusterRestorePhase, clusterRestoreMachine } from '../../../src/machines/clusterRestore.machine.ts';

/** The machine with fake steps that record what ran; `failAt` makes that phase's step fail. */
function run(opts: { failAt?: ClusterRestorePhase; hold?: ClusterRestorePhase } = {}) {
  const calls: string[] = [];
  let release: () => void = () => {};
  const held = new Promise<void>((r) => {
    release = r;
  });
  const machine = clusterRestoreMachine.provide({
    actors: {
      runPhase: fromPromise<void, { phase: ClusterRestorePhase }>(async ({ input, signal }) => {
        calls.push(input.phase);
        if (input.phase === opts.failAt) throw new CbrError('CBR_ERR_CLUSTER_RESTORE_FAILED', `n3: ${input.phase} failed`);
        if (input.phase === opts.hold) {
          await Promise.race([held, new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted'))))]);
        }
      }),
      rollBackNodes: fromPromise(async () => {
        calls.push('rollBack');
        return { warnings: ['n2: rollback restoreConfig: disk full'] };
      }),
      finalizeNodes: fromPromise(async () => {
        calls.push('finalize');
        return { warnings: [] as string[] };
      }),
    },
  });
  const actor = createActor(machine, { input: { clusterBackupId: 'cb', nodes: 3 } });
  return { actor, calls, release, machine };
}

describe('cluster restore machine', () => {
  it('runs every phase in order, then finalizes, and completes', async () => {
    const { actor, calls } = run();
    actor.start();
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'completed');
    assert.deepEqual(calls, [...CLUSTER_RESTORE_PHASES, 'finalize']);
    assert.deepEqual(out, { failedPhase: null, error: null, warnings: [] });
  });

  it('a phase failing rolls every node back (never finalizes) and fails, naming the phase and the error', async () => {
    const { actor, calls } = run({ failAt: 'startOthers' });
    actor.start();
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.deepEqual(calls, [...CLUSTER_RESTORE_PHASES.slice(0, CLUSTER_RESTORE_PHASES.indexOf('startOthers') + 1), 'rollBack']);
    assert.equal(out.failedPhase, 'startOthers');
    assert.equal(out.error?.code, 'CBR_ERR_CLUSTER_RESTORE_FAILED');
    assert.deepEqual(out.warnings, ['n2: rollback restoreConfig: disk full']);
  });

  it('a cancel during a phase rolls back; its snapshot survives JSON mid-way', async () => {
    const { actor, calls } = run({ hold: 'maintenance' });
    actor.start();
    while (actor.getSnapshot().value !== 'maintenance') await new Promise((r) => setImmediate(r));
    const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot())) as { value: string; context: { failedPhase: null } };
    assert.equal(persisted.value, 'maintenance');
    assert.equal(persisted.context.failedPhase, null);
    actor.send({ type: 'CANCEL', reason: 'interrupted' });
    const out = await toPromise(actor);
    assert.equal(out.failedPhase, 'maintenance');
    assert.deepEqual(out.error, { code: 'CBR_ERR_ABORTED', message: 'cancelled: interrupted', retryable: true });
    assert.equal(calls.at(-1), 'rollBack');
    assert.ok(!calls.includes('finalize'));
  });
});
