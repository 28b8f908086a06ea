import assert from 'node:assert/strict';
import { existsSync, lstatSync, readdirSync, renameSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CbrError } from '../../../../src/core/errors.ts';
import { assertStopped } from '../../../../src/steps/restore/assertStopped.ts';
import { chownData } from '../../../../src/steps/restore/chownData.ts';
import { restoreDataDirs } from '../../../../src/steps/restore/restoreDataDirs.ts';
import { restorePaths } from '../../../../src/steps/restore/restoreDeps.ts';
import { stopNode } from '../../../../src/steps/restore/stopNode.ts';
import { swapDataDirs } from '../../../../src/steps/restore/swapDataDirs.ts';
import { removeFakeNodes, TABLE_IDS, treeState } from '../../../fixtures/fakeNode.ts';
import { abortedSignal, liveSignal, type MadeBackup, makeBackup, rejectsAborted, rejectsCoded, restoreUntil } from '../../../fixtures/stepKit.ts';

/**
 * The restore steps that stop the target and move its directories: stopNode, swapDataDirs, chownData and the
 * rollback's restoreDataDirs (with assertStopped, which guards every move), on a FakeNode target whose data,
 * commitlog, saved caches and hints directories are real ones in a tmp dir. test/unit/steps/stopped.test.ts
 * and ownership.test.ts cover a port still answering and links planted in place of a directory.
 */

after(removeFakeNodes);

let backup: MadeBackup;
before(async () => {
  backup = await makeBackup();
});

const NOBODY = 65534;
const asRoot = { skip: process.getuid?.() !== 0 ? 'needs root (chown to another user)' : false };

describe('stopNode', () => {
  it('stops a running node; twice stops it once', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup });
    await stopNode(deps, input, liveSignal());
    await stopNode(deps, input, liveSignal());
    assert.equal(target.running, false);
    assert.deepEqual(
      target.calls.filter((c) => c === 'service stop'),
      ['service stop'],
    );
  });

  it('an aborted signal leaves the node running', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup });
    await rejectsAborted(stopNode(deps, input, abortedSignal()));
    assert.equal(target.running, true);
  });

  it('a stop that fails is CBR_ERR_SERVICE_CONTROL_FAILED', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup });
    target.fail('service.stop', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'systemctl stop cassandra: timeout'));
    await rejectsCoded(stopNode(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED', /timeout/);
  });
});

describe('swapDataDirs', () => {
  it('moves every live directory aside and each staging directory into its place, with the old mode', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup });
    const p = target.profile;
    const paths = restorePaths(p, input.ctx.workflowId);
    await swapDataDirs(deps, input, liveSignal());
    for (const { live, old } of paths.moves) {
      assert.ok(existsSync(old), `${old} kept`);
      assert.ok(existsSync(live), `${live} in place`);
    }
    for (const { staging } of paths.stagings) assert.ok(!existsSync(staging));
    // The restored tables are live; the target's own files are aside; commitlog and hints start empty.
    const orders = `orders-${TABLE_IDS.orders}`;
    assert.ok(p.dataDirs.some((d) => existsSync(join(d, 'shop', orders, 'nb-1-big-Data.db'))));
    assert.ok(existsSync(join(`${p.commitlogDir}.cbr-old-${input.ctx.workflowId}`, 'CommitLog-7-1.log')));
    assert.deepEqual(readdirSync(p.commitlogDir), []);
    assert.deepEqual(readdirSync(p.hintsDir), []);
    for (const d of p.dataDirs) assert.equal(statSync(d).mode & 0o7777, 0o750);
  });

  it('run twice, or again after a crash half-way, ends in the same state as once', async () => {
    const once = await restoreUntil('swapDataDirs', { backup });
    await swapDataDirs(once.deps, once.input, liveSignal());
    const onceState = treeState(once.target.root);
    await swapDataDirs(once.deps, once.input, liveSignal());
    assert.deepEqual(treeState(once.target.root), onceState);

    // The crash came after the first data directory was moved aside and its staging directory renamed in.
    const crashed = await restoreUntil('swapDataDirs', { backup });
    const paths = restorePaths(crashed.target.profile, crashed.input.ctx.workflowId);
    const first = paths.stagings[0]!;
    renameSync(first.live, `${first.live}.cbr-old-${crashed.input.ctx.workflowId}`);
    renameSync(first.staging, first.live);
    await swapDataDirs(crashed.deps, crashed.input, liveSignal());
    assert.deepEqual(treeState(crashed.target.root), onceState);
  });

  it('an aborted signal moves nothing', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup });
    const before = treeState(target.root);
    await rejectsAborted(swapDataDirs(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });

  it('on a node that still runs it is CBR_ERR_SERVICE_CONTROL_FAILED and moves nothing', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup });
    await target.service.start();
    const before = treeState(target.root);
    await rejectsCoded(swapDataDirs(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED', /still running/);
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('chownData', () => {
  it('gives the live directories to the profile owner without walking them; twice is the same', async () => {
    const { deps, input, target } = await restoreUntil('chownData', { backup });
    const p = target.profile;
    const dirs = [...p.dataDirs, p.commitlogDir, p.savedCachesDir, p.hintsDir];
    await chownData(deps, input, liveSignal());
    const once = treeState(target.root);
    await chownData(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
    for (const d of dirs) assert.equal(lstatSync(d).uid, p.owner.uid);
  });

  it('to another user (as root): the directories change owner, what the unpack created keeps its own', asRoot, async () => {
    const { input, target, deps } = await restoreUntil('chownData', { backup });
    const p = { ...target.profile, owner: { ...target.profile.owner, uid: NOBODY, gid: NOBODY } };
    await chownData({ ...deps, profile: p }, input, liveSignal());
    for (const d of [...p.dataDirs, p.commitlogDir, p.savedCachesDir, p.hintsDir]) assert.equal(lstatSync(d).uid, NOBODY);
    assert.equal(lstatSync(join(p.dataDirs.find((d) => existsSync(join(d, 'shop')))!, 'shop')).uid, target.profile.owner.uid);
  });

  it('an aborted signal changes no owner', async () => {
    const { input, target, deps } = await restoreUntil('chownData', { backup });
    const p = { ...target.profile, owner: { ...target.profile.owner, uid: NOBODY, gid: NOBODY } };
    const before = treeState(target.root);
    await rejectsAborted(chownData({ ...deps, profile: p }, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('restoreDataDirs', () => {
  it('puts the moved-aside directories back and drops the restored ones; twice is the same as once', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup });
    const original = treeState(target.root).filter((l) => !l.includes('.cbr-restore-'));
    await swapDataDirs(deps, input, liveSignal());
    await restoreDataDirs(deps, input, liveSignal());
    const once = treeState(target.root);
    assert.deepEqual(
      once.filter((l) => !l.includes('.cbr-restore-')),
      original,
    );
    await restoreDataDirs(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
  });

  it('with nothing moved aside it does nothing, even on a running node', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup });
    const before = treeState(target.root);
    await restoreDataDirs(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), before);
  });

  it('an aborted signal, or a node that runs again, moves nothing back', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup });
    await swapDataDirs(deps, input, liveSignal());
    const swapped = treeState(target.root);
    await rejectsAborted(restoreDataDirs(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), swapped);
    await target.service.start();
    await rejectsCoded(restoreDataDirs(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED');
    assert.deepEqual(treeState(target.root), swapped);
  });
});

describe('assertStopped', () => {
  it('passes on a stopped node whose ports are closed; a running service or an open port is CBR_ERR_SERVICE_CONTROL_FAILED', async () => {
    const { deps, target } = await restoreUntil('swapDataDirs', { backup });
    await assertStopped(deps, 'x');
    const srv = createServer().listen(target.profile.jmx.port, target.profile.jmx.host);
    await new Promise((r) => srv.once('listening', r));
    try {
      await rejectsCoded(assertStopped(deps, 'the data directories are'), 'CBR_ERR_SERVICE_CONTROL_FAILED', /still answers on JMX/);
      // A sandbox's processes are found by command line: its ports are not probed.
      const sandbox = { ...deps, profile: { ...deps.profile, service: { kind: 'sandbox' as const, instanceDir: target.root } } };
      await assertStopped(sandbox, 'x');
    } finally {
      srv.close();
    }
    await target.service.start();
    await rejectsCoded(assertStopped(deps, 'x'), 'CBR_ERR_SERVICE_CONTROL_FAILED', /still running/);
  });
});
