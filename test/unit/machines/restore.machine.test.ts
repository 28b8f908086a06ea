import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, fromPromise, type SnapshotFrom, toPromise, waitFor } from 'xstate';
import { CbrError } from '../../../src/core/errors.ts';
import { type RestoreInput, restoreMachine } from '../../../src/machines/restore.machine.ts';

const input: RestoreInput = {
  workflowId: 'r1',
  backupId: 'b1',
  instanceName: 'bravo',
  clusterName: 'bravo',
  profilePath: '/nowhere/profile.json',
  storage: { driver: 'local', root: '/nowhere', container: 'database_backups' },
  passwordFile: '/nowhere/pw',
  superuser: 'cassandra',
  keySource: null,
  force: false,
  startedAt: '2026-01-01T00:00:00Z',
};

function fakes(opts: { fail?: string; wasRunning?: boolean; gate?: { step: string; until: Promise<void> } } = {}) {
  const calls: string[] = [];
  const mk = <T>(name: string, out: T) =>
    // biome-ignore lint/suspicious/noExplicitAny: one fake serves steps with different inputs
    fromPromise<T, any>(async () => {
      calls.push(name);
      if (opts.gate?.step === name) await opts.gate.until;
      if (opts.fail === name) throw new CbrError('CBR_ERR_ARCHIVE_CORRUPT', `${name} broke`);
      return out;
    });
  const plan = {
    sourceClusterName: 'alpha',
    keyspaces: ['ks'],
    rawBytes: 10,
    fileCount: 2,
    wasRunning: opts.wasRunning ?? true,
    settings: null,
    placement: {},
  };
  const steps = [
    'stopNode',
    'swapDataDirs',
    'chownData',
    'startMaintenance',
    'startNode',
    'verifyRestore',
    'finalizeRestore',
    'restoreConfig',
    'restoreDataDirs',
    'discardStaging',
    'forgetSourcePeers',
  ] as const;
  const actors = Object.fromEntries(steps.map((s) => [s, mk<void>(s, undefined)]));
  const machine = restoreMachine.provide({
    actors: {
      ...actors,
      checkRestore: mk('checkRestore', plan),
      unpackBackup: mk('unpackBackup', { files: 2, bytes: 10 }),
      resetIdentity: mk('resetIdentity', { superusers: ['cassandra', 'ops'] }),
      writeFinalConfig: mk('writeFinalConfig', { changes: [{ key: 'num_tokens', from: 16, to: 256 }] }),
      checkParts: mk('checkParts', { clusterBackupId: 'cb', parts: [{ backupId: 'cb-2', host: 'n2', keyspaces: ['ks'], rawBytes: 5, fileCount: 1 }] }),
      fetchParts: mk('fetchParts', { files: 1, bytes: 5 }),
      importParts: mk('importParts', { tables: 1, dirs: 1 }),
      lowerReplication: mk('lowerReplication', {
        changes: [{ keyspace: 'ks', from: { class: 'SimpleStrategy', replication_factor: '3' }, to: { class: 'SimpleStrategy', replication_factor: '1' } }],
      }),
    } as never,
  });
  return { calls, machine };
}

describe('restore machine', () => {
  it('runs the procedure with two Cassandra starts', async () => {
    const { calls, machine } = fakes();
    const actor = createActor(machine, { input }).start();
    await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'completed');
    assert.deepEqual(actor.getSnapshot().context.superusers, ['cassandra', 'ops'], 'the superusers found travel to the result');
    assert.deepEqual(actor.getSnapshot().context.settingChanges, [{ key: 'num_tokens', from: 16, to: 256 }]);
    assert.deepEqual(calls, [
      'checkRestore',
      'unpackBackup',
      'forgetSourcePeers',
      'stopNode',
      'swapDataDirs',
      'chownData',
      'startMaintenance',
      'resetIdentity',
      'writeFinalConfig',
      'startNode',
      'verifyRestore',
      'finalizeRestore',
    ]);
    assert.equal(actor.getSnapshot().context.starts, 2);
  });

  it('a bad archive never touches the target: only the staging directory is discarded', async () => {
    const { calls, machine } = fakes({ fail: 'unpackBackup' });
    const actor = createActor(machine, { input }).start();
    await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.deepEqual(calls, ['checkRestore', 'unpackBackup', 'discardStaging']);
    assert.equal(actor.getSnapshot().context.error?.code, 'CBR_ERR_ARCHIVE_CORRUPT');
  });

  it('a failure after the swap rolls everything back and restarts a node that was running', async () => {
    const { calls, machine } = fakes({ fail: 'verifyRestore', wasRunning: true });
    const actor = createActor(machine, { input }).start();
    await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.deepEqual(calls.slice(calls.indexOf('verifyRestore')), [
      'verifyRestore',
      'stopNode',
      'restoreConfig',
      'restoreDataDirs',
      'discardStaging',
      'startNode',
    ]);
  });

  it('does not start a target that was stopped before the restore', async () => {
    const { calls, machine } = fakes({ fail: 'resetIdentity', wasRunning: false });
    const actor = createActor(machine, { input }).start();
    await toPromise(actor);
    assert.deepEqual(calls.slice(-4), ['stopNode', 'restoreConfig', 'restoreDataDirs', 'discardStaging']);
  });

  it('resumes from a JSON round trip of its snapshot and re-runs the in-flight step', async () => {
    const first = fakes({ gate: { step: 'chownData', until: new Promise(() => {}) } });
    const actor = createActor(first.machine, { input }).start();
    await waitFor(actor, (s) => s.matches('chowning'));
    const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
    actor.stop();
    const second = fakes();
    const resumed = createActor(second.machine, { snapshot: persisted as SnapshotFrom<typeof restoreMachine>, input }).start();
    await toPromise(resumed);
    assert.equal(resumed.getSnapshot().value, 'completed');
    assert.equal(second.calls[0], 'chownData');
    assert.equal(resumed.getSnapshot().context.starts, 2);
  });

  describe('a cluster backup into one node', () => {
    const clusterInput: RestoreInput = { ...input, backupId: 'cb-1', clusterBackupId: 'cb' };

    it('checks and fetches the other parts before the stop, drops the source peers, imports them on the maintenance start', async () => {
      const { calls, machine } = fakes();
      const actor = createActor(machine, { input: clusterInput }).start();
      await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'completed');
      assert.deepEqual(calls, [
        'checkRestore',
        'checkParts',
        'unpackBackup',
        'fetchParts',
        'forgetSourcePeers',
        'stopNode',
        'swapDataDirs',
        'chownData',
        'startMaintenance',
        'importParts',
        'lowerReplication',
        'resetIdentity',
        'writeFinalConfig',
        'startNode',
        'verifyRestore',
        'finalizeRestore',
      ]);
      assert.equal(actor.getSnapshot().context.starts, 2, 'still two Cassandra starts');
      const out = actor.getSnapshot().output!;
      assert.equal(out.clusterBackupId, 'cb');
      assert.deepEqual(out.partsImported, ['cb-2']);
      assert.equal(out.replicationChanges[0]?.keyspace, 'ks');
    });

    it('a bad part is refused before the node is touched: only staging is discarded', async () => {
      const { calls, machine } = fakes({ fail: 'fetchParts' });
      const actor = createActor(machine, { input: clusterInput }).start();
      await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'failed');
      assert.deepEqual(calls, ['checkRestore', 'checkParts', 'unpackBackup', 'fetchParts', 'discardStaging']);
    });

    it('an import refused on the maintenance start rolls everything back and restarts the node', async () => {
      const { calls, machine } = fakes({ fail: 'importParts', wasRunning: true });
      const actor = createActor(machine, { input: clusterInput }).start();
      await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'failed');
      assert.deepEqual(calls.slice(calls.indexOf('importParts')), [
        'importParts',
        'stopNode',
        'restoreConfig',
        'restoreDataDirs',
        'discardStaging',
        'startNode',
      ]);
    });

    it('resumes mid-import from a JSON round trip and re-runs the import', async () => {
      const first = fakes({ gate: { step: 'importParts', until: new Promise(() => {}) } });
      const actor = createActor(first.machine, { input: clusterInput }).start();
      await waitFor(actor, (s) => s.matches('importingParts'));
      const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
      actor.stop();
      const second = fakes();
      const resumed = createActor(second.machine, { snapshot: persisted as SnapshotFrom<typeof restoreMachine>, input: clusterInput }).start();
      await toPromise(resumed);
      assert.equal(resumed.getSnapshot().value, 'completed');
      assert.deepEqual(second.calls.slice(0, 2), ['importParts', 'lowerReplication']);
    });
  });
});
