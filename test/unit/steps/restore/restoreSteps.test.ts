import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { CassandraYaml } from '../../../../src/cassandra/yaml.ts';
import { writeRecord as putRecord, readRecord } from '../../../../src/catalog/catalog.ts';
import { CbrError } from '../../../../src/core/errors.ts';
import { assertStopped } from '../../../../src/steps/restore/assertStopped.ts';
import { checkRestore } from '../../../../src/steps/restore/checkRestore.ts';
import { chownData } from '../../../../src/steps/restore/chownData.ts';
import { discardStaging } from '../../../../src/steps/restore/discardStaging.ts';
import { finalizeRestore } from '../../../../src/steps/restore/finalizeRestore.ts';
import { resetIdentity } from '../../../../src/steps/restore/resetIdentity.ts';
import { restoreConfig } from '../../../../src/steps/restore/restoreConfig.ts';
import { restoreDataDirs } from '../../../../src/steps/restore/restoreDataDirs.ts';
import { restorePaths } from '../../../../src/steps/restore/restoreDeps.ts';
import { startMaintenance } from '../../../../src/steps/restore/startMaintenance.ts';
import { startNode } from '../../../../src/steps/restore/startNode.ts';
import { stopNode } from '../../../../src/steps/restore/stopNode.ts';
import { swapDataDirs } from '../../../../src/steps/restore/swapDataDirs.ts';
import { unpackBackup } from '../../../../src/steps/restore/unpackBackup.ts';
import { verifyRestore } from '../../../../src/steps/restore/verifyRestore.ts';
import { writeFinalConfig } from '../../../../src/steps/restore/writeFinalConfig.ts';
import { removeFakeNodes, TABLE_IDS, treeState } from '../../../fixtures/fakeNode.ts';
import {
  abortedSignal,
  GiB,
  liveSignal,
  type MadeBackup,
  makeBackup,
  NEW_PASSWORD,
  rejectsAborted,
  rejectsCoded,
  restoreDeps,
  restoreUntil,
} from '../../../fixtures/stepKit.ts';

/**
 * Every restore step on its own, in the machine's order: checkRestore, unpackBackup, stopNode, swapDataDirs,
 * chownData, startMaintenance, resetIdentity, writeFinalConfig, startNode, verifyRestore, finalizeRestore, and
 * the rollback's restoreConfig, restoreDataDirs and discardStaging (with assertStopped, which guards every move);
 * each run twice (same effect), with an aborted signal (stops, changes nothing) and into its coded errors. Each
 * test starts from the state its step finds in a real restore (restoreUntil: a backup made by the backup steps,
 * a FakeNode target whose directories and cassandra.yaml are real files in a tmp dir, CQL answering system.local,
 * peers and roles from memory with passwords checked against the stored bcrypt hash).
 * Not covered here: a data directory that is a mount point (checkRestore refuses it; needs a real mount), and
 * Cassandra itself starting on the yaml written and reading the hash stored (test/integration/restore).
 * test/unit/steps/stopped.test.ts and ownership.test.ts cover a port still answering and planted links.
 */

after(removeFakeNodes);

let plain: MadeBackup;
let sealed: MadeBackup;
before(async () => {
  plain = await makeBackup();
  sealed = await makeBackup({ key: true });
});

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const yamlOf = (path: string) => CassandraYaml.parse(readFileSync(path, 'utf8'));
const NOBODY = 65534;
const asRoot = { skip: process.getuid?.() !== 0 ? 'needs root (chown to another user)' : false };

describe('checkRestore', () => {
  it('plans the restore: source cluster, keyspaces, sizes, settings, a data directory for every table', async () => {
    const { deps, input, target } = await restoreUntil('checkRestore', { backup: plain });
    const plan = await checkRestore(deps, input, liveSignal());
    const rec = await readRecord(plain.store, 'b1');
    assert.equal(plan.sourceClusterName, 'Source Cluster');
    assert.deepEqual(plan.keyspaces, ['shop']);
    assert.equal(plan.rawBytes, rec.rawBytes);
    assert.equal(plan.fileCount, rec.fileCount);
    assert.equal(plan.wasRunning, true);
    assert.equal(plan.settings?.numTokens, 4);
    assert.deepEqual(Object.keys(plan.placement).sort(), [
      `shop/customers-${TABLE_IDS.customers}`,
      `shop/orders-${TABLE_IDS.orders}`,
      `system/local-${TABLE_IDS.local}`,
    ]);
    for (const i of Object.values(plan.placement)) assert.ok(i >= 0 && i < target.profile.dataDirs.length);
  });

  it('run twice: the same plan, and neither the target nor storage changed', async () => {
    const { deps, input, target, store } = await restoreUntil('checkRestore', { backup: plain });
    const before = [treeState(target.root), store.snapshot()];
    const first = await checkRestore(deps, input, liveSignal());
    assert.deepEqual(await checkRestore(deps, input, liveSignal()), first);
    assert.deepEqual([treeState(target.root), store.snapshot()], before);
    assert.ok(!target.calls.some((c) => /service (start|stop)/.test(c)));
  });

  it('an aborted signal stops it', async () => {
    const { deps, input } = await restoreUntil('checkRestore', { backup: plain });
    await rejectsAborted(checkRestore(deps, input, abortedSignal()));
  });

  it('a missing, truncated or unauthenticated backup is refused with its code', async () => {
    const none = await restoreUntil('checkRestore', { backup: plain });
    await rejectsCoded(checkRestore(none.deps, { ctx: { ...none.input.ctx, backupId: 'nope' } }, liveSignal()), 'CBR_ERR_BACKUP_NOT_FOUND');

    const gone = await restoreUntil('checkRestore', { backup: plain });
    await gone.store.delete('b1/archive.tar.zst');
    await rejectsCoded(checkRestore(gone.deps, gone.input, liveSignal()), 'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', /missing/);

    const cut = await restoreUntil('checkRestore', { backup: plain });
    const body = cut.store.objects.get('b1/archive.tar.zst')!.body;
    cut.store.objects.set('b1/archive.tar.zst', { body: body.subarray(0, body.length - 1), modified: '' });
    await rejectsCoded(checkRestore(cut.deps, cut.input, liveSignal()), 'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', /truncated or replaced/);

    const bad = await restoreUntil('checkRestore', { backup: plain });
    bad.store.objects.set('b1/backup.json', { body: Buffer.from('{"id":"b1"'), modified: '' });
    await rejectsCoded(checkRestore(bad.deps, bad.input, liveSignal()), 'CBR_ERR_RECORD_INVALID', /not JSON/);
  });

  it('keys: none for a sealed backup, the wrong one, one for an unsealed backup, a record altered under its MAC', async () => {
    const noKey = await restoreUntil('checkRestore', { backup: sealed, deps: { key: null } });
    await rejectsCoded(checkRestore(noKey.deps, noKey.input, liveSignal()), 'CBR_ERR_KEY_REQUIRED');

    const wrong = await restoreUntil('checkRestore', { backup: sealed, deps: { key: Buffer.alloc(32, 7) } });
    await rejectsCoded(checkRestore(wrong.deps, wrong.input, liveSignal()), 'CBR_ERR_DECRYPT_FAILED', /wrong key/);

    const unsealed = await restoreUntil('checkRestore', { backup: plain, deps: { key: Buffer.alloc(32, 7) } });
    await rejectsCoded(checkRestore(unsealed.deps, unsealed.input, liveSignal()), 'CBR_ERR_RECORD_INVALID', /not encrypted/);

    const altered = await restoreUntil('checkRestore', { backup: sealed });
    const rec = await readRecord(altered.store, 'b1');
    await altered.store.delete('b1/backup.json');
    await putRecord(altered.store, { ...rec, clusterName: 'Someone Else' });
    await rejectsCoded(checkRestore(altered.deps, altered.input, liveSignal()), 'CBR_ERR_RECORD_INVALID');

    const ok = await restoreUntil('checkRestore', { backup: sealed });
    assert.equal((await checkRestore(ok.deps, ok.input, liveSignal())).sourceClusterName, 'Source Cluster');
  });

  it('a short password is CBR_ERR_INVALID_ARGUMENT; an unreadable cassandra.yaml CBR_ERR_CONFIG; a bad cluster name CBR_ERR_INVALID_ARGUMENT', async () => {
    const pw = await restoreUntil('checkRestore', { backup: plain, deps: { readPassword: async () => 'short' } });
    await rejectsCoded(checkRestore(pw.deps, pw.input, liveSignal()), 'CBR_ERR_INVALID_ARGUMENT', /at least 8/);

    const yaml = await restoreUntil('checkRestore', { backup: plain });
    rmSync(yaml.target.profile.cassandraYaml);
    await rejectsCoded(checkRestore(yaml.deps, yaml.input, liveSignal()), 'CBR_ERR_CONFIG', /ENOENT/);

    const name = await restoreUntil('checkRestore', { backup: plain });
    await rejectsCoded(checkRestore(name.deps, { ctx: { ...name.input.ctx, clusterName: 'two\nlines' } }, liveSignal()), 'CBR_ERR_INVALID_ARGUMENT');
  });

  it('a target holding user keyspaces is CBR_ERR_TARGET_NOT_EMPTY unless forced', async () => {
    const full = await restoreUntil('checkRestore', { backup: plain, target: { userData: true } });
    await rejectsCoded(checkRestore(full.deps, full.input, liveSignal()), 'CBR_ERR_TARGET_NOT_EMPTY', /holds keyspaces shop/);
    const plan = await checkRestore(full.deps, { ctx: { ...full.input.ctx, force: true } }, liveSignal());
    assert.deepEqual(plan.keyspaces, ['shop']);
  });

  it('too little room beside the data directories is CBR_ERR_INSUFFICIENT_SPACE', async () => {
    const { target, store, input } = await restoreUntil('checkRestore', { backup: plain });
    const deps = restoreDeps(target, store, { disk: () => ({ free: 1 << 20, total: GiB }) });
    await rejectsCoded(checkRestore(deps, input, liveSignal()), 'CBR_ERR_INSUFFICIENT_SPACE', /restore needs/);
  });
});

describe('unpackBackup', () => {
  it("puts every file of the backup into the staging directory of its table's data directory, checked", async () => {
    const { deps, input, target } = await restoreUntil('unpackBackup', { backup: plain });
    const out = await unpackBackup(deps, input, liveSignal());
    assert.equal(out.files, input.plan.fileCount);
    const { stagings } = restorePaths(target.profile, input.ctx.workflowId);
    // The source's live SSTables (taken by the snapshot) arrive byte for byte where the plan placed their table.
    const staged = (ks: string, table: string, file: string) => join(stagings[input.plan.placement[`${ks}/${table}`]!]!.staging, ks, table, file);
    const orders = `orders-${TABLE_IDS.orders}`;
    const [d1, d2] = plain.source.profile.dataDirs;
    assert.equal(sha(staged('shop', orders, 'nb-1-big-Data.db')), sha(join(d1!, 'shop', orders, 'nb-1-big-Data.db')));
    assert.equal(sha(staged('shop', orders, 'nb-2-big-Data.db')), sha(join(d2!, 'shop', orders, 'nb-2-big-Data.db')));
    assert.equal(sha(staged('shop', orders, '.orders_by_day/nb-1-big-Data.db')), sha(join(d1!, 'shop', orders, '.orders_by_day', 'nb-1-big-Data.db')));
    assert.ok(deps.progress.length > 0 && deps.progress.every((p) => p.step === 'unpacking' && p.progress.totalFiles === input.plan.fileCount));
    assert.ok(existsSync(join(target.profile.dataDirs[0]!, 'system')), 'the live data is where it was');
  });

  it('run twice (a re-run after a crash): it starts from empty staging directories and ends the same', async () => {
    const { deps, input, target } = await restoreUntil('unpackBackup', { backup: sealed });
    await unpackBackup(deps, input, liveSignal());
    const once = treeState(target.root);
    await unpackBackup(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
  });

  it('an aborted signal stops it; the live data is untouched', async () => {
    const { deps, input, target } = await restoreUntil('unpackBackup', { backup: plain });
    const live = target.profile.dataDirs.map((d) => treeState(d));
    await rejectsAborted(unpackBackup(deps, input, abortedSignal()));
    assert.deepEqual(
      target.profile.dataDirs.map((d) => treeState(d)),
      live,
    );
  });

  it('an altered archive, a vanished record or a failing store is refused with its code', async () => {
    const flipped = await restoreUntil('unpackBackup', { backup: plain });
    const body = Buffer.from(flipped.store.objects.get('b1/archive.tar.zst')!.body);
    body[body.length >> 1]! ^= 0xff;
    flipped.store.objects.set('b1/archive.tar.zst', { body, modified: '' });
    await assert.rejects(unpackBackup(flipped.deps, flipped.input, liveSignal()), (err: CbrError) => {
      assert.ok(['CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH', 'CBR_ERR_ARCHIVE_CORRUPT'].includes(err.code), `${err.code}: ${err.message}`);
      return true;
    });

    const sealedFlip = await restoreUntil('unpackBackup', { backup: sealed });
    const enc = Buffer.from(sealedFlip.store.objects.get('b1/archive.tar.zst.enc')!.body);
    enc[enc.length >> 1]! ^= 0xff;
    sealedFlip.store.objects.set('b1/archive.tar.zst.enc', { body: enc, modified: '' });
    await rejectsCoded(unpackBackup(sealedFlip.deps, sealedFlip.input, liveSignal()), 'CBR_ERR_DECRYPT_FAILED');

    const gone = await restoreUntil('unpackBackup', { backup: plain });
    await gone.store.delete('b1/backup.json');
    await rejectsCoded(unpackBackup(gone.deps, gone.input, liveSignal()), 'CBR_ERR_BACKUP_NOT_FOUND');

    const failing = await restoreUntil('unpackBackup', { backup: plain });
    failing.store.fail('get', new CbrError('CBR_ERR_STORAGE_FAILED', 'storage get: 503'), { match: (k) => k.startsWith('b1/archive') });
    await rejectsCoded(unpackBackup(failing.deps, failing.input, liveSignal()), 'CBR_ERR_STORAGE_FAILED');
  });

  it("another backup's archive under this record fails the record's digest", async () => {
    const other = await makeBackup({ source: { name: 'other' } });
    const { deps, input, store } = await restoreUntil('unpackBackup', { backup: plain });
    // The archive of another backup with the same files but other bytes, under this backup's record.
    await store.delete('b1/archive.tar.zst');
    await store.put('b1/archive.tar.zst', Readable.from([other.store.objects.get('b1/archive.tar.zst')!.body]));
    await rejectsCoded(unpackBackup(deps, input, liveSignal()), 'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH');
  });
});

describe('discardStaging', () => {
  it('removes the staging directories and nothing else; twice is the same as once', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup: plain });
    const { stagings } = restorePaths(target.profile, input.ctx.workflowId);
    assert.ok(stagings.every((s) => existsSync(s.staging)));
    const live = target.profile.dataDirs.map((d) => treeState(d));
    await discardStaging(deps, input, liveSignal());
    assert.ok(stagings.every((s) => !existsSync(s.staging)));
    const once = treeState(target.root);
    await discardStaging(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
    assert.deepEqual(
      target.profile.dataDirs.map((d) => treeState(d)),
      live,
    );
  });

  it('an aborted signal removes nothing', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup: plain });
    const before = treeState(target.root);
    await rejectsAborted(discardStaging(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('stopNode', () => {
  it('stops a running node; twice stops it once', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup: plain });
    await stopNode(deps, input, liveSignal());
    await stopNode(deps, input, liveSignal());
    assert.equal(target.running, false);
    assert.deepEqual(
      target.calls.filter((c) => c === 'service stop'),
      ['service stop'],
    );
  });

  it('an aborted signal leaves the node running', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup: plain });
    await rejectsAborted(stopNode(deps, input, abortedSignal()));
    assert.equal(target.running, true);
  });

  it('a stop that fails is CBR_ERR_SERVICE_CONTROL_FAILED', async () => {
    const { deps, input, target } = await restoreUntil('stopNode', { backup: plain });
    target.fail('service.stop', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'systemctl stop cassandra: timeout'));
    await rejectsCoded(stopNode(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED', /timeout/);
  });
});

describe('swapDataDirs', () => {
  it('moves every live directory aside and each staging directory into its place, with the old mode', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup: plain });
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
    const once = await restoreUntil('swapDataDirs', { backup: plain });
    await swapDataDirs(once.deps, once.input, liveSignal());
    const onceState = treeState(once.target.root);
    await swapDataDirs(once.deps, once.input, liveSignal());
    assert.deepEqual(treeState(once.target.root), onceState);

    // The crash came after the first data directory was moved aside and its staging directory renamed in.
    const crashed = await restoreUntil('swapDataDirs', { backup: plain });
    const paths = restorePaths(crashed.target.profile, crashed.input.ctx.workflowId);
    const first = paths.stagings[0]!;
    renameSync(first.live, `${first.live}.cbr-old-${crashed.input.ctx.workflowId}`);
    renameSync(first.staging, first.live);
    await swapDataDirs(crashed.deps, crashed.input, liveSignal());
    assert.deepEqual(treeState(crashed.target.root), onceState);
  });

  it('an aborted signal moves nothing', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup: plain });
    const before = treeState(target.root);
    await rejectsAborted(swapDataDirs(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });

  it('on a node that still runs it is CBR_ERR_SERVICE_CONTROL_FAILED and moves nothing', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup: plain });
    await target.service.start();
    const before = treeState(target.root);
    await rejectsCoded(swapDataDirs(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED', /still running/);
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('chownData', () => {
  it('gives the live directories to the profile owner without walking them; twice is the same', async () => {
    const { deps, input, target } = await restoreUntil('chownData', { backup: plain });
    const p = target.profile;
    const dirs = [...p.dataDirs, p.commitlogDir, p.savedCachesDir, p.hintsDir];
    await chownData(deps, input, liveSignal());
    const once = treeState(target.root);
    await chownData(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
    for (const d of dirs) assert.equal(lstatSync(d).uid, p.owner.uid);
  });

  it('to another user (as root): the directories change owner, what the unpack created keeps its own', asRoot, async () => {
    const { input, target, deps } = await restoreUntil('chownData', { backup: plain });
    const p = { ...target.profile, owner: { ...target.profile.owner, uid: NOBODY, gid: NOBODY } };
    await chownData({ ...deps, profile: p }, input, liveSignal());
    for (const d of [...p.dataDirs, p.commitlogDir, p.savedCachesDir, p.hintsDir]) assert.equal(lstatSync(d).uid, NOBODY);
    assert.equal(lstatSync(join(p.dataDirs.find((d) => existsSync(join(d, 'shop')))!, 'shop')).uid, target.profile.owner.uid);
  });

  it('an aborted signal changes no owner', async () => {
    const { input, target, deps } = await restoreUntil('chownData', { backup: plain });
    const p = { ...target.profile, owner: { ...target.profile.owner, uid: NOBODY, gid: NOBODY } };
    const before = treeState(target.root);
    await rejectsAborted(chownData({ ...deps, profile: p }, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('restoreDataDirs', () => {
  it('puts the moved-aside directories back and drops the restored ones; twice is the same as once', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup: plain });
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
    const { deps, input, target } = await restoreUntil('stopNode', { backup: plain });
    const before = treeState(target.root);
    await restoreDataDirs(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), before);
  });

  it('an aborted signal, or a node that runs again, moves nothing back', async () => {
    const { deps, input, target } = await restoreUntil('swapDataDirs', { backup: plain });
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
    const { deps, target } = await restoreUntil('swapDataDirs', { backup: plain });
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

describe('startMaintenance', () => {
  it("keeps the operator's yaml, writes the maintenance one (source cluster name, no auth, loopback) and starts the node on it", async () => {
    const { deps, input, target } = await restoreUntil('startMaintenance', { backup: plain });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    const original = readFileSync(paths.yaml);
    await startMaintenance(deps, input, liveSignal());
    assert.deepEqual(readFileSync(paths.yamlOrig), original);
    const y = yamlOf(paths.yaml);
    assert.equal(y.get('cluster_name'), 'Source Cluster');
    assert.equal(y.componentClass('authenticator'), 'AllowAllAuthenticator');
    assert.equal(y.get('rpc_address'), '127.0.0.1');
    assert.equal(y.get('listen_address'), '127.0.0.1');
    assert.equal(y.get('num_tokens'), 4, "the source's data settings");
    assert.notEqual(y.get('native_transport_port'), target.profile.cql.port);
    assert.equal(target.running, true);
    assert.deepEqual(target.listening, { host: '127.0.0.1', port: y.get('native_transport_port') });
    assert.equal(statSync(paths.yaml).mode & 0o777, statSync(paths.yamlOrig).mode & 0o777);
  });

  it("run twice: the kept yaml is still the operator's, and the node runs on the maintenance yaml written last", async () => {
    const { deps, input, target } = await restoreUntil('startMaintenance', { backup: plain });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    const original = readFileSync(paths.yaml);
    await startMaintenance(deps, input, liveSignal());
    await startMaintenance(deps, input, liveSignal());
    assert.deepEqual(readFileSync(paths.yamlOrig), original);
    const y = yamlOf(paths.yaml);
    assert.equal(y.get('cluster_name'), 'Source Cluster');
    assert.deepEqual(target.listening, { host: '127.0.0.1', port: y.get('native_transport_port') });
  });

  it('an aborted signal writes nothing and starts nothing', async () => {
    const { deps, input, target } = await restoreUntil('startMaintenance', { backup: plain });
    const before = treeState(target.root);
    await rejectsAborted(startMaintenance(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
    assert.equal(target.running, false);
  });

  it('a start that fails is CBR_ERR_SERVICE_CONTROL_FAILED; the kept yaml is there for the rollback', async () => {
    const { deps, input, target } = await restoreUntil('startMaintenance', { backup: plain });
    target.fail('service.start', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'systemctl start: failed'));
    await rejectsCoded(startMaintenance(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED');
    assert.ok(existsSync(restorePaths(target.profile, input.ctx.workflowId).yamlOrig));
  });
});

describe('resetIdentity', () => {
  it("sets the new cluster name, forgets the source's peers, makes the superuser, flushes and stops", async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup: plain });
    const out = await resetIdentity(deps, input, liveSignal());
    assert.deepEqual(out, { superusers: ['admin', 'cassandra'] });
    assert.equal(target.clusterName, 'Restored Cluster');
    assert.deepEqual(target.peers, []);
    assert.deepEqual(target.peersV2, []);
    const admin = target.roles.get('admin')!;
    assert.ok(admin.superuser && admin.login);
    assert.match(admin.hash!, /^\$2a\$10\$/, "jBCrypt's prefix and cost");
    assert.ok(bcrypt.compareSync(NEW_PASSWORD, admin.hash!));
    assert.ok(target.calls.includes('nodetool flush'));
    assert.equal(target.running, false);
    assert.equal(target.openSessions, 0);
    // Every statement went to the maintenance endpoint, without credentials.
    assert.ok(target.calls.filter((c) => c.startsWith('cql connect')).every((c) => !c.includes(' as ')));
  });

  it('run twice (a re-run after a crash): the node is started again and the same identity results', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup: plain });
    const first = await resetIdentity(deps, input, liveSignal());
    const second = await resetIdentity(deps, input, liveSignal());
    assert.deepEqual(second, first);
    assert.equal(target.clusterName, 'Restored Cluster');
    assert.deepEqual(target.peers, []);
    assert.ok(bcrypt.compareSync(NEW_PASSWORD, target.roles.get('admin')!.hash!));
    assert.equal(target.running, false);
  });

  it('an aborted signal changes nothing on the node', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup: plain });
    const clusterName = target.clusterName;
    await rejectsAborted(resetIdentity(deps, input, abortedSignal()));
    assert.equal(target.clusterName, clusterName);
    assert.equal(target.peers.length, 2);
    assert.ok(!target.roles.has('admin'));
  });

  it('a node that does not answer once is restarted once; twice is CBR_ERR_CQL_FAILED', async () => {
    const once = await restoreUntil('resetIdentity', { backup: plain });
    once.target.fail('cql.execute', new CbrError('CBR_ERR_CQL_FAILED', 'CQL failed: timeout'), { times: 1, match: /^UPDATE system\.local/ });
    assert.deepEqual(await resetIdentity(once.deps, once.input, liveSignal()), { superusers: ['admin', 'cassandra'] });
    assert.ok(once.deps.log.lines.some((l) => l.level === 'warn' && /restarting it once/.test(l.msg)));
    assert.equal(once.target.openSessions, 0);

    const twice = await restoreUntil('resetIdentity', { backup: plain });
    twice.target.fail('cql.execute', new CbrError('CBR_ERR_CQL_FAILED', 'CQL failed: timeout'), { match: /^UPDATE system\.local/ });
    await rejectsCoded(resetIdentity(twice.deps, twice.input, liveSignal()), 'CBR_ERR_CQL_FAILED', /timeout/);
    assert.equal(twice.target.calls.filter((c) => c === 'service stop').length, 1, 'one restart, then no more');

    const flush = await restoreUntil('resetIdentity', { backup: plain });
    flush.target.fail('nodetool.flush', new CbrError('CBR_ERR_NODETOOL_FAILED', 'nodetool flush failed'));
    await rejectsCoded(resetIdentity(flush.deps, flush.input, liveSignal()), 'CBR_ERR_NODETOOL_FAILED');
  });

  it('a start refused for the cluster name a killed reset already saved takes that name into the maintenance yaml', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup: plain });
    const { yaml } = restorePaths(target.profile, input.ctx.workflowId);
    target.fail(
      'service.start',
      new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'Cassandra exited: Saved cluster name Restored Cluster != configured name Source Cluster'),
      { times: 1 },
    );
    await resetIdentity(deps, input, liveSignal());
    assert.equal(yamlOf(yaml).get('cluster_name'), 'Restored Cluster');
    assert.equal(target.clusterName, 'Restored Cluster');
  });

  it('a saved cluster name this restore does not know is left alone', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup: plain });
    const { yaml } = restorePaths(target.profile, input.ctx.workflowId);
    target.fail('service.start', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'Saved cluster name Elsewhere != configured name Source Cluster'));
    await rejectsCoded(resetIdentity(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED', /Elsewhere/);
    assert.equal(yamlOf(yaml).get('cluster_name'), 'Source Cluster');
  });
});

describe('writeFinalConfig', () => {
  it("writes the operator's yaml with the new cluster name and the settings the data needs, and says what changed", async () => {
    const { deps, input, target } = await restoreUntil('writeFinalConfig', { backup: plain });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    const out = await writeFinalConfig(deps, input, liveSignal());
    const y = yamlOf(paths.yaml);
    assert.equal(y.get('cluster_name'), 'Restored Cluster');
    assert.equal(y.get('rpc_address'), 'localhost', "the operator's address again");
    assert.equal(y.get('native_transport_port'), yamlOf(paths.yamlOrig).get('native_transport_port'), "the operator's port again");
    assert.deepEqual(
      out.changes.map((c) => c.key),
      ['num_tokens', 'uuid_sstable_identifiers_enabled', 'sstable.selected_format', 'storage_compatibility_mode'],
    );
    assert.ok(deps.log.lines.some((l) => /setting changed/.test(l.msg) && l.fields?.['key'] === 'num_tokens'));
    assert.equal(statSync(paths.yaml).mode & 0o777, statSync(paths.yamlOrig).mode & 0o777);
  });

  it('run twice: the same file and the same changes', async () => {
    const { deps, input, target } = await restoreUntil('writeFinalConfig', { backup: plain });
    const first = await writeFinalConfig(deps, input, liveSignal());
    const once = treeState(target.root);
    assert.deepEqual(await writeFinalConfig(deps, input, liveSignal()), first);
    assert.deepEqual(treeState(target.root), once);
  });

  it('an aborted signal, or a cluster name no yaml can carry (CBR_ERR_INVALID_ARGUMENT), leaves the yaml as it was', async () => {
    const { deps, input, target } = await restoreUntil('writeFinalConfig', { backup: plain });
    const before = treeState(target.root);
    await rejectsAborted(writeFinalConfig(deps, input, abortedSignal()));
    await rejectsCoded(writeFinalConfig(deps, { ...input, ctx: { ...input.ctx, clusterName: 'a\u2028b' } }, liveSignal()), 'CBR_ERR_INVALID_ARGUMENT');
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('startNode', () => {
  it('starts the node where its profile says CQL answers; twice leaves it running', async () => {
    const { deps, input, target } = await restoreUntil('startNode', { backup: plain });
    await startNode(deps, input, liveSignal());
    await startNode(deps, input, liveSignal());
    assert.equal(target.running, true);
    assert.deepEqual(target.listening, { host: target.profile.cql.host, port: target.profile.cql.port });
  });

  it('an aborted signal starts nothing; a failing start is CBR_ERR_SERVICE_CONTROL_FAILED', async () => {
    const { deps, input, target } = await restoreUntil('startNode', { backup: plain });
    await rejectsAborted(startNode(deps, input, abortedSignal()));
    assert.equal(target.running, false);
    target.fail('service.start', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'CQL did not answer in 300 s'));
    await rejectsCoded(startNode(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED');
  });
});

describe('verifyRestore', () => {
  it('passes, twice, on a node that takes the new password and has the cluster name and keyspaces', async () => {
    const { deps, input, target } = await restoreUntil('verifyRestore', { backup: plain });
    await verifyRestore(deps, input, liveSignal());
    await verifyRestore(deps, input, liveSignal());
    assert.ok(target.calls.includes(`cql connect ${target.profile.cql.host}:${target.profile.cql.port} as admin`));
    assert.equal(target.openSessions, 0);
  });

  it('a wrong cluster name or a missing keyspace is CBR_ERR_RESTORE_VERIFY_FAILED at once', async () => {
    const { deps, input, target } = await restoreUntil('verifyRestore', { backup: plain });
    await rejectsCoded(
      verifyRestore(deps, { ...input, plan: { ...input.plan, keyspaces: ['shop', 'gone'] } }, liveSignal()),
      'CBR_ERR_RESTORE_VERIFY_FAILED',
      /gone/,
    );
    target.clusterName = 'Source Cluster';
    await rejectsCoded(verifyRestore(deps, input, liveSignal()), 'CBR_ERR_RESTORE_VERIFY_FAILED', /cluster_name is Source Cluster/);
    assert.equal(target.openSessions, 0);
  });

  it('a login that fails is tried again; an abort during the waits stops it', async () => {
    const { deps, input, target } = await restoreUntil('verifyRestore', { backup: plain });
    target.fail('cql.connect', new CbrError('CBR_ERR_CQL_FAILED', 'Provided username and/or password are incorrect'), { times: 1 });
    await verifyRestore(deps, input, liveSignal());

    const ac = new AbortController();
    target.fail('cql.connect', () => {
      setTimeout(() => ac.abort(), 50);
      return new CbrError('CBR_ERR_CQL_FAILED', 'Provided username and/or password are incorrect');
    });
    await rejectsAborted(verifyRestore(deps, input, ac.signal));
    await rejectsAborted(verifyRestore(deps, input, abortedSignal()));
  });
});

describe('finalizeRestore', () => {
  it('stores the new credentials for the profile, then removes the old directories, the kept yaml and the stagings; twice is the same', async () => {
    const { deps, input, target } = await restoreUntil('finalizeRestore', { backup: plain });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    await finalizeRestore(deps, input, liveSignal());
    assert.deepEqual(JSON.parse(readFileSync(target.profile.cql.credentialsFile, 'utf8')), { username: 'admin', password: NEW_PASSWORD });
    assert.equal(statSync(target.profile.cql.credentialsFile).mode & 0o777, 0o600);
    for (const { old } of paths.moves) assert.ok(!existsSync(old));
    for (const { staging } of paths.stagings) assert.ok(!existsSync(staging));
    assert.ok(!existsSync(paths.yamlOrig));
    const once = treeState(target.root);
    await finalizeRestore(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
  });

  it('an aborted signal removes nothing', async () => {
    const { deps, input, target } = await restoreUntil('finalizeRestore', { backup: plain });
    const before = treeState(target.root);
    await rejectsAborted(finalizeRestore(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('restoreConfig', () => {
  it("puts the operator's yaml back, byte for byte and with its mode; twice is the same as once", async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup: plain });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    const original = readFileSync(paths.yamlOrig);
    const mode = statSync(paths.yamlOrig).mode & 0o777;
    await restoreConfig(deps, input, liveSignal());
    assert.deepEqual(readFileSync(paths.yaml), original);
    assert.equal(statSync(paths.yaml).mode & 0o777, mode);
    assert.ok(!existsSync(paths.yamlOrig));
    const once = treeState(target.root);
    await restoreConfig(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
  });

  it('an aborted signal leaves both files as they are', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup: plain });
    const before = treeState(target.root);
    await rejectsAborted(restoreConfig(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });
});
