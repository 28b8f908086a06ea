import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { keyFingerprint } from '../../../../src/archive/crypto.ts';
import { writeRecord as putRecord, readRecord } from '../../../../src/catalog/catalog.ts';
import { verifyRecord } from '../../../../src/catalog/record.ts';
import { CbrError } from '../../../../src/core/errors.ts';
import type { BackupResult, NodeFacts } from '../../../../src/machines/backup.machine.ts';
import { deleteBackupObjects } from '../../../../src/steps/backup/deleteBackupObjects.ts';
import { streamArchive } from '../../../../src/steps/backup/streamArchive.ts';
import { takeSnapshot } from '../../../../src/steps/backup/takeSnapshot.ts';
import { verifyNode } from '../../../../src/steps/backup/verifyNode.ts';
import { writeRecord } from '../../../../src/steps/backup/writeRecord.ts';
import { fakeNode, removeFakeNodes, TABLE_IDS } from '../../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../../fixtures/memoryStore.ts';
import { abortedSignal, backupDeps, backupInput, liveSignal, rejectsAborted, rejectsCoded } from '../../../fixtures/stepKit.ts';

/**
 * The backup steps that write to storage: streamArchive, writeRecord and their compensation deleteBackupObjects,
 * on a FakeNode's snapshot (real files in a tmp dir, packed by the real packer) and a MemoryStore with the
 * port's create-only puts. The drivers themselves (local, Swift, S3) run the storage contract suite in
 * test/integration/storage.
 */

after(removeFakeNodes);

/** A node with its snapshot `b1` taken, ready to stream. */
async function snapshotted(opts: { key?: Buffer } = {}) {
  const node = await fakeNode({ userData: true });
  const store = new MemoryStore();
  const deps = backupDeps(node, store, { key: opts.key ?? null });
  const input = backupInput(node);
  const facts = await verifyNode(deps, input, liveSignal());
  await takeSnapshot(deps, input, liveSignal());
  return { node, store, deps, input, facts };
}

describe('streamArchive', () => {
  it('stores one archive of the snapshot and reports its size, digest and what went in; progress as it goes', async () => {
    const { store, deps, input } = await snapshotted();
    const out = await streamArchive(deps, input, liveSignal());
    assert.equal(out.objectKey, 'b1/archive.tar.zst');
    assert.deepEqual(store.keys(), ['b1/archive.tar.zst']);
    assert.equal(out.size, store.objects.get('b1/archive.tar.zst')!.body.length);
    assert.equal(out.files, 12);
    assert.ok(out.rawBytes > 6 * 2048);
    assert.match(out.sha256, /^[0-9a-f]{64}$/);
    assert.ok(deps.progress.length > 0 && deps.progress.every((p) => p.step === 'streaming'));
  });

  it('encrypted: the archive name says so', async () => {
    const { store, deps, input } = await snapshotted({ key: randomBytes(32) });
    const out = await streamArchive(deps, input, liveSignal());
    assert.equal(out.objectKey, 'b1/archive.tar.zst.enc');
    assert.deepEqual(store.keys(), ['b1/archive.tar.zst.enc']);
  });

  it('run twice (a re-run after a crash, no record yet): its own unfinished archive is replaced, one archive stays', async () => {
    const { store, deps, input } = await snapshotted();
    const first = await streamArchive(deps, input, liveSignal());
    const second = await streamArchive(deps, input, liveSignal());
    assert.equal(second.objectKey, first.objectKey);
    assert.equal(second.files, first.files);
    assert.equal(second.rawBytes, first.rawBytes);
    assert.deepEqual(store.keys(), ['b1/archive.tar.zst']);
    assert.equal(store.objects.get('b1/archive.tar.zst')!.body.length, second.size);
  });

  it("an archive with a record is another backup's: CBR_ERR_BACKUP_EXISTS, and it is left alone", async () => {
    const { store, deps, input } = await snapshotted();
    await store.put('b1/archive.tar.zst', Readable.from([Buffer.from('theirs')]));
    await store.put('b1/backup.json', Readable.from([Buffer.from('{}')]));
    const before = store.snapshot();
    await rejectsCoded(streamArchive(deps, input, liveSignal()), 'CBR_ERR_BACKUP_EXISTS', /taken by another backup/);
    assert.deepEqual(store.snapshot(), before);
  });

  it('an archive created by another writer during the upload (create-only put) is CBR_ERR_BACKUP_EXISTS', async () => {
    const { store, deps, input } = await snapshotted();
    store.beforeCommit = (key) => {
      store.objects.set(key, { body: Buffer.from('theirs'), modified: new Date().toISOString() });
      store.beforeCommit = null;
    };
    await rejectsCoded(streamArchive(deps, input, liveSignal()), 'CBR_ERR_BACKUP_EXISTS');
    assert.equal(store.objects.get('b1/archive.tar.zst')!.body.toString(), 'theirs');
  });

  it('a snapshot without files is CBR_ERR_SNAPSHOT_FAILED; a file a restore would refuse is CBR_ERR_BACKUP_UNRESTORABLE; nothing is stored', async () => {
    const empty = await fakeNode({ userData: true });
    const emptyStore = new MemoryStore();
    await rejectsCoded(streamArchive(backupDeps(empty, emptyStore), backupInput(empty), liveSignal()), 'CBR_ERR_SNAPSHOT_FAILED', /no files/);
    assert.deepEqual(emptyStore.keys(), []);

    const { node, store, deps, input } = await snapshotted();
    const snap = join(node.profile.dataDirs[0]!, 'shop', `orders-${TABLE_IDS.orders}`, 'snapshots', 'b1');
    mkdirSync(join(snap, 'sub dir'));
    writeFileSync(join(snap, 'sub dir', 'x.db'), 'x');
    await rejectsCoded(streamArchive(deps, input, liveSignal()), 'CBR_ERR_BACKUP_UNRESTORABLE', /could not be restored/);
    assert.deepEqual(store.keys(), []);
  });

  it('a storage failure keeps its code and leaves no object', async () => {
    const { store, deps, input } = await snapshotted();
    store.fail('put', new CbrError('CBR_ERR_STORAGE_FAILED', 'storage put: 503'));
    await rejectsCoded(streamArchive(deps, input, liveSignal()), 'CBR_ERR_STORAGE_FAILED', /503/);
    assert.deepEqual(store.keys(), []);
  });

  it('an aborted signal stops it before anything is stored', async () => {
    const { store, deps, input } = await snapshotted();
    await rejectsAborted(streamArchive(deps, input, abortedSignal()));
    assert.deepEqual(store.keys(), []);
  });
});

describe('writeRecord', () => {
  async function streamed(opts: { key?: Buffer } = {}) {
    const s = await snapshotted(opts);
    const result = await streamArchive(s.deps, s.input, liveSignal());
    return { ...s, result, recordInput: { ...s.input, node: s.facts as NodeFacts | null, result } };
  }

  it('writes a COMPLETED record of the archive, the files and the node facts, readable by every restore', async () => {
    const { node, store, deps, recordInput, result } = await streamed();
    await writeRecord(deps, recordInput, liveSignal());
    const rec = await readRecord(store, 'b1');
    assert.equal(rec.state, 'COMPLETED');
    assert.equal(rec.object, result.objectKey);
    assert.equal(rec.size, result.size);
    assert.equal(rec.sha256, result.sha256);
    assert.equal(rec.sourceInstance, node.profile.name);
    assert.equal(rec.hostId, node.profile.hostId);
    assert.equal(rec.clusterName, 'Test Cluster');
    assert.deepEqual(rec.keyspaces, ['shop'], 'system keyspaces are in the archive, not in the list');
    assert.equal(rec.fileCount, 12);
    assert.equal(rec.encryption, null);
    assert.equal(rec.settings?.numTokens, 4);
  });

  it('encrypted: the record is sealed with the archive key and names its fingerprint', async () => {
    const key = randomBytes(32);
    const { store, deps, recordInput } = await streamed({ key });
    await writeRecord(deps, recordInput, liveSignal());
    const rec = await readRecord(store, 'b1');
    assert.equal(rec.encryption?.keyFingerprint, keyFingerprint(key));
    verifyRecord(rec, key);
    assert.throws(() => verifyRecord(rec, randomBytes(32)), { code: 'CBR_ERR_RECORD_INVALID' });
  });

  it('run twice (a re-run after a crash right after the put): succeeds, the record stays the same', async () => {
    const { store, deps, recordInput } = await streamed();
    await writeRecord(deps, recordInput, liveSignal());
    const once = store.snapshot();
    await writeRecord(deps, recordInput, liveSignal());
    assert.deepEqual(store.snapshot(), once);
  });

  it("another backup's record under the id is CBR_ERR_BACKUP_EXISTS, and stays", async () => {
    const { store, deps, recordInput } = await streamed();
    await writeRecord(deps, recordInput, liveSignal());
    const theirs = await readRecord(store, 'b1');
    await store.delete('b1/backup.json');
    await putRecord(store, { ...theirs, sha256: 'f'.repeat(64), created: '2025-12-31T00:00:00.000Z' });
    const before = store.snapshot();
    await rejectsCoded(writeRecord(deps, recordInput, liveSignal()), 'CBR_ERR_BACKUP_EXISTS', /another backup's record/);
    assert.deepEqual(store.snapshot(), before);
  });

  it('an archive missing or of another size than streamed is CBR_ERR_STORAGE_FAILED, and no record is written', async () => {
    const { store, deps, recordInput, result } = await streamed();
    const wrongSize: BackupResult = { ...result, size: result.size + 1 };
    await rejectsCoded(writeRecord(deps, { ...recordInput, result: wrongSize }, liveSignal()), 'CBR_ERR_STORAGE_FAILED', /expected/);
    await store.delete(result.objectKey);
    await rejectsCoded(writeRecord(deps, recordInput, liveSignal()), 'CBR_ERR_STORAGE_FAILED', /has no bytes/);
    assert.deepEqual(store.keys(), []);
  });

  it('a storage failure on the put keeps its code', async () => {
    const { store, deps, recordInput } = await streamed();
    store.fail('put', new CbrError('CBR_ERR_STORAGE_FAILED', 'storage put: 500'));
    await rejectsCoded(writeRecord(deps, recordInput, liveSignal()), 'CBR_ERR_STORAGE_FAILED', /500/);
    assert.ok(!store.keys().includes('b1/backup.json'));
  });

  it('an aborted signal stops it before the record', async () => {
    const { store, deps, recordInput } = await streamed();
    await rejectsAborted(writeRecord(deps, recordInput, abortedSignal()));
    assert.deepEqual(store.keys(), ['b1/archive.tar.zst']);
  });
});

describe('deleteBackupObjects', () => {
  async function stored() {
    const { node, store, deps, input } = await snapshotted();
    await streamArchive(deps, input, liveSignal());
    await store.put('b1/backup.json', Readable.from([Buffer.from('{}')]));
    await store.put('b10/archive.tar.zst', Readable.from([Buffer.from('another backup')]));
    return { node, store, deps, input };
  }

  it("removes the record and every object of this backup, not another's; twice is the same as once", async () => {
    const { store, deps, input } = await stored();
    await deleteBackupObjects(deps, input, liveSignal());
    assert.deepEqual(store.keys(), ['b10/archive.tar.zst']);
    await deleteBackupObjects(deps, input, liveSignal());
    assert.deepEqual(store.keys(), ['b10/archive.tar.zst']);
    // The record goes first, so a half-done delete never leaves a listed backup without its archive.
    const ops = store.calls.filter((c) => c.op === 'delete' || c.op === 'purge');
    assert.deepEqual(ops.slice(0, 2), [
      { op: 'delete', key: 'b1/backup.json' },
      { op: 'purge', key: 'b1/' },
    ]);
  });

  it('after CBR_ERR_BACKUP_EXISTS the objects are the other backup’s: nothing is removed', async () => {
    const { store, deps, input } = await stored();
    const before = store.snapshot();
    await deleteBackupObjects(deps, { ctx: { ...input.ctx, error: { code: 'CBR_ERR_BACKUP_EXISTS' } } }, liveSignal());
    assert.deepEqual(store.snapshot(), before);
  });

  it('a storage failure keeps its code; an aborted signal removes nothing', async () => {
    const { store, deps, input } = await stored();
    const before = store.snapshot();
    await rejectsAborted(deleteBackupObjects(deps, input, abortedSignal()));
    assert.deepEqual(store.snapshot(), before);
    store.fail('purge', new CbrError('CBR_ERR_STORAGE_FAILED', 'storage purge: 500'));
    await rejectsCoded(deleteBackupObjects(deps, input, liveSignal()), 'CBR_ERR_STORAGE_FAILED');
  });
});
