import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { CbrError } from '../../../../src/core/errors.ts';
import { assertIdFree } from '../../../../src/steps/backup/assertIdFree.ts';
import { checkFreeSpace } from '../../../../src/steps/backup/checkFreeSpace.ts';
import { clearSnapshot } from '../../../../src/steps/backup/clearSnapshot.ts';
import { takeSnapshot } from '../../../../src/steps/backup/takeSnapshot.ts';
import { verifyNode } from '../../../../src/steps/backup/verifyNode.ts';
import { fakeNode, removeFakeNodes, TABLE_IDS, treeState } from '../../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../../fixtures/memoryStore.ts';
import { abortedSignal, backupDeps, backupInput, GiB, liveSignal, rejectsAborted, rejectsCoded } from '../../../fixtures/stepKit.ts';

/**
 * The backup steps before the archive: verifyNode (with assertIdFree), checkFreeSpace, clearSnapshot and
 * takeSnapshot, on a FakeNode (nodetool, service and CQL from one in-memory state; snapshots are hard links in
 * a tmp dir) and a MemoryStore. What needs a real node (nodetool's JVM, the driver, `nodetool status` output of
 * a real ring) is covered by the integration tests under test/integration/backup.
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
    joining.deps.nodetool = { ...joining.node.nodetool, status: async () => 'UJ  127.0.0.1  1 MiB  4  ?  id  rack1\n' };
    await rejectsCoded(verifyNode(joining.deps, joining.input, liveSignal()), 'CBR_ERR_NODE_NOT_RUNNING', /not Up\/Normal/);
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
