import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { keyFingerprint } from '../../../../src/archive/crypto.ts';
import { writeRecord as putRecord, readRecord } from '../../../../src/catalog/catalog.ts';
import { verifyRecord } from '../../../../src/catalog/record.ts';
import { CbrError } from '../../../../src/core/errors.ts';
import type { BackupResult, NodeFacts } from '../../../../src/machines/backup.machine.ts';
import { assertIdFree } from '../../../../src/steps/backup/assertIdFree.ts';
import { checkFreeSpace } from '../../../../src/steps/backup/checkFreeSpace.ts';
import { clearSnapshot } from '../../../../src/steps/backup/clearSnapshot.ts';
import { deleteBackupObjects } from '../../../../src/steps/backup/deleteBackupObjects.ts';
import { streamArchive } from '../../../../src/steps/backup/streamArchive.ts';
import { takeSnapshot } from '../../../../src/steps/backup/takeSnapshot.ts';
import { verifyNode } from '../../../../src/steps/backup/verifyNode.ts';
import { writeRecord } from '../../../../src/steps/backup/writeRecord.ts';
import { fakeNode, removeFakeNodes, TABLE_IDS, treeState } from '../../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../../fixtures/memoryStore.ts';
import { abortedSignal, backupDeps, backupInput, GiB, liveSignal, rejectsAborted, rejectsCoded } from '../../../fixtures/stepKit.ts';

/**
 * Every backup step on its own: verifyNode (with assertIdFree), checkFreeSpace, clearSnapshot, takeSnapshot,
 * streamArchive, writeRecord and the compensation deleteBackupObjects; each run twice (same effect), with an
 * aborted signal (stops, changes nothing) and into its coded errors. On a FakeNode (nodetool, service and CQL from
 * one in-memory state; snapshots are hard links in a tmp dir) and a MemoryStore with the port's create-only puts.
 * What needs a real node or store (nodetool's JVM, the CQL driver, a real ring's `nodetool status`, the storage
 * drivers) is covered by test/integration/backup and the storage contract suite in test/integration/storage.
 */

after(removeFakeNodes);

async function source(opts: { running?: boolean } = {}) {
  const node = await fakeNode({ userData: true, ...opts });
  const store = new MemoryStore();
  return { node, store, deps: backupDeps(node, store), input: backupInput(node) };
}

describe('verifyNode', () => {
  it('returns the cluster name, version and data settings of a running node, and closes its session', async () => {
    const { node, deps, input } = await source();
    const facts = await verifyNode(deps, input, liveSignal());
    assert.equal(facts.clusterName, 'Test Cluster');
    assert.equal(facts.cassandraVersion, '5.0.6');
    assert.deepEqual(facts.settings, {
      numTokens: 4,
      tokens: node.tokens,
      partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
      uuidSstableIdentifiers: true,
      sstableFormat: 'bti',
      storageCompatibilityMode: 'NONE',
    });
    assert.equal(node.openSessions, 0);
  });

  it('run twice: the same facts, and nothing changed on the node or in storage', async () => {
    const { node, store, deps, input } = await source();
    const before = treeState(node.root);
    const first = await verifyNode(deps, input, liveSignal());
    const second = await verifyNode(deps, input, liveSignal());
    assert.deepEqual(second, first);
    assert.deepEqual(treeState(node.root), before);
    assert.deepEqual(store.keys(), []);
    assert.ok(!node.calls.some((c) => /snapshot |flush|service (start|stop)|UPDATE|INSERT|DELETE/.test(c)), node.calls.join('\n'));
  });

  it('an aborted signal stops it as an abort (not as a node that does not answer)', async () => {
    const { node, deps, input } = await source();
    await rejectsAborted(verifyNode(deps, input, abortedSignal()));
    assert.deepEqual(await node.snapshotTags(), []);
  });

  it('a stopped node, a JMX failure or a node not Up/Normal is CBR_ERR_NODE_NOT_RUNNING', async () => {
    const stopped = await source({ running: false });
    await rejectsCoded(verifyNode(stopped.deps, stopped.input, liveSignal()), 'CBR_ERR_NODE_NOT_RUNNING', /not running/);

    const jmx = await source();
    jmx.node.fail('nodetool.status', new CbrError('CBR_ERR_NODETOOL_FAILED', 'nodetool status failed: connection refused'));
    await rejectsCoded(verifyNode(jmx.deps, jmx.input, liveSignal()), 'CBR_ERR_NODE_NOT_RUNNING', /JMX does not answer/);

    const joining = await source();
    joining.deps.nodetool = { ...joining.node.nodetool, status: async () => ({ hostId: 'h1', live: true, state: 'Joining', mode: 'JOINING' }) };
    await rejectsCoded(verifyNode(joining.deps, joining.input, liveSignal()), 'CBR_ERR_NODE_NOT_RUNNING', /not Up\/Normal \(Up\/Joining\)/);

    const down = await source();
    down.deps.nodetool = { ...down.node.nodetool, status: async () => ({ hostId: 'h1', live: false, state: 'Normal', mode: 'NORMAL' }) };
    await rejectsCoded(verifyNode(down.deps, down.input, liveSignal()), 'CBR_ERR_NODE_NOT_RUNNING', /not Up\/Normal \(Down\/Normal\)/);
  });

  it('a backup id taken in storage or by a snapshot tag on the node is CBR_ERR_BACKUP_EXISTS', async () => {
    const inStore = await source();
    await inStore.store.put('b1/backup.json', Readable.from([Buffer.from('{}')]));
    await rejectsCoded(verifyNode(inStore.deps, inStore.input, liveSignal()), 'CBR_ERR_BACKUP_EXISTS', /memory:test holds b1\/backup.json/);

    const onNode = await source();
    await onNode.node.nodetool.snapshot('b1');
    await rejectsCoded(verifyNode(onNode.deps, onNode.input, liveSignal()), 'CBR_ERR_BACKUP_EXISTS', /snapshot tagged b1/);
    assert.deepEqual(await onNode.node.snapshotTags(), ['b1'], "the operator's snapshot stays");
  });

  it('a name that cannot go into a record is CBR_ERR_INVALID_ARGUMENT; a CQL failure is CBR_ERR_CQL_FAILED', async () => {
    const named = await source();
    await rejectsCoded(verifyNode(named.deps, backupInput(named.node, { name: 'two\nlines' }), liveSignal()), 'CBR_ERR_INVALID_ARGUMENT');

    const cql = await source();
    cql.node.fail('cql.execute', new CbrError('CBR_ERR_CQL_FAILED', 'CQL failed: timeout'), { match: /system_views\.settings/ });
    await rejectsCoded(verifyNode(cql.deps, cql.input, liveSignal()), 'CBR_ERR_CQL_FAILED');
    assert.equal(cql.node.openSessions, 0, 'the session is closed after a failure too');
  });
});

describe('assertIdFree', () => {
  it('passes twice on a free id; a nodetool failure keeps its code', async () => {
    const { node, deps, input } = await source();
    await assertIdFree(deps, input, liveSignal());
    await assertIdFree(deps, input, liveSignal());
    node.fail('nodetool.listSnapshots', new CbrError('CBR_ERR_SNAPSHOT_FAILED', 'nodetool listsnapshots failed'));
    await rejectsCoded(assertIdFree(deps, input, liveSignal()), 'CBR_ERR_SNAPSHOT_FAILED');
  });

  it('an aborted signal stops it', async () => {
    const { deps, input } = await source();
    await rejectsAborted(assertIdFree(deps, input, abortedSignal()));
  });
});

describe('checkFreeSpace', () => {
  it('returns the fullest data directory, the same twice', async () => {
    const { node, store } = await source();
    const d2 = node.profile.dataDirs[1];
    const disk = (path: string) => (path === d2 ? { free: 30 * GiB, total: 100 * GiB } : { free: 60 * GiB, total: 100 * GiB });
    const deps = backupDeps(node, store, { disk });
    const input = backupInput(node);
    const first = await checkFreeSpace(deps, input, liveSignal());
    assert.deepEqual(first, { freeBytes: 30 * GiB, freePercent: 30 });
    assert.deepEqual(await checkFreeSpace(deps, input, liveSignal()), first);
  });

  it('under --min-free-percent on any data directory is CBR_ERR_INSUFFICIENT_SPACE', async () => {
    const { node, store } = await source();
    const d2 = node.profile.dataDirs[1];
    const deps = backupDeps(node, store, { disk: (path) => (path === d2 ? { free: 5 * GiB, total: 100 * GiB } : { free: 90 * GiB, total: 100 * GiB }) });
    await rejectsCoded(
      checkFreeSpace(deps, backupInput(node, { minFreePercent: 10 }), liveSignal()),
      'CBR_ERR_INSUFFICIENT_SPACE',
      /only 5\.0% .* free on .*data2/,
    );
    assert.deepEqual(await checkFreeSpace(deps, backupInput(node, { minFreePercent: 5 }), liveSignal()), { freeBytes: 5 * GiB, freePercent: 5 });
    // A filesystem that reports no size at all counts as full.
    const empty = backupDeps(node, store, { disk: () => ({ free: 0, total: 0 }) });
    await rejectsCoded(checkFreeSpace(empty, backupInput(node), liveSignal()), 'CBR_ERR_INSUFFICIENT_SPACE');
  });

  it('an aborted signal stops it', async () => {
    const { deps, input } = await source();
    await rejectsAborted(checkFreeSpace(deps, input, abortedSignal()));
  });
});

describe('clearSnapshot', () => {
  it("removes the backup's snapshot from every table; twice is the same as once", async () => {
    const { node, deps, input } = await source();
    await node.nodetool.snapshot('b1');
    await node.nodetool.snapshot('operators-own');
    await clearSnapshot(deps, input, liveSignal());
    const once = treeState(node.root);
    await clearSnapshot(deps, input, liveSignal());
    assert.deepEqual(treeState(node.root), once);
    assert.deepEqual(await node.snapshotTags(), ['operators-own'], 'only the tag of this backup goes');
  });

  it('retries a failing clearsnapshot, then succeeds', async () => {
    const { node, deps, input } = await source();
    await node.nodetool.snapshot('b1');
    node.fail('nodetool.clearSnapshot', new CbrError('CBR_ERR_SNAPSHOT_FAILED', 'nodetool clearsnapshot failed: busy'), { times: 1 });
    await clearSnapshot(deps, input, liveSignal());
    assert.deepEqual(await node.snapshotTags(), []);
    assert.equal(node.calls.filter((c) => c === 'nodetool clearsnapshot b1').length, 2);
    assert.ok(deps.log.lines.some((l) => l.level === 'warn' && /retrying/.test(l.msg)));
  });

  it('an abort during its retries ends them with the abort; an aborted signal leaves the snapshot', async () => {
    const { node, deps, input } = await source();
    await node.nodetool.snapshot('b1');
    await rejectsAborted(clearSnapshot(deps, input, abortedSignal()));
    assert.deepEqual(await node.snapshotTags(), ['b1']);

    const ac = new AbortController();
    node.fail('nodetool.clearSnapshot', () => {
      queueMicrotask(() => ac.abort());
      return new CbrError('CBR_ERR_SNAPSHOT_FAILED', 'nodetool clearsnapshot failed');
    });
    const t0 = Date.now();
    await assert.rejects(clearSnapshot(deps, input, ac.signal), CbrError);
    assert.ok(Date.now() - t0 < 900, 'no retry sleep after the abort');
    assert.deepEqual(await node.snapshotTags(), ['b1']);
  });

  it('a clearsnapshot that keeps failing fails with its code after three attempts', async () => {
    const { node, deps, input } = await source();
    node.fail('nodetool.clearSnapshot', new CbrError('CBR_ERR_SNAPSHOT_FAILED', 'nodetool clearsnapshot failed'));
    await rejectsCoded(clearSnapshot(deps, input, liveSignal()), 'CBR_ERR_SNAPSHOT_FAILED');
    assert.equal(node.calls.filter((c) => c === 'nodetool clearsnapshot b1').length, 3);
  });
});

describe('takeSnapshot', () => {
  it('snapshots every table and counts the files and bytes', async () => {
    const { node, deps, input } = await source();
    const out = await takeSnapshot(deps, input, liveSignal());
    // system.local 1 + orders 3 (+1 in data2) + customers 1 = 6 SSTable files, 2 KiB + 64 bytes each; plus a
    // manifest.json and a schema.cql per table (orders keeps one of each of its two halves).
    assert.equal(out.files, 6 + 3 * 2);
    assert.ok(out.bytes > 6 * 2048);
    assert.ok(existsSync(join(node.profile.dataDirs[0]!, 'shop', `orders-${TABLE_IDS.orders}`, 'snapshots', 'b1', '.orders_by_day', 'nb-1-big-Data.db')));
  });

  it('run twice (a re-run after a crash): the half-made snapshot is cleared first, the result is the same', async () => {
    const { node, deps, input } = await source();
    const first = await takeSnapshot(deps, input, liveSignal());
    const once = treeState(node.root);
    const second = await takeSnapshot(deps, input, liveSignal());
    assert.deepEqual(second, first);
    assert.deepEqual(treeState(node.root), once);
  });

  it('counts the rows of each user table of a single node exactly when no write came between, and says why it did not otherwise', async () => {
    const { node, deps, input } = await source();
    node.peers = [];
    node.rowCounts.set('shop.orders', 1200).set('shop.customers', 7);
    node.writeCounts.set('shop.orders', 5000).set('shop.customers', 40);
    const out = await takeSnapshot(deps, input, liveSignal());
    assert.deepEqual(out.tables, [
      { keyspace: 'shop', table: 'customers', rows: 7 },
      { keyspace: 'shop', table: 'orders', rows: 1200 },
    ]);
    // The order is what makes the count exact: write counters, snapshot, counts, write counters again.
    const order = node.calls
      .filter((c) => /local_write_latency|nodetool snapshot|count\(\*\)/.test(c))
      .map((c) => c.replace(/^cql SELECT .*(latency|count).*$/, '$1'));
    assert.deepEqual(order, ['latency', 'nodetool snapshot b1', 'count', 'count', 'latency']);
    assert.equal(node.openSessions, 0);

    // A write lands on orders while it is counted: its count is not recorded as exact.
    const cql = deps.cql;
    deps.cql = async () => {
      const s = await cql();
      return {
        ...s,
        execute: async (q: string, p?: unknown[]) => {
          const rows = await s.execute(q, p);
          if (/count\(\*\) FROM "shop"."orders"/.test(q)) node.writeCounts.set('shop.orders', 5001);
          return rows;
        },
      };
    };
    const written = await takeSnapshot(deps, input, liveSignal());
    assert.deepEqual(written.tables, [
      { keyspace: 'shop', table: 'customers', rows: 7 },
      { keyspace: 'shop', table: 'orders', rows: null, note: 'not counted: written to while it was counted' },
    ]);
    deps.cql = cql;

    // A node with peers: a CQL count would span the cluster.
    node.peers = ['10.0.0.2'];
    const clustered = await takeSnapshot(deps, input, liveSignal());
    assert.ok(clustered.tables?.every((t) => t.rows === null && /has peers/.test(t.note ?? '')));
    assert.equal(clustered.tables?.length, 2);
  });

  it('CQL failing costs the counts, never the snapshot', async () => {
    const { node, deps, input } = await source();
    node.peers = [];
    node.fail('cql.execute', new CbrError('CBR_ERR_CQL_FAILED', 'CQL failed: timeout'), { match: /count\(\*\)/ });
    const out = await takeSnapshot(deps, input, liveSignal());
    assert.equal(out.files, 12);
    assert.ok(out.tables?.every((t) => t.rows === null && /not counted: CQL failed: timeout/.test(t.note ?? '')));
    node.fail('cql.connect', new CbrError('CBR_ERR_CQL_FAILED', 'cannot connect'));
    const offline = await takeSnapshot(deps, input, liveSignal());
    assert.equal(offline.files, 12);
    assert.equal(offline.tables, null);
  });

  it('an aborted signal stops it before any snapshot', async () => {
    const { node, deps, input } = await source();
    await rejectsAborted(takeSnapshot(deps, input, abortedSignal()));
    assert.deepEqual(await node.snapshotTags(), []);
  });

  it('a failing snapshot is CBR_ERR_SNAPSHOT_FAILED', async () => {
    const { node, deps, input } = await source();
    node.fail('nodetool.snapshot', new CbrError('CBR_ERR_SNAPSHOT_FAILED', 'nodetool snapshot failed: disk full'));
    await rejectsCoded(takeSnapshot(deps, input, liveSignal()), 'CBR_ERR_SNAPSHOT_FAILED', /disk full/);
    const stopped = await source({ running: false });
    await rejectsCoded(takeSnapshot(stopped.deps, stopped.input, liveSignal()), 'CBR_ERR_SNAPSHOT_FAILED', /Failed to connect/);
  });
});

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

  it('keeps the row counts takeSnapshot took; a record without them (older workflows) reads as before', async () => {
    const { store, deps, recordInput } = await streamed();
    const tables = [
      { keyspace: 'shop', table: 'customers', rows: 7 },
      { keyspace: 'shop', table: 'orders', rows: null, note: 'not counted: written to while it was counted' },
    ];
    await writeRecord(deps, { ...recordInput, tables }, liveSignal());
    assert.deepEqual((await readRecord(store, 'b1')).tables, tables);
    const other = await streamed();
    await writeRecord(other.deps, other.recordInput, liveSignal());
    assert.equal((await readRecord(other.store, 'b1')).tables, undefined);
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
