import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createActor, toPromise } from 'xstate';
import { CbrError } from '../../../src/core/errors.ts';
import { backupMachine } from '../../../src/machines/backup.machine.ts';
import { restoreMachine } from '../../../src/machines/restore.machine.ts';
import { createBackupSteps } from '../../../src/steps/backup/steps.ts';
import { createRestoreSteps } from '../../../src/steps/restore/steps.ts';
import { fakeNode, removeFakeNodes, TABLE_IDS, treeState } from '../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';
import { backupDeps, backupInput, restoreDeps, restoreInput } from '../../fixtures/stepKit.ts';
import { REPO } from '../../helpers/paths.ts';

/**
 * The bound steps (src/steps/{backup,restore}/steps.ts) against the machines that invoke them by name: every
 * declared actor has a real step, and both machines run to completion with the real steps on a FakeNode and a
 * MemoryStore. Each step on its own: test/unit/steps/backup and test/unit/steps/restore.
 */

after(removeFakeNodes);

describe('bound steps', () => {
  it('every actor a machine declares has a real step, and there is no other', async () => {
    const node = await fakeNode();
    const store = new MemoryStore();
    assert.deepEqual(Object.keys(createBackupSteps(backupDeps(node, store))).sort(), Object.keys(backupMachine.implementations.actors).sort());
    assert.deepEqual(Object.keys(createRestoreSteps(restoreDeps(node, store))).sort(), Object.keys(restoreMachine.implementations.actors).sort());
  });

  it('a backup and its restore run to completion through the machines with the real steps', async () => {
    const source = await fakeNode({ name: 'source', userData: true, clusterName: 'Source Cluster' });
    const store = new MemoryStore();
    const backup = createActor(backupMachine.provide({ actors: createBackupSteps(backupDeps(source, store)) }), { input: backupInput(source).ctx }).start();
    await toPromise(backup);
    assert.equal(backup.getSnapshot().value, 'completed', JSON.stringify(backup.getSnapshot().context.error));
    assert.deepEqual(store.keys(), ['b1/archive.tar.zst', 'b1/backup.json']);
    assert.deepEqual(await source.snapshotTags(), [], 'the snapshot is cleared after the backup');

    const target = await fakeNode({ name: 'target' });
    const restore = createActor(restoreMachine.provide({ actors: createRestoreSteps(restoreDeps(target, store)) }), {
      input: restoreInput(target).ctx,
    }).start();
    await toPromise(restore);
    const snap = restore.getSnapshot();
    assert.equal(snap.value, 'completed', JSON.stringify(snap.context.error));
    assert.deepEqual(snap.context.warnings, []);
    assert.equal(target.clusterName, 'Restored Cluster');
    assert.equal(target.running, true);
    assert.ok(target.profile.dataDirs.some((d) => existsSync(join(d, 'shop', `orders-${TABLE_IDS.orders}`, 'nb-2-big-Data.db'))));
    assert.deepEqual(
      [...readdirSync(target.root), ...readdirSync(join(target.root, 'conf'))].filter((n) => n.includes('.cbr-')),
      [],
      'no staging, old directory or kept yaml is left',
    );
  });

  it('a restore that fails after the swap rolls back through the real compensations: the target is as it was, and runs', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    await toPromise(createActor(backupMachine.provide({ actors: createBackupSteps(backupDeps(source, store)) }), { input: backupInput(source).ctx }).start());
    const target = await fakeNode({ name: 'target' });
    const before = treeState(target.root);
    // The maintenance start fails once; the rollback's restart of the node then succeeds.
    target.fail('service.start', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'Cassandra exited during startup'), { times: 1 });
    const restore = createActor(restoreMachine.provide({ actors: createRestoreSteps(restoreDeps(target, store)) }), {
      input: restoreInput(target).ctx,
    }).start();
    await toPromise(restore);
    const snap = restore.getSnapshot();
    assert.equal(snap.value, 'failed');
    assert.equal(snap.context.error?.code, 'CBR_ERR_SERVICE_CONTROL_FAILED');
    assert.deepEqual(snap.context.warnings, []);
    assert.deepEqual(treeState(target.root), before);
    assert.equal(target.running, true);
    assert.deepEqual(target.listening, { host: target.profile.cql.host, port: target.profile.cql.port });
  });
});

describe('every step has its unit tests', () => {
  it('each file of src/steps/backup and src/steps/restore is imported by a test under test/unit/steps', () => {
    const tests = [join(REPO, 'test/unit/steps/backup'), join(REPO, 'test/unit/steps/restore'), join(REPO, 'test/unit/steps')]
      .flatMap((dir) =>
        readdirSync(dir)
          .filter((n) => n.endsWith('.test.ts'))
          .map((n) => readFileSync(join(dir, n), 'utf8')),
      )
      .join('\n');
    const untested = ['backup', 'restore'].flatMap((side) =>
      readdirSync(join(REPO, 'src/steps', side))
        .filter((n) => n.endsWith('.ts'))
        .map((n) => `src/steps/${side}/${n}`)
        .filter((path) => !tests.includes(`/${path}'`)),
    );
    assert.deepEqual(untested, []);
  });
});
