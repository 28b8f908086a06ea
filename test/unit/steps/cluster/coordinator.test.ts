import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { replyFrom } from '../../../../src/bus/hostBus.ts';
import type { CqlSession } from '../../../../src/cassandra/cql.ts';
import { recordKey } from '../../../../src/catalog/catalog.ts';
import { clusterRecordKey, pendingMarkerKey, readClusterRecord, writePendingMarker } from '../../../../src/catalog/clusterRecord.ts';
import { CbrError } from '../../../../src/core/errors.ts';
import { silentLogger } from '../../../../src/core/log.ts';
import type { ClusterBackupInput, HostPart, RingAtBarrier } from '../../../../src/machines/clusterBackup.machine.ts';
import type { ClusterDeps, HostBus, HostReply } from '../../../../src/steps/cluster/deps.ts';
import { readRing } from '../../../../src/steps/cluster/readRing.ts';
import { removeClusterRecord } from '../../../../src/steps/cluster/removeClusterRecord.ts';
import { reserveBackupId } from '../../../../src/steps/cluster/reserveBackupId.ts';
import { resolveHosts } from '../../../../src/steps/cluster/resolveHosts.ts';
import { writeClusterRecord } from '../../../../src/steps/cluster/writeClusterRecord.ts';
import { MemoryStore } from '../../../fixtures/memoryStore.ts';

/**
 * The coordinator's steps that decide what a cluster backup records, over a MemoryStore, a fake HostBus (each agent
 * announcing its cluster and node address) and a fake CQL session (the ring as the coordinator's node sees it).
 */

const HOSTS = ['h1', 'h2', 'h3'];
const ADDRESSES = ['10.0.0.1', '10.0.0.2', '10.0.0.3'];
const TOKENS = [
  ['-100', '5'],
  ['-50', '50'],
  ['0', '90'],
];
const NAME = 'ring';
const signal = new AbortController().signal;

const ring = (): RingAtBarrier => ({
  clusterName: NAME,
  partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
  hosts: ADDRESSES.map((address, i) => ({ hostId: `0000000${i}-0000-0000-0000-000000000000`, address, datacenter: 'dc1', rack: 'r1', tokens: TOKENS[i]! })),
  schema: 'CREATE KEYSPACE ks WITH replication = {};',
});

function ctx(over: Partial<ClusterBackupInput> = {}): ClusterBackupInput {
  return {
    workflowId: 'cb',
    backupId: 'cb',
    name: 'nightly',
    description: '',
    cluster: NAME,
    hosts: null,
    strategy: 'full',
    concurrency: 2,
    startedAt: new Date(Date.now() - 1000).toISOString(),
    ...over,
  };
}

/** A CQL session answering system.local / system.peers_v2 / DESCRIBE SCHEMA for `r`, seen from its first node. */
function fakeCql(r: RingAtBarrier): () => Promise<CqlSession> {
  return async () => ({
    async execute(q: string) {
      const [self, ...peers] = r.hosts;
      if (q.includes('system.local'))
        return [
          {
            host_id: self!.hostId,
            broadcast_address: self!.address,
            rpc_address: self!.address,
            rpc_port: 9042,
            data_center: self!.datacenter,
            rack: self!.rack,
            tokens: self!.tokens,
            cluster_name: r.clusterName,
            partitioner: r.partitioner,
          },
        ];
      if (q.includes('system.peers_v2'))
        return peers.map((p) => ({
          peer: p.address,
          host_id: p.hostId,
          native_address: p.address,
          native_port: 9042,
          data_center: p.datacenter,
          rack: p.rack,
          tokens: p.tokens,
        }));
      if (q.startsWith('DESCRIBE')) return [{ create_statement: r.schema }];
      throw new Error(`unexpected ${q}`);
    },
    async close() {},
  });
}

/** Agents behind a HostBus: `announce` maps each host to the node address its status replies carry. */
function fakeBus(announce: Record<string, string | undefined>, cluster = NAME): HostBus {
  const reply = (host: string): HostReply => ({ host, cluster, ...(announce[host] ? { address: announce[host] } : {}), workflows: [] });
  return {
    async send() {
      return 'x';
    },
    async ask(host) {
      return host in announce ? reply(host) : null;
    },
    async everyone() {
      return Object.keys(announce).map(reply);
    },
    async close() {},
  };
}

function deps(store: MemoryStore, bus: HostBus, r: RingAtBarrier = ring(), over: Partial<ClusterDeps> = {}): ClusterDeps {
  return { bus: async () => bus, store, cql: fakeCql(r), log: silentLogger, pollMs: 1, barrierTimeoutMs: 60_000, abortTimeoutMs: 60_000, ...over };
}

const announceAll = () => Object.fromEntries(HOSTS.map((h, i) => [h, ADDRESSES[i]]));
const parts = (hosts = HOSTS): HostPart[] => hosts.map((host) => ({ host, phase: 'uploaded', error: null }));

/** The host backup record a part's host wrote: made on the node with `tokens`, of cluster `clusterName`. */
async function writePart(store: MemoryStore, id: string, o: { tokens: string[]; clusterName?: string; created?: string }): Promise<void> {
  const created = o.created ?? new Date().toISOString();
  const record = {
    format: 2,
    strategy: 'full',
    id,
    name: 'nightly',
    description: '',
    state: 'COMPLETED',
    datastore: 'cassandra',
    sourceInstance: 'alpha',
    hostId: 'node',
    clusterName: o.clusterName ?? NAME,
    cassandraVersion: '5.0.6',
    created,
    finished: created,
    compression: 'none',
    encryption: null,
    keyspaces: ['ks'],
    object: `${id}/archive.tar`,
    size: 1,
    sha256: createHash('sha256').update('x').digest('hex'),
    rawBytes: 1,
    fileCount: 1,
    files: [{ path: 'ks/t-0123456789abcdef0123456789abcdef/nb-1-big-Data.db', size: 1 }],
    settings: {
      numTokens: o.tokens.length,
      tokens: o.tokens,
      partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
      uuidSstableIdentifiers: true,
      sstableFormat: 'bti',
      storageCompatibilityMode: 'NONE',
    },
  };
  await store.put(recordKey(id), Readable.from([Buffer.from(JSON.stringify(record))]));
}

async function writeParts(store: MemoryStore, id = 'cb', created?: string): Promise<void> {
  for (const [i] of HOSTS.entries()) await writePart(store, `${id}-${i + 1}`, { tokens: TOKENS[i]!, ...(created ? { created } : {}) });
}

async function rejects(p: Promise<unknown>, code: string): Promise<CbrError> {
  const err = await p.then(
    () => assert.fail(`expected ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof CbrError, String(err));
  assert.equal(err.code, code, err.message);
  return err;
}

describe('cluster coordinator steps: every ring node, once, and this run only', () => {
  it('resolveHosts refuses a --hosts subset that leaves a ring node out, before any host is asked to back up', async () => {
    const store = new MemoryStore();
    const bus = fakeBus(announceAll());
    const err = await rejects(resolveHosts(deps(store, bus), { ctx: ctx({ hosts: ['h1', 'h2'] }) }, signal), 'CBR_ERR_CLUSTER_INCOMPLETE');
    assert.match(err.message, /2 host\(s\) \(h1, h2\) for the 3 nodes/);
    assert.deepEqual(store.keys(), []);
    // Every node named: fine.
    assert.deepEqual(await resolveHosts(deps(store, bus), { ctx: ctx({ hosts: ['h3', 'h1', 'h2'] }) }, signal), HOSTS);
  });

  it('resolveHosts refuses two named hosts on one node (some node has none)', async () => {
    const bus = fakeBus({ h1: ADDRESSES[0], h2: ADDRESSES[0], h3: ADDRESSES[2] });
    await rejects(resolveHosts(deps(new MemoryStore(), bus), { ctx: ctx({ hosts: HOSTS }) }, signal), 'CBR_ERR_CLUSTER_INCOMPLETE');
  });

  it('writeClusterRecord refuses parts that do not cover every ring node, writing nothing', async () => {
    const store = new MemoryStore();
    await writeParts(store);
    await writePendingMarker(store, 'cb', { coordinator: 'cb', started: 'x' });
    const before = store.snapshot();
    const err = await rejects(
      writeClusterRecord(deps(store, fakeBus(announceAll())), { ctx: ctx(), parts: parts(['h1', 'h2']), ring: ring() }, signal),
      'CBR_ERR_CLUSTER_INCOMPLETE',
    );
    assert.match(err.message, /10\.0\.0\.3/);
    assert.deepEqual(store.snapshot(), before);
  });

  it('writeClusterRecord refuses a part matched to a node whose tokens it does not hold (swapped addresses)', async () => {
    const store = new MemoryStore();
    await writeParts(store);
    const swapped = fakeBus({ h1: ADDRESSES[1], h2: ADDRESSES[0], h3: ADDRESSES[2] });
    await rejects(writeClusterRecord(deps(store, swapped), { ctx: ctx(), parts: parts(), ring: ring() }, signal), 'CBR_ERR_CLUSTER_PART_MISMATCH');
    assert.equal(await store.head(clusterRecordKey('cb')), null);
  });

  it("writeClusterRecord refuses a part made on another cluster's node", async () => {
    const store = new MemoryStore();
    await writeParts(store);
    await writePart(store, 'cb-2', { tokens: TOKENS[1]!, clusterName: 'other' });
    await rejects(
      writeClusterRecord(deps(store, fakeBus(announceAll())), { ctx: ctx(), parts: parts(), ring: ring() }, signal),
      'CBR_ERR_CLUSTER_PART_MISMATCH',
    );
  });

  it('the host bus takes a status reply only from the host it asked', () => {
    assert.equal(replyFrom('h1', { host: 'h1' }), true);
    assert.equal(replyFrom('h1', { host: 'h2' }), false);
  });

  it('writes the record from the ring in the context: no CQL at record time', async () => {
    const store = new MemoryStore();
    await writeParts(store);
    const noCql = async (): Promise<CqlSession> => {
      throw new CbrError('CBR_ERR_CQL_FAILED', 'node down');
    };
    const out = await writeClusterRecord(deps(store, fakeBus(announceAll()), ring(), { cql: noCql }), { ctx: ctx(), parts: parts(), ring: ring() }, signal);
    const rec = await readClusterRecord(store, 'cb');
    assert.equal(out.recordKey, clusterRecordKey('cb'));
    assert.deepEqual(
      rec.hosts.map((h) => [h.host, h.backupId, h.address, h.tokens]),
      HOSTS.map((h, i) => [h, `cb-${i + 1}`, ADDRESSES[i], TOKENS[i]]),
    );
    assert.equal(rec.schema, ring().schema);
  });

  it('readRing reads the ring and schema once, right after the barrier', async () => {
    const r = await readRing(deps(new MemoryStore(), fakeBus({})), { ctx: ctx(), parts: parts() }, signal);
    assert.deepEqual(r, ring());
  });

  it('a pending marker that cannot be deleted after the record is put is a warning; the record stays', async () => {
    const store = new MemoryStore();
    await writeParts(store);
    await writePendingMarker(store, 'cb', { coordinator: 'cb', started: 'x' });
    store.fail('delete', new CbrError('CBR_ERR_STORAGE_FAILED', 'swift down'), { match: (k) => k === pendingMarkerKey('cb') });
    const out = await writeClusterRecord(deps(store, fakeBus(announceAll())), { ctx: ctx(), parts: parts(), ring: ring() }, signal);
    assert.match(out.warnings?.[0] ?? '', /pending marker left: CBR_ERR_STORAGE_FAILED/);
    assert.ok(await store.head(clusterRecordKey('cb')));
  });

  it('a record that would read back UNREADABLE (schema over 16 MiB) is never put: coded error', async () => {
    const store = new MemoryStore();
    await writeParts(store);
    const big = { ...ring(), schema: 'x'.repeat(16 * 1024 * 1024 + 1) };
    await rejects(writeClusterRecord(deps(store, fakeBus(announceAll())), { ctx: ctx(), parts: parts(), ring: big }, signal), 'CBR_ERR_CLUSTER_RECORD_INVALID');
    assert.equal(await store.head(clusterRecordKey('cb')), null);
    // readRing refuses it already, before any upload.
    await rejects(readRing(deps(store, fakeBus({}), big), { ctx: ctx(), parts: parts() }, signal), 'CBR_ERR_CLUSTER_RECORD_INVALID');
  });

  it('reserveBackupId refuses an id with a cluster record, touching nothing', async () => {
    const store = new MemoryStore();
    await writeParts(store);
    await writeClusterRecord(
      deps(store, fakeBus(announceAll())),
      { ctx: ctx({ startedAt: new Date(Date.now() - 3_600_000).toISOString() }), parts: parts(), ring: ring() },
      signal,
    );
    const before = store.snapshot();
    await rejects(reserveBackupId(deps(store, fakeBus(announceAll())), { ctx: ctx(), parts: parts() }, signal), 'CBR_ERR_BACKUP_EXISTS');
    assert.deepEqual(store.snapshot(), before);
  });

  it("reserveBackupId writes the marker create-only: another run's is refused, this run's own (a resume) taken", async () => {
    const store = new MemoryStore();
    const c = ctx();
    await reserveBackupId(deps(store, fakeBus({})), { ctx: c, parts: parts() }, signal);
    const mine = store.snapshot();
    await reserveBackupId(deps(store, fakeBus({})), { ctx: c, parts: parts() }, signal);
    assert.deepEqual(store.snapshot(), mine, 'a resumed reservation changes nothing');
    await rejects(
      reserveBackupId(deps(store, fakeBus({})), { ctx: ctx({ startedAt: new Date().toISOString() }), parts: parts() }, signal),
      'CBR_ERR_BACKUP_EXISTS',
    );
    assert.deepEqual(store.snapshot(), mine, "the other run's marker is not overwritten");
  });

  it("reserveBackupId whose marker put lands but then fails takes this run's marker back (the run fails for good)", async () => {
    const store = new (class extends MemoryStore {
      override async put(...args: Parameters<MemoryStore['put']>): Promise<{ size: number }> {
        await super.put(...args);
        throw new CbrError('CBR_ERR_STORAGE_FAILED', 'the connection broke after the object was stored');
      }
    })();
    await rejects(reserveBackupId(deps(store, fakeBus({})), { ctx: ctx(), parts: parts() }, signal), 'CBR_ERR_STORAGE_FAILED');
    assert.equal(await store.head(pendingMarkerKey('cb')), null, 'no marker left to block the id');
  });

  it('reserveBackupId refuses an id whose part ids are taken by host backups', async () => {
    const store = new MemoryStore();
    await writePart(store, 'cb-2', { tokens: TOKENS[1]! });
    await rejects(reserveBackupId(deps(store, fakeBus({})), { ctx: ctx(), parts: parts() }, signal), 'CBR_ERR_BACKUP_EXISTS');
    assert.equal(await store.head(pendingMarkerKey('cb')), null);
  });

  it('writeClusterRecord refuses parts made before this run started (an older run of the id): CONFLICT', async () => {
    const store = new MemoryStore();
    await writeParts(store, 'cb', new Date(Date.now() - 3_600_000).toISOString());
    await rejects(writeClusterRecord(deps(store, fakeBus(announceAll())), { ctx: ctx(), parts: parts(), ring: ring() }, signal), 'CBR_ERR_WORKFLOW_CONFLICT');
    assert.equal(await store.head(clusterRecordKey('cb')), null);
  });

  it("another run's record under the id: the put is a CONFLICT and removeClusterRecord leaves that record", async () => {
    const store = new MemoryStore();
    await writeParts(store);
    const older = ctx({ startedAt: new Date(Date.now() - 10_000).toISOString() });
    await writeClusterRecord(deps(store, fakeBus(announceAll())), { ctx: older, parts: parts(), ring: ring() }, signal);
    const before = store.snapshot();
    const mine = ctx({ startedAt: new Date(Date.now() - 5_000).toISOString() });
    await rejects(writeClusterRecord(deps(store, fakeBus(announceAll())), { ctx: mine, parts: parts(), ring: ring() }, signal), 'CBR_ERR_WORKFLOW_CONFLICT');
    await rejects(removeClusterRecord(deps(store, fakeBus({})), { ctx: mine, parts: parts() }, signal), 'CBR_ERR_WORKFLOW_CONFLICT');
    assert.deepEqual(store.snapshot(), before, 'the older record and its parts are untouched');
    // The run that wrote it may withdraw it.
    await removeClusterRecord(deps(store, fakeBus({})), { ctx: older, parts: parts() }, signal);
    assert.equal(await store.head(clusterRecordKey('cb')), null);
  });
});
