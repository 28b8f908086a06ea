import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { writeRecord as putRecord, readRecord } from '../../../../src/catalog/catalog.ts';
import { CbrError } from '../../../../src/core/errors.ts';
import { checkRestore } from '../../../../src/steps/restore/checkRestore.ts';
import { discardStaging } from '../../../../src/steps/restore/discardStaging.ts';
import { restorePaths } from '../../../../src/steps/restore/restoreDeps.ts';
import { unpackBackup } from '../../../../src/steps/restore/unpackBackup.ts';
import { removeFakeNodes, TABLE_IDS, treeState } from '../../../fixtures/fakeNode.ts';
import {
  abortedSignal,
  GiB,
  liveSignal,
  type MadeBackup,
  makeBackup,
  rejectsAborted,
  rejectsCoded,
  restoreDeps,
  restoreUntil,
} from '../../../fixtures/stepKit.ts';

/**
 * The restore steps before the target is touched: checkRestore, unpackBackup (into staging directories beside
 * the data directories) and the rollback's discardStaging, on a backup made by the backup steps and a FakeNode
 * target whose directories are real ones in a tmp dir. A data directory that is a mount point (refused by
 * checkRestore) needs a real mount and is not covered here.
 */

after(removeFakeNodes);

let plain: MadeBackup;
let sealed: MadeBackup;
before(async () => {
  plain = await makeBackup();
  sealed = await makeBackup({ key: true });
});

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

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
