import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createActor, toPromise } from 'xstate';
import { backupMachine } from '../../../src/machines/backup.machine.ts';
import { restoreMachine } from '../../../src/machines/restore.machine.ts';
import { createBackupSteps } from '../../../src/steps/backup/steps.ts';
import { createRestoreSteps } from '../../../src/steps/restore/steps.ts';
import { fakeNode, removeFakeNodes, TABLE_IDS } from '../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';
import { backupDeps, backupInput, restoreDeps, restoreInput } from '../../fixtures/stepKit.ts';

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
});
