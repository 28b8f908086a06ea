import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readRecord } from '../../../../src/catalog/catalog.ts';
import { writeClusterRecord } from '../../../../src/catalog/clusterRecord.ts';
import type { PartsStepInput } from '../../../../src/machines/restore.machine.ts';
import { checkParts } from '../../../../src/steps/restore/checkParts.ts';
import { chownData } from '../../../../src/steps/restore/chownData.ts';
import { fetchParts } from '../../../../src/steps/restore/fetchParts.ts';
import { forgetSourcePeers } from '../../../../src/steps/restore/forgetSourcePeers.ts';
import { importParts } from '../../../../src/steps/restore/importParts.ts';
import { lowerReplication } from '../../../../src/steps/restore/lowerReplication.ts';
import { restorePaths } from '../../../../src/steps/restore/restoreDeps.ts';
import { startMaintenance } from '../../../../src/steps/restore/startMaintenance.ts';
import { stopNode } from '../../../../src/steps/restore/stopNode.ts';
import { swapDataDirs } from '../../../../src/steps/restore/swapDataDirs.ts';
import { unpackBackup } from '../../../../src/steps/restore/unpackBackup.ts';
import { removeFakeNodes, TABLE_IDS, treeState } from '../../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../../fixtures/memoryStore.ts';
import { abortedSignal, type MadeBackup, makeBackup, type RestoreSetup, rejectsAborted, rejectsCoded, restoreUntil } from '../../../fixtures/stepKit.ts';

/**
 * The steps a cluster backup restored into one node adds to the restore (checkParts, fetchParts, forgetSourcePeers,
 * importParts, lowerReplication), each on the state it finds in a real restore: a cluster record naming three parts
 * (cb-1, made by the backup steps from a fake node, and cb-2, cb-3 from two more), a FakeNode target whose nodetool
 * import moves SSTables in under new generations as Cassandra does. Each run twice, aborted, and into its codes.
 * Cassandra's own import (ids, token checks) is tested on real nodes in test/integration/restore/cluster-restore.test.ts.
 */

after(removeFakeNodes);

const live = () => new AbortController().signal;
let first: MadeBackup;

before(async () => {
  const store = new MemoryStore();
  first = await makeBackup({ store, backupId: 'cb-1' });
  await makeBackup({ store, backupId: 'cb-2' });
  await makeBackup({ store, backupId: 'cb-3', strategy: 'incremental' });
  // The fake nodes share one host id: the parts name it as the cluster record does.
  const hostId = (await readRecord(store, 'cb-1')).hostId;
  const host = (n: number) => ({
    host: `n${n}`,
    backupId: `cb-${n}`,
    hostId,
    address: `10.0.0.${n}`,
    datacenter: 'dc1',
    rack: 'r1',
    tokens: [String(n)],
  });
  await writeClusterRecord(store, {
    format: 1,
    kind: 'cluster',
    id: 'cb',
    name: 'cb',
    description: '',
    state: 'COMPLETED',
    clusterName: 'Source Cluster',
    partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
    strategy: 'full',
    created: '2026-01-01T00:00:00Z',
    finished: '2026-01-01T00:00:01Z',
    schema: '',
    hosts: [host(1), host(2), host(3)],
  });
});

/** The restore up to `until`, as a cluster restore (checkRestore and checkParts run, then the steps in the machine's order). */
async function clusterUntil(until: 'checkParts' | 'fetchParts' | 'forgetSourcePeers' | 'importParts' | 'lowerReplication') {
  const s = await restoreUntil('unpackBackup', { backup: first });
  s.input.ctx.clusterBackupId = 'cb';
  const input = s.input as PartsStepInput;
  if (until === 'checkParts') return { ...s, input };
  input.parts = await checkParts(s.deps, s.input, live());
  await unpackBackup(s.deps, s.input, live());
  if (until === 'fetchParts') return { ...s, input };
  await fetchParts(s.deps, input, live());
  if (until === 'forgetSourcePeers') return { ...s, input };
  await forgetSourcePeers(s.deps, s.input, live());
  await stopNode(s.deps, s.input, live());
  await swapDataDirs(s.deps, s.input, live());
  await chownData(s.deps, s.input, live());
  await startMaintenance(s.deps, s.input, live());
  if (until === 'importParts') return { ...s, input };
  await importParts(s.deps, input, live());
  return { ...s, input };
}

describe('checkParts', () => {
  it('plans the other parts: ids, hosts, the user keyspaces; twice the same, nothing touched', async () => {
    const { deps, input, target } = await clusterUntil('checkParts');
    const before = treeState(target.root);
    const plan = await checkParts(deps, input, live());
    assert.deepEqual(
      plan.parts.map((p) => [p.backupId, p.host, p.keyspaces]),
      [
        ['cb-2', 'n2', ['shop']],
        ['cb-3', 'n3', ['shop']],
      ],
    );
    assert.equal(plan.clusterBackupId, 'cb');
    assert.deepEqual(await checkParts(deps, input, live()), plan);
    assert.deepEqual(treeState(target.root), before);
  });

  it('an aborted signal stops it', async () => {
    const { deps, input } = await clusterUntil('checkParts');
    await rejectsAborted(checkParts(deps, input, abortedSignal()));
  });

  it('a missing part, a truncated archive, a record naming another first part, no room: each its code', async () => {
    const gone = await clusterUntil('checkParts');
    await gone.store.delete('cb-2/backup.json');
    await rejectsCoded(checkParts(gone.deps, gone.input, live()), 'CBR_ERR_BACKUP_NOT_FOUND');

    const cut = await clusterUntil('checkParts');
    const body = cut.store.objects.get('cb-2/archive.tar.zst')!.body;
    cut.store.objects.set('cb-2/archive.tar.zst', { body: body.subarray(1), modified: '' });
    await rejectsCoded(checkParts(cut.deps, cut.input, live()), 'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH');

    const other = await clusterUntil('checkParts');
    other.input.ctx.backupId = 'cb-2';
    await rejectsCoded(checkParts(other.deps, other.input, live()), 'CBR_ERR_RECORD_INVALID', /first part/);

    const none = await clusterUntil('checkParts');
    none.input.ctx.clusterBackupId = 'nope';
    await rejectsCoded(checkParts(none.deps, none.input, live()), 'CBR_ERR_BACKUP_NOT_FOUND');

    const full = await clusterUntil('checkParts');
    full.deps.diskSpace = async () => ({ free: 1000, total: 10_000 });
    await rejectsCoded(checkParts(full.deps, full.input, live()), 'CBR_ERR_INSUFFICIENT_SPACE');
  });
});

describe('fetchParts', () => {
  it('puts each other part (full and incremental) into its own folder, verified; a re-run keeps what is done', async () => {
    const { deps, input, target } = await clusterUntil('fetchParts');
    const { parts } = restorePaths(target.profile, input.ctx.workflowId);
    await fetchParts(deps, input, live());
    for (const n of ['2', '3']) {
      assert.ok(existsSync(join(parts, `${n}.done`)));
      assert.ok(existsSync(join(parts, n, 'shop', `orders-${TABLE_IDS.orders}`, 'nb-1-big-Data.db')), `part ${n}'s orders`);
    }
    // The incremental part brings the imported keyspaces only; the full one its whole (verified) archive.
    assert.ok(!existsSync(join(parts, '3', 'system')));
    const once = treeState(parts);
    await fetchParts(deps, input, live());
    assert.deepEqual(treeState(parts), once);
    assert.ok(target.running, 'the target still runs');
  });

  it('an aborted signal fetches nothing', async () => {
    const { deps, input, target } = await clusterUntil('fetchParts');
    await rejectsAborted(fetchParts(deps, input, abortedSignal()));
    assert.ok(!existsSync(join(restorePaths(target.profile, input.ctx.workflowId).parts, '2.done')));
  });

  it('a tampered archive or blob is refused with its code and nothing of it is marked done', async () => {
    const flip = (s: RestoreSetup, key: string) => {
      const body = Buffer.from(s.store.objects.get(key)!.body);
      body[body.length >> 1]! ^= 0xff;
      s.store.objects.set(key, { body, modified: '' });
    };
    const full = await clusterUntil('fetchParts');
    flip(full, 'cb-2/archive.tar.zst');
    await assert.rejects(fetchParts(full.deps, full.input, live()), (err: { code?: string }) =>
      ['CBR_ERR_ARCHIVE_CORRUPT', 'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH'].includes(String(err.code)),
    );
    assert.ok(!existsSync(join(restorePaths(full.target.profile, full.input.ctx.workflowId).parts, '2.done')));

    const inc = await clusterUntil('fetchParts');
    const blob = [...inc.store.objects.keys()].find((k) => k.includes('blobs/') && inc.store.objects.get(k)!.body.length > 16)!;
    flip(inc, blob);
    await assert.rejects(fetchParts(inc.deps, inc.input, live()), (err: { code?: string }) => ['CBR_ERR_ARCHIVE_CORRUPT'].includes(String(err.code)));
    assert.ok(!existsSync(join(restorePaths(inc.target.profile, inc.input.ctx.workflowId).parts, '3.done')));
  });
});

describe('forgetSourcePeers', () => {
  it("removes the first part's peers tables from staging and nothing else; twice is once", async () => {
    const { deps, input, target } = await clusterUntil('forgetSourcePeers');
    const [staging] = restorePaths(target.profile, input.ctx.workflowId).stagings;
    const peers = join(staging!.staging, 'system', `peers_v2-${'c'.repeat(32)}`);
    mkdirSync(peers, { recursive: true });
    writeFileSync(join(peers, 'nb-1-big-Data.db'), 'peers');
    const others = readdirSync(join(staging!.staging, 'system')).filter((n) => !n.startsWith('peers'));
    await forgetSourcePeers(deps, input, live());
    assert.ok(!existsSync(peers));
    assert.deepEqual(readdirSync(join(staging!.staging, 'system')), others);
    const once = treeState(target.root);
    await forgetSourcePeers(deps, input, live());
    assert.deepEqual(treeState(target.root), once);
    await rejectsAborted(forgetSourcePeers(deps, input, abortedSignal()));
  });
});

describe('importParts', () => {
  it('imports every other part into the live tables under new generations, then drops the folders; twice is once', async () => {
    const { deps, input, target } = await clusterUntil('importParts');
    const orders = join(target.profile.dataDirs[0]!, 'shop', `orders-${TABLE_IDS.orders}`);
    const before = readdirSync(orders).filter((f) => f.endsWith('-Data.db'));
    const { parts } = restorePaths(target.profile, input.ctx.workflowId);
    // Every part has SSTables named like the live ones (nb-1, nb-2): the import must not overwrite any.
    const incoming = ['2', '3'].flatMap((n) => readdirSync(join(parts, n, 'shop', `orders-${TABLE_IDS.orders}`)).filter((f) => f.endsWith('-Data.db')));
    assert.ok(
      incoming.some((f) => before.includes(f)),
      'names collide',
    );
    const out = await importParts(deps, input, live());
    assert.equal(out.tables, 2, 'orders and customers');
    assert.equal(out.dirs, 4, 'each table from two parts');
    const afterImport = readdirSync(orders).filter((f) => f.endsWith('-Data.db'));
    assert.equal(afterImport.length, before.length + incoming.length, 'every SSTable of both parts added, none overwritten');
    assert.ok(!existsSync(parts));
    assert.deepEqual(await importParts(deps, input, live()), { tables: 0, dirs: 0 });
    assert.deepEqual(
      readdirSync(orders).filter((f) => f.endsWith('-Data.db')),
      afterImport,
    );
  });

  it('an aborted signal imports nothing', async () => {
    const { deps, input, target } = await clusterUntil('importParts');
    await rejectsAborted(importParts(deps, input, abortedSignal()));
    assert.ok(!target.calls.some((c) => c.startsWith('nodetool import')));
  });

  it('an import Cassandra refuses is CBR_ERR_IMPORT_FAILED, the parts kept for the rollback to discard', async () => {
    const { deps, input, target } = await clusterUntil('importParts');
    target.fail('nodetool.import', new Error('Failed to import: Data is not owned by this node'), { times: 1 });
    await rejectsCoded(importParts(deps, input, live()), 'CBR_ERR_IMPORT_FAILED');
    assert.ok(existsSync(restorePaths(target.profile, input.ctx.workflowId).parts));
  });
});

describe('lowerReplication', () => {
  it('sets RF 2+ keyspaces and system_auth to one replica in this datacenter; twice changes nothing more', async () => {
    const { deps, input, target } = await clusterUntil('lowerReplication');
    target.replication.set('shop', { class: 'org.apache.cassandra.locator.NetworkTopologyStrategy', dc1: '3', dc2: '2' });
    target.replication.set('system_auth', { class: 'org.apache.cassandra.locator.SimpleStrategy', replication_factor: '3' });
    target.replication.set('system_traces', { class: 'org.apache.cassandra.locator.SimpleStrategy', replication_factor: '2' });
    const { changes } = await lowerReplication(deps, input, live());
    assert.deepEqual(Object.fromEntries(changes.map((c) => [c.keyspace, c.to])), {
      system_auth: { class: 'SimpleStrategy', replication_factor: '1' },
      shop: { class: 'NetworkTopologyStrategy', datacenter1: '1' },
    });
    assert.deepEqual(target.replicationOf('shop'), { class: 'NetworkTopologyStrategy', datacenter1: '1' });
    assert.equal(target.replicationOf('system_traces')['replication_factor'], '2', 'other system keyspaces are left alone');
    assert.deepEqual((await lowerReplication(deps, input, live())).changes, []);
  });

  it('an aborted signal alters nothing', async () => {
    const { deps, input, target } = await clusterUntil('lowerReplication');
    target.replication.set('shop', { class: 'SimpleStrategy', replication_factor: '3' });
    await rejectsAborted(lowerReplication(deps, input, abortedSignal()));
    assert.equal(target.replicationOf('shop')['replication_factor'], '3');
  });
});
