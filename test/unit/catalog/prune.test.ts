import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { BLOBS_PREFIX, blobKey, blobName, blobPrefix, fileNameOf, tableIdOf } from '../../../src/catalog/blobs.ts';
import { latestBackupId, listRecords, recordKey } from '../../../src/catalog/catalog.ts';
import {
  type ClusterRecord,
  clusterRecordKey,
  deleteClusterBackup,
  deletePendingMarker,
  isClusterBackup,
  listClusterRecords,
  parseClusterRecord,
  partId,
  refuseClusterPart,
  writeClusterRecord,
  writePendingMarker,
} from '../../../src/catalog/clusterRecord.ts';
import { holdBackupLease } from '../../../src/catalog/leases.ts';
import { PRUNE_PREFIX, prune } from '../../../src/catalog/prune.ts';
import { filesDigest } from '../../../src/catalog/record.ts';
import { parsePolicy } from '../../../src/catalog/retention.ts';
import { CbrError } from '../../../src/core/errors.ts';
import { openStore } from '../../../src/storage/open.ts';
import type { ObjectStore } from '../../../src/storage/port.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';

// These tests collect blobs they have just stored: no grace period, unless a test sets one (see the grace tests).
process.env['CBR_GC_GRACE_MS'] = '0';

const HOST = '0b6ee5a3-0e1b-4e4e-9d4c-5a1d2c3b4a50';

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

const stores: [string, () => Promise<ObjectStore>][] = [
  ['memory', async () => new MemoryStore()],
  [
    'local',
    async () => {
      const root = await mkdtemp(join(tmpdir(), 'cbr-prune-'));
      dirs.push(root);
      return openStore({ driver: 'local', root, container: 'c' });
    },
  ],
];

const put = (store: ObjectStore, key: string, body: Buffer | string) => store.put(key, Readable.from([Buffer.from(body)]));

async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out.sort();
}

const common = (id: string, day: number) => ({
  id,
  name: id,
  description: '',
  state: 'COMPLETED',
  datastore: 'cassandra',
  sourceInstance: 'alpha',
  hostId: HOST,
  clusterName: 'Alpha',
  cassandraVersion: '5.0.6',
  created: new Date(Date.UTC(2026, 0, 1 + day, 2)).toISOString(),
  finished: new Date(Date.UTC(2026, 0, 1 + day, 3)).toISOString(),
  compression: 'none',
  encryption: null,
  keyspaces: ['ks'],
});

/** A full backup made on `day`: its archive of `size` bytes and its record. */
async function writeFull(store: ObjectStore, id: string, day: number, size: number): Promise<void> {
  const archive = randomBytes(size);
  await put(store, `${id}/archive.tar`, archive);
  const record = {
    format: 2,
    strategy: 'full',
    ...common(id, day),
    object: `${id}/archive.tar`,
    size,
    sha256: createHash('sha256').update(archive).digest('hex'),
    rawBytes: size,
    fileCount: 1,
    files: [{ path: 'ks/t-0123456789abcdef0123456789abcdef/nb-1-big-Data.db', size }],
  };
  await put(store, recordKey(id), JSON.stringify(record));
}

/** An incremental backup made on `day` naming the blobs `names` (stored bytes each `sizes[name]`), storing those missing. */
async function writeIncremental(store: ObjectStore, id: string, day: number, names: string[], sizes: Record<string, number>): Promise<void> {
  const files = [];
  for (const n of names) {
    const key = blobOf(n, sizes[n]!);
    if (!(await store.head(key))) await put(store, key, randomBytes(sizes[n]!));
    files.push({ path: pathOf(n), size: sizes[n]!, sha256: shaOf(n), blob: key, stored: sizes[n]!, shared: false });
  }
  const bytes = files.reduce((s, f) => s + f.size, 0);
  const record = {
    format: 3,
    strategy: 'incremental',
    parent: null,
    ...common(id, day),
    object: blobPrefix(HOST),
    size: bytes,
    sha256: filesDigest(files),
    rawBytes: bytes,
    fileCount: files.length,
    files,
    newBytes: bytes,
    sharedBytes: 0,
    newStoredBytes: bytes,
  };
  await put(store, recordKey(id), JSON.stringify(record));
}

const SIZES: Record<string, number> = { a: 100, b: 200, c: 400, d: 800, e: 1600 };
const pathOf = (n: string) => `ks/t-0123456789abcdef0123456789abcdef/nb-${n.charCodeAt(0)}-big-Data.db`;
const shaOf = (n: string) => createHash('sha256').update(n).digest('hex');
/** The blob key storeFiles would give file `n` (unencrypted, no compression). */
function blobOf(n: string, size = SIZES[n]!): string {
  const path = pathOf(n);
  return blobKey(HOST, blobName({ hostId: HOST, tableId: tableIdOf(path), fileName: fileNameOf(path), size, sha256: shaOf(n), compression: 'none' }, null));
}

/** f1 full (day 0); i2 names a, b (day 1); i3 a, c (day 2); i4 a, d (day 3); i5 a, d, e (day 4). */
async function history(store: ObjectStore): Promise<void> {
  await writeFull(store, 'f1', 0, 50);
  await writeIncremental(store, 'i2', 1, ['a', 'b'], SIZES);
  await writeIncremental(store, 'i3', 2, ['a', 'c'], SIZES);
  await writeIncremental(store, 'i4', 3, ['a', 'd'], SIZES);
  await writeIncremental(store, 'i5', 4, ['a', 'd', 'e'], SIZES);
}

/** The store, with `ctl` aborted right after the `n`th record delete: a prune killed between a record and its objects. */
function abortingAfterRecordDeletes(store: ObjectStore, n: number, ctl: AbortController): ObjectStore {
  let count = 0;
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'delete') {
        return async (key: string, opts?: { signal?: AbortSignal }) => {
          await target.delete(key, opts);
          if (key.endsWith('/backup.json') && ++count >= n) ctl.abort();
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

for (const [kind, open] of stores) {
  describe(`prune (${kind} store)`, () => {
    it('a dry run counts the full archive and the blobs only removed backups name (each once); the run frees exactly that', async () => {
      const store = await open();
      await history(store);
      const dry = await prune(store, parsePolicy({ last: '2' }), { dryRun: true });
      assert.deepEqual(
        dry.remove.map((b) => b.id),
        ['i3', 'i2', 'f1'],
      );
      // a and d stay (named by i4, i5); b and c go.
      assert.deepEqual({ freedBytes: dry.freedBytes, freedBlobs: dry.freedBlobs }, { freedBytes: 50 + 200 + 400, freedBlobs: 2 });
      assert.equal((await listRecords(store)).length, 5);

      const run = await prune(store, parsePolicy({ last: '2' }));
      assert.equal(run.freedBytesDone, 650);
      assert.deepEqual(run.gc, [{ hostId: HOST, deleted: 2, freedBytes: 600, skipped: null }]);
      assert.deepEqual(
        (await listRecords(store)).map((r) => r.id),
        ['i4', 'i5'],
      );
      assert.deepEqual(await keys(store, BLOBS_PREFIX), [blobOf('a'), blobOf('d'), blobOf('e')].sort());
      assert.deepEqual(await keys(store, 'f1/'), []);
      assert.deepEqual(await keys(store, PRUNE_PREFIX), []);
    });

    it('killed between a record and its objects, the next prune finishes the journal first, then collects', async () => {
      const store = await open();
      await history(store);
      const ctl = new AbortController();
      // Newest removed first (i3, i2, f1): killed right after the second record delete, i2's, before its objects go.
      await assert.rejects(
        prune(abortingAfterRecordDeletes(store, 2, ctl), parsePolicy({ last: '2' }), { signal: ctl.signal }),
        (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_ABORTED',
      );
      assert.deepEqual(
        (await listRecords(store)).map((r) => r.id),
        ['f1', 'i4', 'i5'],
      );
      assert.equal((await keys(store, PRUNE_PREFIX)).length, 1, 'the journal of the killed prune');
      assert.ok((await keys(store, BLOBS_PREFIX)).includes(blobOf('b')), 'nothing collected yet');

      // The rerun keeps more than the killed one meant to: the journal is finished anyway, f1 is kept.
      const rerun = await prune(store, parsePolicy({ last: '3' }));
      assert.deepEqual([...rerun.resumed].sort(), ['f1'], 'f1 is removed as the killed prune meant (i2, i3 were already gone)');
      assert.deepEqual(rerun.remove, []);
      assert.deepEqual(
        (await listRecords(store)).map((r) => r.id),
        ['i4', 'i5'],
      );
      assert.deepEqual(await keys(store, BLOBS_PREFIX), [blobOf('a'), blobOf('d'), blobOf('e')].sort());
      assert.deepEqual(await keys(store, 'f1/'), []);
      assert.deepEqual(await keys(store, PRUNE_PREFIX), []);
    });

    it('a backup made again under an id a killed prune journaled is left alone', async () => {
      const store = await open();
      await history(store);
      const ctl = new AbortController();
      await assert.rejects(prune(abortingAfterRecordDeletes(store, 1, ctl), parsePolicy({ last: '4' }), { signal: ctl.signal }));
      assert.deepEqual(await keys(store, 'f1/'), ['f1/archive.tar'], 'killed before the archive went');
      await store.purge('f1/');
      await writeFull(store, 'f1', 10, 70);
      const rerun = await prune(store, parsePolicy({ last: '5' }));
      assert.deepEqual(rerun.resumed, []);
      assert.deepEqual(
        (await listRecords(store)).map((r) => r.id),
        ['i2', 'i3', 'i4', 'i5', 'f1'],
      );
      assert.equal((await store.head('f1/archive.tar'))?.size, 70);
    });

    it('while a backup of the host holds its lease, nothing is collected and the journal stays; the next prune collects', async () => {
      const store = await open();
      await history(store);
      const lease = await holdBackupLease(store, HOST, 'running', { ttlMs: 60_000 });
      const run = await prune(store, parsePolicy({ last: '1' }));
      assert.deepEqual(run.gc, [{ hostId: HOST, deleted: 0, freedBytes: 0, skipped: 'backup-running' }]);
      assert.equal(run.freedBytesDone, 50, 'only the full archive');
      assert.equal((await keys(store, BLOBS_PREFIX)).length, 5);
      assert.equal((await keys(store, PRUNE_PREFIX)).length, 1);
      await lease.release();
      const next = await prune(store, parsePolicy({ last: '1' }));
      assert.deepEqual(next.remove, []);
      // i2..i4 went; of their blobs b (200) and c (400) no kept record names (a and d are i5's too).
      assert.deepEqual(next.gc, [{ hostId: HOST, deleted: 2, freedBytes: 600, skipped: null }]);
      assert.deepEqual(await keys(store, BLOBS_PREFIX), [blobOf('a'), blobOf('d'), blobOf('e')].sort());
      assert.deepEqual(await keys(store, PRUNE_PREFIX), []);
    });
  });
}

describe('latestBackupId (what a scheduled verify or drill takes)', () => {
  it('is the newest completed backup by creation time, of the host asked for; none is BACKUP_NOT_FOUND', async () => {
    const store = new MemoryStore();
    await assert.rejects(latestBackupId(store), (err: CbrError) => err.code === 'CBR_ERR_BACKUP_NOT_FOUND');
    await writeFull(store, 'b-day1', 1, 10);
    await writeFull(store, 'a-day3', 3, 10);
    await writeFull(store, 'c-day2', 2, 10);
    assert.equal(await latestBackupId(store), 'a-day3');
    assert.equal(await latestBackupId(store, HOST), 'a-day3');
    await assert.rejects(latestBackupId(store, 'another-host'), /no completed backup of host another-host/);
  });
});

describe('cluster backups: one unit for prune and delete', () => {
  /** Cluster backup `id` of cluster "ring" made on `day`: its record and two full parts `<id>-1`, `<id>-2`. */
  async function writeCluster(store: ObjectStore, id: string, day: number): Promise<void> {
    for (const i of [0, 1]) await writeFull(store, partId(id, i), day, 10 + i);
    const record: ClusterRecord = {
      format: 1,
      kind: 'cluster',
      id,
      name: id,
      description: '',
      state: 'COMPLETED',
      clusterName: 'ring',
      partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
      strategy: 'full',
      created: new Date(Date.UTC(2026, 0, 1 + day, 2)).toISOString(),
      finished: new Date(Date.UTC(2026, 0, 1 + day, 3)).toISOString(),
      schema: 'CREATE KEYSPACE ks ...',
      hosts: [0, 1].map((i) => ({
        host: `node-${i + 1}`,
        backupId: partId(id, i),
        hostId: `0b6ee5a3-0e1b-4e4e-9d4c-5a1d2c3b4a5${i}`,
        address: `127.0.0.${i + 1}`,
        datacenter: 'datacenter1',
        rack: 'rack1',
        tokens: [String(-1000 + i)],
      })),
    };
    await writeClusterRecord(store, record);
  }

  it('a policy keeps or drops a cluster backup with all its parts, grouped by its cluster; its record goes first', async () => {
    const store = new MemoryStore();
    for (const [id, day] of [
      ['c0', 0],
      ['c1', 1],
      ['c2', 2],
    ] as const)
      await writeCluster(store, id, day);
    await writeFull(store, 'h0', 0, 5);
    await writeFull(store, 'h1', 5, 5);
    // Parts are the newest host backups of their hosts on days 0-2; as backups of their own, keep-last would keep them.
    const plan = await prune(store, parsePolicy({ last: '1' }), { dryRun: true });
    assert.deepEqual([...plan.removeClusters].sort(), ['c0', 'c1']);
    assert.deepEqual(
      plan.remove.map((b) => [b.id, b.cluster ?? null]).sort(),
      [
        ['h0', null],
        ['c0-1', 'c0'],
        ['c0-2', 'c0'],
        ['c1-1', 'c1'],
        ['c1-2', 'c1'],
      ].sort(),
    );
    const group = plan.keep.find((b) => b.id === 'c2-1')?.group ?? '';
    assert.match(group, /^cluster:ring\/[0-9a-f]{8}$/, 'grouped by the cluster name and its host ids');
    assert.deepEqual(plan.keep.map((b) => [b.id, b.group]).sort(), [
      ['c2-1', group],
      ['c2-2', group],
      ['h1', HOST],
    ]);

    const deletes: string[] = [];
    const watched = new Proxy(store, {
      get(target, prop) {
        if (prop === 'delete')
          return async (key: string, opts?: { signal?: AbortSignal }) => {
            deletes.push(key);
            await target.delete(key, opts);
          };
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    await prune(watched, parsePolicy({ last: '1' }));
    const firstPart = deletes.findIndex((k) => k.startsWith('c0-'));
    assert.ok(deletes.indexOf(clusterRecordKey('c0')) < firstPart && deletes.indexOf(clusterRecordKey('c1')) < firstPart, 'cluster records first');
    assert.deepEqual(
      (await listClusterRecords(store)).map((c) => c.id),
      ['c2'],
    );
    assert.deepEqual((await listRecords(store)).map((r) => r.id).sort(), ['c2-1', 'c2-2', 'h1']);
    assert.deepEqual(await keys(store, 'c0-'), []);
  });

  it('a prune killed after the cluster records went is finished by the next one: no part of a dropped cluster backup stays', async () => {
    const store = new MemoryStore();
    for (const [id, day] of [
      ['c0', 0],
      ['c1', 1],
    ] as const)
      await writeCluster(store, id, day);
    const ctl = new AbortController();
    await assert.rejects(prune(abortingAfterRecordDeletes(store, 1, ctl), parsePolicy({ last: '1' }), { signal: ctl.signal }));
    assert.deepEqual(
      (await listClusterRecords(store)).map((c) => c.id),
      ['c1'],
      'the record went before the kill',
    );
    const again = await prune(store, parsePolicy({ last: '1' }));
    assert.ok(again.resumed.length >= 1);
    assert.deepEqual((await listRecords(store)).map((r) => r.id).sort(), ['c1-1', 'c1-2']);
    assert.deepEqual(await keys(store, PRUNE_PREFIX), []);
  });

  it('delete: a cluster backup goes record first, then its parts; one part alone is refused with CBR_ERR_CLUSTER_PART', async () => {
    const store = new MemoryStore();
    await writeCluster(store, 'c0', 0);
    await assert.rejects(
      refuseClusterPart(store, 'c0-2'),
      (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_CLUSTER_PART' && /node-2/.test(e.message),
    );
    await refuseClusterPart(store, 'f-other');
    assert.equal(await isClusterBackup(store, 'c0'), true);
    assert.equal(await isClusterBackup(store, 'c0-1'), false, 'a part is a host backup');
    const { parts } = await deleteClusterBackup(store, 'c0');
    assert.deepEqual(
      parts.map((p) => [p.id, p.record?.id]),
      [
        ['c0-1', 'c0-1'],
        ['c0-2', 'c0-2'],
      ],
    );
    assert.deepEqual(await keys(store, ''), []);
    await assert.rejects(deleteClusterBackup(store, 'c0'), (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_BACKUP_NOT_FOUND');
  });

  it('parts of a running cluster backup (its pending marker) or of an unreadable cluster record are never pruned or deleted alone', async () => {
    const store = new MemoryStore();
    await writeCluster(store, 'c0', 0);
    for (const i of [0, 1]) await writeFull(store, partId('run', i), 1, 7);
    await writePendingMarker(store, 'run', { coordinator: 'node-1', started: new Date().toISOString() });
    await writeFull(store, 'h9', 9, 5);
    // A record of a newer format: unreadable here, its parts still protected.
    await put(store, clusterRecordKey('c0'), JSON.stringify({ format: 2, kind: 'cluster', id: 'c0' }));
    const plan = await prune(store, parsePolicy({ last: '1' }), { dryRun: true });
    assert.deepEqual(plan.protected.sort(), ['c0-1', 'c0-2', 'run-1', 'run-2']);
    assert.deepEqual(plan.remove, []);
    await prune(store, parsePolicy({ last: '1' }));
    assert.deepEqual((await listRecords(store)).map((r) => r.id).sort(), ['c0-1', 'c0-2', 'h9', 'run-1', 'run-2']);
    for (const id of ['c0-2', 'run-1'])
      await assert.rejects(refuseClusterPart(store, id), (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_CLUSTER_PART');
    await deletePendingMarker(store, 'run');
    await refuseClusterPart(store, 'run-1');
  });

  it('a cluster record is refused when it names another id, a part twice, or a malformed token', () => {
    const good = {
      format: 1,
      kind: 'cluster',
      id: 'c9',
      name: 'n',
      description: '',
      state: 'COMPLETED',
      clusterName: 'ring',
      partitioner: 'p',
      strategy: 'full',
      created: 'x',
      finished: 'x',
      schema: '',
      hosts: [{ host: 'a', backupId: 'c9-1', hostId: '0b6ee5a3', address: '127.0.0.1', datacenter: 'd', rack: 'r', tokens: ['-5'] }],
    };
    assert.equal(parseClusterRecord(good, 'c9').hosts.length, 1);
    const refused = (v: unknown, id = 'c9') =>
      assert.throws(
        () => parseClusterRecord(v, id),
        (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_RECORD_INVALID',
      );
    refused(good, 'c8');
    refused({ ...good, hosts: [good.hosts[0], good.hosts[0]] });
    refused({ ...good, hosts: [{ ...good.hosts[0], backupId: 'prod-golden' }] }, 'c9');
    refused({ ...good, hosts: [{ ...good.hosts[0], host: 'a\u001b[2J' }] });
    refused({ ...good, hosts: [{ ...good.hosts[0], tokens: ['1; DROP'] }] });
    refused({ ...good, extra: 1 });
  });
});
