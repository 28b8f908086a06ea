import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { type Profile, validateProfile } from '../../../src/cassandra/profile.ts';
import { recordKey } from '../../../src/catalog/catalog.ts';
import {
  type BackupRequest,
  type BackupTarget,
  backupInput,
  backupPayload,
  checkBackupRequest,
  chooseStrategy,
  DEFAULT_CONCURRENCY,
  findParent,
} from '../../../src/workflows/backupRequest.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';

function profileOf(hostId: string, backupStrategy?: 'full' | 'incremental'): Profile {
  return validateProfile({
    version: 1,
    name: `${hostId}-instance`,
    hostId,
    cassandraVersion: '5.0.6',
    cql: { host: '127.0.0.1', port: 9042, localDc: 'datacenter1', credentialsFile: '/etc/cbr/cql.json' },
    jmx: { host: '127.0.0.1', port: 7199 },
    java: { home: '/usr/lib/jvm/java-17', libDir: '/opt/cassandra/lib' },
    dataDirs: ['/var/lib/cassandra/data'],
    commitlogDir: '/var/lib/cassandra/commitlog',
    savedCachesDir: '/var/lib/cassandra/saved_caches',
    hintsDir: '/var/lib/cassandra/hints',
    cassandraYaml: '/etc/cassandra/cassandra.yaml',
    owner: { user: 'cassandra', group: 'cassandra', uid: 999, gid: 999 },
    service: { kind: 'systemd', unit: 'cassandra.service' },
    ...(backupStrategy ? { backupStrategy } : {}),
  });
}

/** A COMPLETED record of an empty full backup (format 1): what the resolution reads is its id, host and time. */
async function putRecord(store: MemoryStore, id: string, hostId: string, created: string): Promise<void> {
  const record = {
    format: 1,
    id,
    name: id,
    description: '',
    state: 'COMPLETED',
    datastore: 'cassandra',
    sourceInstance: `${hostId}-instance`,
    hostId,
    clusterName: 'c',
    cassandraVersion: '5.0.6',
    created,
    finished: created,
    object: `${id}/archive.tar.zst`,
    size: 0,
    sha256: '0'.repeat(64),
    compression: 'zstd',
    encryption: null,
    rawBytes: 0,
    fileCount: 0,
    keyspaces: [],
    files: [],
  };
  await store.put(recordKey(id), Readable.from([Buffer.from(JSON.stringify(record))]), { ifAbsent: true });
}

/** Three backups of node-1 (b2 the latest) and a later one of node-2. */
async function storeWithBackups(): Promise<MemoryStore> {
  const store = new MemoryStore();
  await putRecord(store, 'b1', 'node-1', '2025-01-01T00:00:00.000Z');
  await putRecord(store, 'b3', 'node-1', '2025-01-02T00:00:00.000Z');
  await putRecord(store, 'b2', 'node-1', '2025-01-03T00:00:00.000Z');
  await putRecord(store, 'other', 'node-2', '2025-01-04T00:00:00.000Z');
  return store;
}

const target: BackupTarget = {
  id: 'new-1',
  profilePath: '/nonexistent/cbr-test/profile.json',
  storage: { driver: 'local', root: '/nonexistent/cbr-test/storage', container: 'database_backups' },
};
const ask = (over: Partial<BackupRequest> = {}): BackupRequest => ({ name: 'nightly', ...over });

describe('backup request: strategy, parent and concurrency', () => {
  it('precedence: as asked > the profile > CBR_BACKUP_STRATEGY > full', () => {
    const env = { CBR_BACKUP_STRATEGY: 'incremental' };
    assert.equal(chooseStrategy(undefined, undefined, {}), 'full');
    assert.equal(chooseStrategy(undefined, undefined, { CBR_BACKUP_STRATEGY: '' }), 'full');
    assert.equal(chooseStrategy(undefined, undefined, env), 'incremental');
    assert.equal(chooseStrategy(undefined, 'full', env), 'full');
    assert.equal(chooseStrategy(undefined, 'incremental', { CBR_BACKUP_STRATEGY: 'full' }), 'incremental');
    assert.equal(chooseStrategy('full', 'incremental', env), 'full');
    assert.equal(chooseStrategy('incremental', 'full', { CBR_BACKUP_STRATEGY: 'full' }), 'incremental');
    assert.throws(() => chooseStrategy(undefined, undefined, { CBR_BACKUP_STRATEGY: 'differential' }), {
      code: 'CBR_ERR_CONFIG',
      message: /CBR_BACKUP_STRATEGY/,
    });
  });

  it('--incremental and --parent mean strategy incremental; contradictions and bad values are refused before anything runs', () => {
    assert.equal(checkBackupRequest(ask()).strategy, undefined);
    assert.equal(checkBackupRequest(ask()).concurrency, DEFAULT_CONCURRENCY);
    assert.equal(checkBackupRequest(ask({ incremental: true })).strategy, 'incremental');
    assert.equal(checkBackupRequest(ask({ strategy: 'incremental', incremental: true })).strategy, 'incremental');
    assert.deepEqual((({ strategy, parent }) => ({ strategy, parent }))(checkBackupRequest(ask({ parent: 'b1' }))), { strategy: 'incremental', parent: 'b1' });
    const refused: [Partial<BackupRequest>, RegExp][] = [
      [{ strategy: 'differential' }, /--strategy must be one of full, incremental/],
      [{ strategy: 'full', incremental: true }, /contradicts --incremental/],
      [{ strategy: 'full', parent: 'b1' }, /contradicts --parent/],
      [{ parent: '../b1' }, /invalid backup id/],
      [{ concurrency: 0 }, /--concurrency/],
      [{ concurrency: 65 }, /--concurrency/],
      [{ concurrency: 2.5 }, /--concurrency/],
      [{ concurrency: Number.NaN }, /--concurrency/],
    ];
    for (const [over, message] of refused)
      assert.throws(() => checkBackupRequest(ask(over)), { code: 'CBR_ERR_INVALID_ARGUMENT', message }, JSON.stringify(over));
  });

  it('the payload carries only what was asked: the agent chooses the rest with its own profile, environment and storage', () => {
    assert.deepEqual(backupPayload(checkBackupRequest(ask())), { name: 'nightly', compression: 'zstd', minFreePercent: 10 });
    assert.deepEqual(backupPayload(checkBackupRequest(ask({ incremental: true, concurrency: 8 }))), {
      name: 'nightly',
      compression: 'zstd',
      minFreePercent: 10,
      strategy: 'incremental',
      concurrency: 8,
    });
    assert.deepEqual(backupPayload(checkBackupRequest(ask({ parent: 'b1' }))), {
      name: 'nightly',
      compression: 'zstd',
      minFreePercent: 10,
      strategy: 'incremental',
      parent: 'b1',
    });
  });

  it('--incremental follows the latest COMPLETED backup of the same host; the first one has no parent', async () => {
    const store = await storeWithBackups();
    assert.equal(await findParent(store, 'node-1', undefined), 'b2');
    assert.equal(await findParent(store, 'node-2', undefined), 'other');
    assert.equal(await findParent(store, 'node-3', undefined), null);
    assert.equal(await findParent(new MemoryStore(), 'node-1', undefined), null);

    const input = await backupInput(ask({ incremental: true }), target, {}, { profile: profileOf('node-1'), store });
    assert.deepEqual(
      { strategy: input.strategy, parent: input.parent, concurrency: input.concurrency },
      { strategy: 'incremental', parent: 'b2', concurrency: 4 },
    );
    const first = await backupInput(ask({ strategy: 'incremental' }), target, {}, { profile: profileOf('node-3'), store });
    assert.deepEqual({ strategy: first.strategy, parent: first.parent }, { strategy: 'incremental', parent: null });
  });

  it("--parent must be a COMPLETED backup of the same host: a missing one or another host's is refused with its code", async () => {
    const store = await storeWithBackups();
    assert.equal(await findParent(store, 'node-1', 'b1'), 'b1');
    const profile = profileOf('node-1');
    const explicit = await backupInput(ask({ parent: 'b3' }), target, {}, { profile, store });
    assert.deepEqual({ strategy: explicit.strategy, parent: explicit.parent }, { strategy: 'incremental', parent: 'b3' });
    await assert.rejects(backupInput(ask({ parent: 'nope' }), target, {}, { profile, store }), { code: 'CBR_ERR_BACKUP_NOT_FOUND' });
    await assert.rejects(backupInput(ask({ parent: 'other' }), target, {}, { profile, store }), {
      code: 'CBR_ERR_INVALID_ARGUMENT',
      message: /backup of host node-2, not of node-1/,
    });
  });

  it('the profile and the environment choose when the request does not; a full backup never reads the store', async () => {
    const store = await storeWithBackups();
    const run = async (over: Partial<BackupRequest>, profile: Profile, env: NodeJS.ProcessEnv) => {
      const before = store.calls.length;
      const i = await backupInput(ask(over), target, env, { profile, store });
      return { strategy: i.strategy, parent: i.parent, readStore: store.calls.length > before };
    };
    assert.deepEqual(await run({}, profileOf('node-1'), {}), { strategy: 'full', parent: null, readStore: false });
    assert.deepEqual(await run({}, profileOf('node-1', 'incremental'), {}), { strategy: 'incremental', parent: 'b2', readStore: true });
    assert.deepEqual(await run({}, profileOf('node-1'), { CBR_BACKUP_STRATEGY: 'incremental' }), { strategy: 'incremental', parent: 'b2', readStore: true });
    assert.deepEqual(await run({}, profileOf('node-1', 'full'), { CBR_BACKUP_STRATEGY: 'incremental' }), { strategy: 'full', parent: null, readStore: false });
    assert.deepEqual(await run({ strategy: 'full' }, profileOf('node-1', 'incremental'), {}), { strategy: 'full', parent: null, readStore: false });
  });

  it('reads the profile only when it must: a full backup with an unreadable profile is left to the verify step; an incremental one is refused', async () => {
    const full = await backupInput(ask({ strategy: 'full' }), target, {});
    assert.equal(full.strategy, 'full');
    const unsaid = await backupInput(ask(), target, {});
    assert.equal(unsaid.strategy, 'full');
    await assert.rejects(backupInput(ask({ incremental: true }), target, {}), { code: 'CBR_ERR_CONFIG' });
    await assert.rejects(backupInput(ask(), target, { CBR_BACKUP_STRATEGY: 'incremental' }), { code: 'CBR_ERR_CONFIG' });
  });
});
