import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import { connectCql } from '../../../src/cassandra/cql.ts';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import { loadProfile, type Profile } from '../../../src/cassandra/profile.ts';
import type { BackupRecord } from '../../../src/catalog/catalog.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, tableChecksums } from '../../helpers/data.ts';
import { REPO, scratchDir, testEnv } from '../../helpers/env.ts';
import { nodetool } from '../../helpers/nodetool.ts';

/**
 * Restores the way operators run Cassandra 5.0: a source with BTI SSTables, UUID SSTable identifiers, 256 tokens,
 * two data directories and CQL on 127.0.0.2, holding SAI indexes on several tables, a legacy secondary index,
 * a materialized view and quoted mixed-case names; targets running an operator-style cassandra.yaml (block
 * authenticators, num_tokens 16, three data directories, CQL on 127.0.0.3) and a fresh sandbox.
 */

const FIXTURE_YAML = join(REPO, 'test', 'fixtures', 'operator-cassandra-5.0.yaml');
const KEYSPACES = ['rn', 'rn_two'];

/** Queries that go through each index and the view; each must return the same rows after the restore. */
const INDEX_QUERIES = [
  "SELECT id FROM rn.users WHERE email = 'user-17@example.com'", // SAI, equality
  'SELECT id FROM rn.users WHERE age > 30 AND age < 34', // SAI, range
  "SELECT id FROM rn.users WHERE city = 'city-3'", // legacy secondary index
  "SELECT ts FROM rn.events WHERE kind = 'click'", // SAI on another table
  `SELECT "Id" FROM rn."MixedCase" WHERE "Label" = 'label-7'`, // SAI on a quoted mixed-case table
  "SELECT id FROM rn.users_by_city WHERE city = 'city-5'", // materialized view
  "SELECT k FROM rn_two.notes WHERE body = 'note-4'", // SAI in a second keyspace
];

async function indexAnswers(cql: CqlSession): Promise<string[]> {
  const out: string[] = [];
  for (const q of INDEX_QUERIES) {
    const rows = await cql.execute(q);
    out.push(
      `${q} -> ${rows
        .map((r) => JSON.stringify(Object.values(r)))
        .sort()
        .join(',')}`,
    );
  }
  return out;
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(1000);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** Waits for a restore's resettingIdentity state (the maintenance node is up) and looks at what listens where. */
async function probeMaintenance(stateDb: string, target: Profile) {
  const state = () => {
    if (!existsSync(stateDb)) return undefined;
    const db = new StateDb(stateDb, { readOnly: true });
    try {
      return db.list({ kind: 'restore', status: 'active' })[0]?.state;
    } finally {
      db.close();
    }
  };
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline && state() !== 'resettingIdentity') await new Promise((r) => setTimeout(r, 20));
  const yaml = parse(readFileSync(target.cassandraYaml, 'utf8'));
  const nativePort = Number(yaml.native_transport_port);
  const maintenanceOpen = await portOpen('127.0.0.1', nativePort);
  const configuredOpen = await portOpen(target.cql.host, target.cql.port);
  return { rpcAddress: String(yaml.rpc_address), nativePort, maintenanceOpen, configuredOpen, stillThere: state() === 'resettingIdentity' };
}

function profileFile(name: string): string {
  return profilePath(name, testEnv);
}

async function retry<T>(fn: () => Promise<T>, tries = 20): Promise<T> {
  let last: unknown;
  for (let i = 0; i < tries; i++) {
    try {
      return await fn();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  throw last;
}

describe('restore on operators’ real nodes: SAI, 2i, BTI, UUID ids, MV, several data dirs, operator yaml', () => {
  let env: NodeJS.ProcessEnv;
  let source: Profile;
  let sourceCql: CqlSession;
  let backupId: string;
  let record: BackupRecord;
  let sourceSums: Record<string, string>;
  let sourceAnswers: string[];
  let sourceTokens: string[];

  before(async () => {
    env = {
      ...testEnv,
      CBR_STORAGE_ROOT: scratchDir('real-nodes-storage'),
      CBR_STATE_DB: join(scratchDir('real-nodes-state'), 'state.db'),
    };
    const started = await cbr(
      [
        'sandbox',
        'start',
        'rn-src',
        '--address',
        '127.0.0.2',
        '--data-dirs',
        '2',
        '--cluster-name',
        'Real Source',
        '--set',
        'storage_compatibility_mode=NONE',
        '--set',
        'sstable.selected_format=bti',
        '--set',
        'uuid_sstable_identifiers_enabled=true',
        '--set',
        'num_tokens=256',
        '--set',
        'materialized_views_enabled=true',
        '--set',
        'auto_snapshot=true',
        '--json',
      ],
      env,
    );
    assert.equal(started.code, 0, started.err);
    source = await loadProfile(profileFile('rn-src'));
    assert.equal(source.cql.host, '127.0.0.2');
    sourceCql = await cqlFor(source);
    const c = sourceCql;
    for (const ks of KEYSPACES) await c.execute(`CREATE KEYSPACE ${ks} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
    await c.execute('CREATE TABLE rn.users (id int PRIMARY KEY, email text, city text, age int, name text)');
    await c.execute("CREATE INDEX users_email ON rn.users (email) USING 'sai'");
    await c.execute("CREATE INDEX users_age ON rn.users (age) USING 'sai'");
    await c.execute('CREATE INDEX users_city ON rn.users (city)');
    await c.execute('CREATE MATERIALIZED VIEW rn.users_by_city AS SELECT * FROM rn.users WHERE city IS NOT NULL AND id IS NOT NULL PRIMARY KEY (city, id)');
    await c.execute('CREATE TABLE rn.events (day text, ts int, kind text, payload blob, PRIMARY KEY (day, ts))');
    await c.execute("CREATE INDEX events_kind ON rn.events (kind) USING 'sai'");
    await c.execute('CREATE TABLE rn."MixedCase" ("Id" int PRIMARY KEY, "Label" text)');
    await c.execute(`CREATE INDEX "MixedLabel" ON rn."MixedCase" ("Label") USING 'sai'`);
    await c.execute('CREATE TABLE rn_two.notes (k int PRIMARY KEY, body text)');
    await c.execute("CREATE INDEX notes_body ON rn_two.notes (body) USING 'sai'");
    await c.execute('CREATE TABLE rn.gone (k int PRIMARY KEY, v text)');
    for (let i = 0; i < 1500; i++) {
      await c.execute('INSERT INTO rn.users (id, email, city, age, name) VALUES (?, ?, ?, ?, ?)', [
        i,
        `user-${i}@example.com`,
        `city-${i % 11}`,
        18 + (i % 60),
        `User ${i}`,
      ]);
      if (i < 600)
        await c.execute('INSERT INTO rn.events (day, ts, kind, payload) VALUES (?, ?, ?, ?)', [
          `d${i % 7}`,
          i,
          ['click', 'view', 'buy'][i % 3],
          randomBytes(512),
        ]);
      if (i < 300) await c.execute('INSERT INTO rn."MixedCase" ("Id", "Label") VALUES (?, ?)', [i, `label-${i % 20}`]);
      if (i < 200) await c.execute('INSERT INTO rn_two.notes (k, body) VALUES (?, ?)', [i, `note-${i % 9}`]);
      if (i < 50) await c.execute('INSERT INTO rn.gone (k, v) VALUES (?, ?)', [i, `bye-${i}`]);
    }
    // A role the operator of the restored node should be told about.
    await c.execute("CREATE ROLE ops_admin WITH SUPERUSER = true AND LOGIN = true AND PASSWORD = 'ops-admin-pw'");
    // Dropped before the backup: auto_snapshot leaves its directory with a `dropped-...` snapshot behind.
    await c.execute('DROP TABLE rn.gone');

    sourceSums = await tableChecksums(c, KEYSPACES);
    sourceAnswers = await indexAnswers(c);
    const [local] = await c.execute('SELECT tokens FROM system.local');
    sourceTokens = [...((local?.['tokens'] ?? []) as Iterable<string>)].map(String).sort();
    assert.equal(sourceTokens.length, 256);

    const made = await cbr(['backup-create', 'real-nodes', '--config', profileFile('rn-src'), '--json'], env);
    assert.equal(made.code, 0, made.err);
    backupId = String(made.json()['id']);
    const storage = String(env['CBR_STORAGE_ROOT']);
    record = JSON.parse(readFileSync(join(storage, 'database_backups', backupId, 'backup.json'), 'utf8')) as BackupRecord;
    // Created after the snapshot: not in the backup, not on any restored node.
    await c.execute('CREATE TABLE rn.later (k int PRIMARY KEY)');
    await c.execute('INSERT INTO rn.later (k) VALUES (1)');
  });

  after(async () => {
    await sourceCql?.close();
  });

  it('the backup holds every 5.0 component and the settings the data depends on', async () => {
    const paths = record.files.map((f) => f.path);
    const has = (re: RegExp, what: string) =>
      assert.ok(
        paths.some((p) => re.test(p)),
        `${what} in the archive`,
      );
    has(/-bti-Partitions\.db$/, 'BTI Partitions.db');
    has(/-bti-Rows\.db$/, 'BTI Rows.db');
    has(/^rn\/users-[0-9a-f]{32}\/da-[0-9a-z]{4}_[0-9a-z]{4}_[0-9a-z]{18}-bti-Data\.db$/, 'a UUID-named SSTable');
    has(/-SAI\+[a-z]{2}\+GroupComplete\.db$/, 'SAI per-SSTable component');
    has(/-SAI\+[a-z]{2}\+users_email\+/, 'SAI per-index component');
    has(/-SAI\+[a-z]{2}\+MixedLabel\+/, 'SAI component of a mixed-case index');
    has(/^rn\/users-[0-9a-f]{32}\/\.users_city\/.+-Data\.db$/, 'legacy secondary index SSTable');
    has(/^rn\/users_by_city-[0-9a-f]{32}\/.+-Data\.db$/, 'materialized view SSTable');
    has(/^rn\/MixedCase-[0-9a-f]{32}\//, 'quoted mixed-case table');
    assert.ok(!paths.some((p) => p.startsWith('rn/gone-')), 'the dropped table is not in the backup');
    assert.ok(!paths.some((p) => p.startsWith('rn/later-')), 'a table created after the snapshot is not in the backup');
    assert.deepEqual(record.settings, {
      numTokens: 256,
      tokens: record.settings?.tokens,
      partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
      uuidSstableIdentifiers: true,
      sstableFormat: 'bti',
      storageCompatibilityMode: 'NONE',
    });
    assert.deepEqual([...(record.settings?.tokens ?? [])].sort(), sourceTokens);
    const shown = await cbr(['backup-show', backupId], env);
    assert.match(
      shown.out,
      /settings\s+num_tokens 256, partitioner Murmur3Partitioner, uuid_sstable_identifiers_enabled true, sstable.selected_format bti, storage_compatibility_mode NONE/,
    );
  });

  it('restores onto a node running an operator cassandra.yaml: block authenticators, 16 tokens, 3 data dirs, CQL on 127.0.0.3', async () => {
    const started = await cbr(
      [
        'sandbox',
        'start',
        'rn-ops',
        '--yaml',
        FIXTURE_YAML,
        '--data-dirs',
        '3',
        '--address',
        '127.0.0.3',
        '--set',
        'authenticator.class_name=PasswordAuthenticator',
        '--set',
        'authorizer.class_name=CassandraAuthorizer',
        '--json',
      ],
      env,
    );
    assert.equal(started.code, 0, started.err);
    const target = await loadProfile(profileFile('rn-ops'));
    const before = parse(readFileSync(target.cassandraYaml, 'utf8'));
    assert.equal(before.num_tokens, 16);
    assert.deepEqual(before.authenticator, { class_name: 'PasswordAuthenticator' });

    const pwFile = join(scratchDir('rn-pw'), 'ops.pw');
    const password = `ops-${randomBytes(8).toString('hex')}`;
    writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
    const probing = probeMaintenance(String(env['CBR_STATE_DB']), target);
    const res = await cbr(
      ['create', 'rn-ops', '--backup', backupId, '--config', profileFile('rn-ops'), '--password-file', pwFile, '--cluster-name', "Ops 'Restored'", '--json'],
      env,
    );
    assert.equal(res.code, 0, res.err + res.out);
    // While the node ran without authentication it listened on loopback only, on ports picked for that start.
    const probe = await probing;
    assert.equal(probe.rpcAddress, '127.0.0.1');
    assert.notEqual(probe.nativePort, target.cql.port, 'not the configured CQL port');
    assert.equal(probe.configuredOpen, false, `nothing answered on the configured ${target.cql.host}:${target.cql.port} during the maintenance start`);
    if (probe.stillThere) assert.equal(probe.maintenanceOpen, true, 'cbr reached the maintenance node on 127.0.0.1:<picked port>');
    const out = res.json() as Record<string, unknown> & { settingChanges: { key: string; from: unknown; to: unknown }[]; superusers: string[] };
    assert.deepEqual(out.superusers, ['cassandra', 'ops_admin'], 'every superuser role of the restored data is listed');
    const changed = Object.fromEntries(out.settingChanges.map((c) => [c.key, [c.from, c.to]]));
    assert.deepEqual(changed['num_tokens'], [16, 256]);
    assert.deepEqual(changed['uuid_sstable_identifiers_enabled'], [false, true]);
    assert.deepEqual(changed['sstable.selected_format'], ['big', 'bti']);
    assert.deepEqual(changed['storage_compatibility_mode'], ['CASSANDRA_4', 'NONE']);

    // The operator's file: only the cluster name and those settings changed; block form and comments kept.
    const text = readFileSync(target.cassandraYaml, 'utf8');
    const after = parse(text, { version: '1.1' });
    assert.equal(after.cluster_name, "Ops 'Restored'");
    assert.deepEqual(after.authenticator, { class_name: 'PasswordAuthenticator' });
    assert.deepEqual(after.authorizer, { class_name: 'CassandraAuthorizer' });
    assert.equal(after.rpc_address, '127.0.0.3');
    assert.equal(after.native_transport_port, target.cql.port);
    assert.equal(after.num_tokens, 256);
    assert.equal(after.allocate_tokens_for_local_replication_factor, before.allocate_tokens_for_local_replication_factor);
    const fixtureComments = readFileSync(FIXTURE_YAML, 'utf8')
      .split('\n')
      .filter((l) => /^\s*#/.test(l));
    const lost = fixtureComments.filter((c) => !text.includes(c.trim()));
    assert.deepEqual(lost, [], 'every comment of the operator file is kept');

    const cql = await retry(() => connectCql({ ...target.cql, credentials: { username: 'cassandra', password } }));
    try {
      assert.equal(target.cql.host, '127.0.0.3');
      const [local] = await cql.execute('SELECT cluster_name, tokens FROM system.local');
      assert.equal(local?.['cluster_name'], "Ops 'Restored'");
      assert.deepEqual([...((local?.['tokens'] ?? []) as Iterable<string>)].map(String).sort(), sourceTokens, 'the source tokens');
      assert.deepEqual(await tableChecksums(cql, KEYSPACES), sourceSums, 'every table and view has the rows of the source');
      assert.deepEqual(await indexAnswers(cql), sourceAnswers, 'each index answers as on the source');
      const tables = (await cql.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'rn'")).map((r) => r['table_name']);
      assert.ok(!tables.includes('later') && !tables.includes('gone'), `neither the later nor the dropped table: ${tables}`);
    } finally {
      await cql.close();
    }
    // Every data directory holds restored tables; none holds the dropped table's leftovers.
    for (const dir of target.dataDirs) {
      const tableDirs = KEYSPACES.concat(['system', 'system_schema']).flatMap((ks) => (existsSync(join(dir, ks)) ? readdirSync(join(dir, ks)) : []));
      assert.ok(tableDirs.length > 0, `${dir} holds restored tables`);
      assert.ok(!tableDirs.some((t) => t.startsWith('gone-')), `${dir} holds no leftovers of the dropped table`);
    }
    const leftovers = readdirSync(join(target.dataDirs[0]!, '..')).filter((f) => f.includes('.cbr-'));
    assert.deepEqual(leftovers, [], 'no staging or old directories left');
  });

  it('restores as a new sandbox (its generated yaml takes the UUID, BTI and token settings) under a YAML-1.1-tricky name', async () => {
    const res = await cbr(['create', 'rn-copy', '--backup', backupId, '--sandbox', '--cluster-name', 'yes', '--json'], env);
    assert.equal(res.code, 0, res.err + res.out);
    const out = res.json();
    const profile = await loadProfile(String(out['profilePath']));
    const yaml = parse(readFileSync(profile.cassandraYaml, 'utf8'), { version: '1.1' });
    assert.equal(yaml.cluster_name, 'yes', 'a YAML 1.1 boolean word stays a string');
    assert.equal(yaml.uuid_sstable_identifiers_enabled, true);
    assert.equal(yaml.num_tokens, 256);
    const cql = await retry(() => cqlFor(profile));
    try {
      const [local] = await cql.execute('SELECT cluster_name FROM system.local');
      assert.equal(local?.['cluster_name'], 'yes');
      assert.deepEqual(await tableChecksums(cql, KEYSPACES), sourceSums);
      assert.deepEqual(await indexAnswers(cql), sourceAnswers);
    } finally {
      await cql.close();
    }
    await cbr(['sandbox', 'rm', 'rn-copy'], env);
  });

  /**
   * Incremental backups of the same source: a chain with real changes between its links, restored the way operators
   * do (into new nodes running the operator yaml), compared with what the source held when each was taken.
   */
  type Taken = { id: string; sums: Record<string, string>; answers: string[]; record: BackupRecord };
  const chain: Record<'first' | 'middle' | 'compacted' | 'last', Taken> = {} as never;
  /** Queries through indexes of the tables the chain creates or alters; `null` where the table does not exist. */
  const INC_QUERIES = [
    "SELECT k FROM rn.fresh WHERE tag = 'tag-2'", // SAI on a table created between two incrementals
    "SELECT id FROM rn.users WHERE nickname = 'nick-3'", // SAI on a column added by ALTER TABLE
    "SELECT id FROM rn.users WHERE city = 'city-9'", // the legacy secondary index after deletes and new rows
  ];
  async function incAnswers(c: CqlSession): Promise<string[]> {
    const out = await indexAnswers(c);
    for (const q of INC_QUERIES) {
      const rows = await c.execute(q).catch(() => null);
      out.push(
        `${q} -> ${
          rows
            ? rows
                .map((r) => JSON.stringify(Object.values(r)))
                .sort()
                .join(',')
            : 'null'
        }`,
      );
    }
    return out;
  }
  const storedRecord = (id: string) =>
    JSON.parse(readFileSync(join(String(env['CBR_STORAGE_ROOT']), 'database_backups', id, 'backup.json'), 'utf8')) as BackupRecord;
  async function incremental(args: string[]): Promise<Taken> {
    const made = await cbr(['backup-create', 'real-nodes-inc', '--config', profileFile('rn-src'), '--json', ...args], env);
    assert.equal(made.code, 0, made.err);
    const id = String(made.json()['id']);
    return { id, sums: await tableChecksums(sourceCql, KEYSPACES), answers: await incAnswers(sourceCql), record: storedRecord(id) };
  }
  const sstableOf = (path: string) => path.replace(/-[^-/]+$/, '');
  const userSstables = (rec: BackupRecord) =>
    new Set(rec.files.filter((f) => /^rn\/users-[0-9a-f]{32}\/[^/.][^/]*-Data\.db$/.test(f.path)).map((f) => sstableOf(f.path)));

  it('incrementals on the operators’ config: a chain over new rows, deletes, TTLs, a flush, a major compaction, a drop, a create, a truncate, an ALTER', async () => {
    const c = sourceCql;
    const nodetoolOf = await loadProfile(profileFile('rn-src'));
    // 1. After the full backup: new indexed rows, deletes, a table that will be dropped; parent = the full backup.
    for (let i = 1500; i < 1600; i++)
      await c.execute('INSERT INTO rn.users (id, email, city, age, name) VALUES (?, ?, ?, ?, ?)', [
        i,
        `user-${i}@example.com`,
        `city-${i % 11}`,
        18 + (i % 60),
        `User ${i}`,
      ]);
    for (const id of [17, 40, 41, 42, 43]) await c.execute('DELETE FROM rn.users WHERE id = ?', [id]);
    await c.execute('CREATE TABLE rn.dropme (k int PRIMARY KEY, v text)');
    for (let i = 0; i < 40; i++) await c.execute('INSERT INTO rn.dropme (k, v) VALUES (?, ?)', [i, `v-${i}`]);
    const jmx = createNodetool(nodetoolOf, env);
    try {
      await jmx.flush('rn');
    } finally {
      jmx.close();
    }
    chain.first = await incremental(['--incremental']);
    assert.equal(chain.first.record.strategy, 'incremental');
    assert.equal(chain.first.record.parent, backupId, '--incremental follows the full backup');
    assert.ok(
      chain.first.record.files.every((f) => f.shared === false),
      'a full backup stores no blobs to share',
    );

    // 2. Rows with a TTL (some already expired when the backup runs), a partition delete, rows in a second keyspace.
    for (let i = 1600; i < 1650; i++)
      await c.execute(`INSERT INTO rn.users (id, email, city, age, name) VALUES (?, ?, ?, ?, ?) USING TTL ${i < 1620 ? 1 : 86400}`, [
        i,
        `user-${i}@example.com`,
        `city-${i % 11}`,
        18 + (i % 60),
        `User ${i}`,
      ]);
    await c.execute("DELETE FROM rn.events WHERE day = 'd3'");
    for (let i = 200; i < 230; i++) await c.execute('INSERT INTO rn_two.notes (k, body) VALUES (?, ?)', [i, `note-${i % 9}`]);
    await new Promise((r) => setTimeout(r, 2100)); // the TTL-1 rows expire before the snapshot
    chain.middle = await incremental(['--incremental']);
    assert.equal(chain.middle.record.parent, chain.first.id);
    assert.ok(chain.middle.sums['rn.dropme'], 'the table to be dropped is in the middle backup');
    const ttl = await c.execute('SELECT id FROM rn.users WHERE id IN (1600, 1610, 1619, 1620, 1649)');
    assert.deepEqual(ttl.map((r) => r['id']).sort(), [1620, 1649], 'the TTL-1 rows expired on the source, the others are there');

    // 3. A major compaction replaces every SSTable of rn (the new ones get new UUID ids); a table dropped, one created.
    const before = userSstables(chain.middle.record);
    await nodetool(nodetoolOf, 'compact', 'rn');
    await c.execute('DROP TABLE rn.dropme');
    await c.execute('CREATE TABLE rn.fresh (k int PRIMARY KEY, tag text)');
    await c.execute("CREATE INDEX fresh_tag ON rn.fresh (tag) USING 'sai'");
    for (let i = 0; i < 60; i++) await c.execute('INSERT INTO rn.fresh (k, tag) VALUES (?, ?)', [i, `tag-${i % 5}`]);
    chain.compacted = await incremental(['--incremental']);
    assert.equal(chain.compacted.record.parent, chain.middle.id);
    const after = userSstables(chain.compacted.record);
    assert.ok(after.size > 0 && [...after].every((s) => !before.has(s)), `the compaction replaced every SSTable of rn.users: ${[...before]} -> ${[...after]}`);
    for (const f of chain.compacted.record.files.filter((f) => [...after].some((s) => f.path.startsWith(s))))
      assert.equal(f.shared, false, `${f.path} is a new file of the compaction`);
    assert.ok(!chain.compacted.record.files.some((f) => f.path.startsWith('rn/dropme-')), 'the dropped table is not in the later backup');

    // 4. A truncate, an ALTER TABLE adding an indexed column; the parent named: the middle incremental, not the latest.
    await c.execute('TRUNCATE rn_two.notes');
    for (let i = 0; i < 25; i++) await c.execute('INSERT INTO rn_two.notes (k, body) VALUES (?, ?)', [1000 + i, `note-${i % 6}`]);
    await c.execute('ALTER TABLE rn.users ADD nickname text');
    await c.execute("CREATE INDEX users_nickname ON rn.users (nickname) USING 'sai'");
    for (let i = 100; i < 140; i++) await c.execute('UPDATE rn.users SET nickname = ? WHERE id = ?', [`nick-${i % 7}`, i]);
    chain.last = await incremental(['--parent', chain.middle.id]);
    assert.equal(chain.last.record.parent, chain.middle.id, '--parent names an older incremental');
    assert.notDeepEqual(chain.last.sums, chain.middle.sums);

    // Every 5.0 component is in the manifests, and the settings the data depends on travel as with a full backup.
    for (const t of Object.values(chain)) assert.deepEqual(t.record.settings, record.settings, `${t.id}: the settings of the full backup`);
    const paths = chain.last.record.files.map((f) => f.path);
    assert.equal(new Set(paths).size, paths.length, 'no path twice (several data directories)');
    for (const [re, what] of [
      [/-bti-Partitions\.db$/, 'BTI Partitions.db'],
      [/-bti-Rows\.db$/, 'BTI Rows.db'],
      [/-bti-TOC\.txt$/, 'TOC'],
      [/-bti-Digest\.crc32$/, 'Digest.crc32'],
      [/-SAI\+[a-z]{2}\+GroupComplete\.db$/, 'SAI per-SSTable component'],
      [/-SAI\+[a-z]{2}\+users_nickname\+/, 'SAI component of the index on the added column'],
      [/^rn\/fresh-[0-9a-f]{32}\/.+-SAI\+[a-z]{2}\+fresh_tag\+/, 'SAI component of the created table'],
      [/^rn\/users-[0-9a-f]{32}\/\.users_city\/.+-Data\.db$/, 'legacy secondary index SSTable'],
      [/^rn\/users-[0-9a-f]{32}\/manifest\.json$/, 'the snapshot manifest'],
      [/^rn\/users-[0-9a-f]{32}\/schema\.cql$/, 'the snapshot schema'],
    ] as const)
      assert.ok(
        paths.some((p) => re.test(p)),
        `${what} in the manifest`,
      );
    // The same snapshot taken as a full backup (nothing written in between) holds the same user files.
    const full = await cbr(['backup-create', 'real-nodes-inc', '--config', profileFile('rn-src'), '--strategy', 'full', '--json'], env);
    assert.equal(full.code, 0, full.err);
    const userFiles = (rec: BackupRecord) =>
      rec.files
        .filter((f) => KEYSPACES.includes(f.path.split('/')[0]!) && !/\/(manifest\.json|schema\.cql)$/.test(f.path))
        .map((f) => `${f.path} ${f.size}`)
        .sort();
    const fullRecord = storedRecord(String(full.json()['id']));
    assert.deepEqual(userFiles(chain.last.record), userFiles(fullRecord), 'an incremental lists the files a full backup archives');
    assert.deepEqual(fullRecord.settings, chain.last.record.settings);
  });

  /** Starts a new node on the operator yaml (3 data directories, block authenticators) and restores `id` into it. */
  async function operatorNode(name: string, address: string) {
    const started = await cbr(
      [
        'sandbox',
        'start',
        name,
        '--yaml',
        FIXTURE_YAML,
        '--data-dirs',
        '3',
        '--address',
        address,
        '--set',
        'authenticator.class_name=PasswordAuthenticator',
        '--set',
        'authorizer.class_name=CassandraAuthorizer',
        '--json',
      ],
      env,
    );
    assert.equal(started.code, 0, started.err);
    const pwFile = join(scratchDir(`${name}-pw`), 'ops.pw');
    const password = `ops-${randomBytes(8).toString('hex')}`;
    writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
    return { profile: await loadProfile(profileFile(name)), pwFile, password };
  }

  async function checkRestored(target: Profile, password: string, taken: Taken) {
    // The settings the data depends on came with the incremental, as with a full backup.
    const yaml = parse(readFileSync(target.cassandraYaml, 'utf8'), { version: '1.1' });
    assert.deepEqual(
      [yaml.num_tokens, yaml.partitioner, yaml.uuid_sstable_identifiers_enabled, yaml.sstable?.selected_format, yaml.storage_compatibility_mode],
      [256, 'org.apache.cassandra.dht.Murmur3Partitioner', true, 'bti', 'NONE'],
    );
    const cql = await retry(() => connectCql({ ...target.cql, credentials: { username: 'cassandra', password } }));
    try {
      assert.deepEqual(await tableChecksums(cql, KEYSPACES), taken.sums, 'every table and view has the rows of the source at that backup');
      assert.deepEqual(await incAnswers(cql), taken.answers, 'each index answers as on the source at that backup');
      const [local] = await cql.execute('SELECT tokens FROM system.local');
      assert.deepEqual([...((local?.['tokens'] ?? []) as Iterable<string>)].map(String).sort(), sourceTokens, 'the source tokens');
    } finally {
      await cql.close();
    }
  }

  it('restores the MIDDLE incremental into a new node on the operator yaml, killed with -9 mid-fetch and resumed: the rows of that backup', async () => {
    const { profile: target, pwFile, password } = await operatorNode('rn-inc-mid', '127.0.0.4');
    const args = ['create', 'rn-inc-mid', '--backup', chain.middle.id, '--config', profileFile('rn-inc-mid'), '--password-file', pwFile, '--json'];
    const child = spawn(join(REPO, 'node_modules', '.bin', 'node'), [join(REPO, 'bin', 'cbr.js'), ...args], {
      env: { ...env, CBR_DRILL_FILE_DELAY_MS: '40' },
      stdio: 'ignore',
    });
    const journal = () => {
      for (const dir of target.dataDirs) {
        const parent = join(dir, '..');
        const staging = readdirSync(parent).find((d) => d.startsWith(`${dir.split('/').pop()}.cbr-restore-`));
        if (staging && existsSync(join(parent, staging, '.cbr-fetched'))) return join(parent, staging, '.cbr-fetched');
      }
      return null;
    };
    const lines = () =>
      readFileSync(journal()!, 'utf8')
        .split('\n')
        .filter((l) => /^[0-9a-f]{64} /.test(l)).length;
    const deadline = Date.now() + 300_000;
    while (!(journal() && lines() > 6)) {
      assert.ok(child.exitCode === null && Date.now() < deadline, 'the restore did not reach fetching');
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const total = chain.middle.record.fileCount;
    assert.ok(lines() < total, `${lines()} of ${total} fetched before the kill`);

    const resumed = await cbr(['resume', '--json'], { ...env, CBR_LOG_LEVEL: 'info' });
    assert.equal(resumed.code, 0, resumed.err);
    const line = resumed.err.split('\n').find((l) => l.includes('files fetched'));
    assert.ok(line, resumed.err.slice(-2000));
    const logged = JSON.parse(line) as { fetched: number; alreadyThere: number };
    assert.ok(logged.alreadyThere > 0 && logged.fetched > 0 && logged.fetched + logged.alreadyThere === total, line);
    await checkRestored(target, password, chain.middle);
    assert.ok(chain.middle.sums['rn.dropme'] && !chain.middle.sums['rn.fresh'], 'the dropped table there, the later one not');
    await cbr(['sandbox', 'rm', 'rn-inc-mid'], env);
  });

  it('restores the LAST incremental (its parent named with --parent) over the node holding the full backup’s restore: the rows of that backup, nothing of the full', async () => {
    const target = await loadProfile(profileFile('rn-ops'));
    const pwFile = join(scratchDir('rn-ops-pw2'), 'ops.pw');
    const password = `ops-${randomBytes(8).toString('hex')}`;
    writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
    const res = await cbr(
      ['create', 'rn-ops', '--backup', chain.last.id, '--config', profileFile('rn-ops'), '--password-file', pwFile, '--force', '--json'],
      env,
    );
    assert.equal(res.code, 0, res.err + res.out);
    await checkRestored(target, password, chain.last);
    assert.ok(!chain.last.sums['rn.dropme'] && chain.last.sums['rn.fresh'], 'the dropped table gone, the created one there');
  });
});
