import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, globSync, openSync, readdirSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import cassandra from 'cassandra-driver';
import { loadCredentials, loadProfile, type Profile } from '../../../src/cassandra/profile.ts';
import { readRecord } from '../../../src/catalog/catalog.ts';
import type { ClusterRecord } from '../../../src/catalog/clusterRecord.ts';
import { profilePath, removeSandbox, runningPid } from '../../../src/sandbox/sandbox.ts';
import { openStore } from '../../../src/storage/open.ts';
import { BUS_URL, killHard, spawnAgent, waitForAgentQueue } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { backUpSandboxClusterForRestoreTests } from '../../helpers/clusterBackup.ts';
import { SHARED_CLUSTER, scratchDir, sharedCluster, testEnv } from '../../helpers/env.ts';

/**
 * Issue #15 item 4: a cluster backup restored into ONE node (`cbr create <name> --backup <cluster backup id>`).
 * The shared real 3-node cluster, keyspaces at RF 1 and RF 2 (so each node holds rows the others lack), a
 * cluster backup made as the coordinator will make it (test/helpers/clusterBackup.ts), then restored into a new
 * sandbox node and compared row by row with the source read at consistency ALL.
 */
/** The 3-node cluster every cluster test shares (test/helpers/env.ts). */
const CLUSTER = SHARED_CLUSTER;
const TARGET = 'c1n-one';
const KEYSPACES = ['c1n_spread', 'c1n_pairs'];
const ROWS = 240;
const ROLES = Array.from({ length: 6 }, (_, i) => `c1n_reader_${i}`);
/** A new id each run (CBR_KEEP_NODES=1 keeps the cluster and its storage for the next run). */
const ID = `c1n-${Date.now().toString(36)}`;

type Client = InstanceType<typeof cassandra.Client>;
const { consistencies } = cassandra.types;

function client(hosts: string[], port: number, username: string, password: string): Client {
  return new cassandra.Client({
    contactPoints: hosts,
    localDataCenter: 'datacenter1',
    protocolOptions: { port },
    authProvider: new cassandra.auth.PlainTextAuthProvider(username, password),
  });
}

/** Every row of every table of KEYSPACES, read at `consistency`, as sorted JSON lines per table. */
async function dump(c: Client, consistency: number): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const ks of KEYSPACES) {
    const tables = await c.execute('SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?', [ks], { prepare: true });
    for (const t of tables.rows) {
      const name = `${ks}.${String(t['table_name'])}`;
      // Far fewer rows than one page holds: one request reads the whole table.
      const rs = await c.execute(`SELECT * FROM ${name}`, [], { prepare: true, consistency, fetchSize: 100_000 });
      const lines = rs.rows.map((row) => JSON.stringify(row, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)));
      out[name] = lines.sort();
    }
  }
  return out;
}

describe('restore a cluster backup into one node', () => {
  const storageRoot = scratchDir('c1n-storage');
  const env = { ...testEnv, CBR_STORAGE_ROOT: storageRoot, CBR_STATE_DB: join(scratchDir('c1n-state'), 'state.db') };
  const store = openStore({ driver: 'local', root: storageRoot, container: 'database_backups' });
  let profiles: Profile[];
  let record: ClusterRecord;
  let source: Record<string, string[]>;
  let roleTokens: { role: string; token: bigint }[];
  const t0 = performance.now();
  const lap = (what: string) => console.log(`# ${what} at ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  before(async () => {
    await removeSandbox(TARGET, env).catch(() => {});
    profiles = await sharedCluster();
    const first = profiles[0]!;
    const creds = await loadCredentials(first.cql.credentialsFile);
    const c = client(
      profiles.map((p) => p.cql.host),
      first.cql.port,
      creds.username,
      creds.password,
    );
    await c.connect();
    try {
      const ALL = { consistency: consistencies.all, prepare: true };
      await c.execute(`CREATE KEYSPACE IF NOT EXISTS ${KEYSPACES[0]} WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 1}`);
      await c.execute(`CREATE KEYSPACE IF NOT EXISTS ${KEYSPACES[1]} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}`);
      for (const ks of KEYSPACES) {
        await c.execute(
          `CREATE TABLE IF NOT EXISTS ${ks}.things (id int, part text, at timestamp, big bigint, ratio double, ok boolean, who uuid, tags set<text>, attrs map<text, int>, data blob, PRIMARY KEY ((part), id))`,
        );
        await c.execute(`CREATE TABLE IF NOT EXISTS ${ks}.kv (k text PRIMARY KEY, v text)`);
        await c.execute(`CREATE INDEX IF NOT EXISTS kv_v ON ${ks}.kv (v)`);
        // A storage-attached index too (SAI: its own per-SSTable component files travel with each part).
        await c.execute(`CREATE INDEX IF NOT EXISTS things_big ON ${ks}.things (big) USING 'sai'`);
      }
      // 40 writes in flight at a time: the cluster is on 2 busy cores, but one at a time is the slow part.
      const writes: (() => Promise<unknown>)[] = [];
      for (const ks of KEYSPACES) {
        for (let i = 0; i < ROWS; i++) {
          writes.push(() =>
            c.execute(
              `INSERT INTO ${ks}.things (id, part, at, big, ratio, ok, who, tags, attrs, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
              [
                i,
                `p${i % 37}`,
                new Date(1_700_000_000_000 + i * 1000),
                cassandra.types.Long.fromString(`${9_000_000_000_000 + i}`),
                i / 7,
                i % 2 === 0,
                cassandra.types.Uuid.random(),
                [`t${i % 3}`, `u${i % 5}`],
                { a: i, b: -i },
                randomBytes(64 + (i % 200)),
              ],
              ALL,
            ),
          );
          writes.push(() => c.execute(`INSERT INTO ${ks}.kv (k, v) VALUES (?, ?)`, [`key-${i}`, `value-${i}`], ALL));
        }
      }
      for (let at = 0; at < writes.length; at += 40) await Promise.all(writes.slice(at, at + 40).map((w) => w()));
      // Roles: system_auth (SimpleStrategy RF 1 in 5.0) spreads them over the nodes like user rows.
      for (const role of ROLES) await c.execute(`CREATE ROLE IF NOT EXISTS ${role} WITH LOGIN = true AND PASSWORD = 'reader-password-1'`);
      roleTokens = (await c.execute('SELECT role, token(role) AS t FROM system_auth.roles')).rows.map((r) => ({
        role: String(r['role']),
        token: BigInt(String(r['t'])),
      }));
      source = await dump(c, consistencies.all);
    } finally {
      await c.shutdown();
    }
    lap('cluster up, rows written');
    record = await backUpSandboxClusterForRestoreTests(CLUSTER, ID, store, env);
    lap('cluster backup made');
  });

  after(async () => {
    if (process.env['CBR_KEEP_NODES']) return;
    await removeSandbox(TARGET, env).catch(() => {});
  });

  it('the parts hold different rows and share SSTable names (the ids every node numbers from 1)', async () => {
    assert.deepEqual(
      record.hosts.map((h) => h.backupId),
      [1, 2, 3].map((n) => `${ID}-${n}`),
    );
    const names = new Map<string, number>();
    for (const h of record.hosts) {
      const rec = await readRecord(store, h.backupId);
      assert.equal(rec.state, 'COMPLETED');
      for (const f of rec.files.filter((x) => x.path.startsWith(`${KEYSPACES[0]}/things-`) && x.path.endsWith('-Data.db'))) {
        names.set(f.path, (names.get(f.path) ?? 0) + 1);
      }
    }
    // Which host holds each role (RF 1: the owner of the first ring token at or after the role's token).
    const ring = record.hosts.flatMap((h, i) => h.tokens.map((t) => ({ t: BigInt(t), i }))).sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
    const holder = (t: bigint) => (ring.find((r) => r.t >= t) ?? ring[0]!).i;
    const elsewhere = roleTokens.filter((r) => holder(r.token) !== 0).map((r) => r.role);
    assert.ok(elsewhere.length > 0, 'some role lives only on the second or third node');
    console.log(`# roles only on nodes 2-3: ${elsewhere.join(', ')}`);
    const shared = [...names].filter(([, n]) => n > 1).map(([p]) => p);
    assert.ok(shared.length > 0, `some SSTable path is in more than one part: ${[...names.keys()].join(', ')}`);
    console.log(`# SSTables named alike in several parts: ${shared.join(', ')}`);
  });

  it('restores every host into one new sandbox node: every row identical, read at QUORUM, replication lowered', async () => {
    const pwFile = join(scratchDir('c1n-pw'), 'pw');
    const password = `one-${randomBytes(8).toString('hex')}`;
    writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
    const res = await cbr(['create', TARGET, '--backup', ID, '--sandbox', '--password-file', pwFile, '--json'], env);
    lap('restored into one node');
    assert.equal(res.code, 0, res.err);
    const out = res.json();
    assert.equal(out['clusterBackupId'], ID);
    assert.deepEqual(out['partsImported'], [`${ID}-2`, `${ID}-3`]);
    assert.equal(out['cassandraStarts'], 2);
    const changes = out['replicationChanges'] as { keyspace: string; to: Record<string, string> }[];
    assert.deepEqual(changes.find((c) => c.keyspace === KEYSPACES[1])?.to, { class: 'SimpleStrategy', replication_factor: '1' }, JSON.stringify(changes));
    assert.ok(!changes.some((c) => c.keyspace === KEYSPACES[0]), 'RF 1 in datacenter1 stays');

    const target = await loadProfile(profilePath(TARGET, env));
    const c = client([target.cql.host], target.cql.port, 'cassandra', password);
    await c.connect();
    try {
      const restored = await dump(c, consistencies.quorum);
      for (const [table, rows] of Object.entries(source)) {
        assert.equal(restored[table]?.length, rows.length, `${table}: row count`);
        assert.deepEqual(restored[table], rows, `${table}: every row identical`);
      }
      assert.equal(source[`${KEYSPACES[0]}.things`]?.length, ROWS);
      const [local] = (await c.execute('SELECT cluster_name FROM system.local')).rows;
      assert.equal(local?.['cluster_name'], TARGET);
      // A secondary index answers for rows of every part (the import builds it for what it loads).
      for (const ks of KEYSPACES) {
        for (let i = 0; i < ROWS; i += 17) {
          const hit = await c.execute(`SELECT k FROM ${ks}.kv WHERE v = ?`, [`value-${i}`], { prepare: true, consistency: consistencies.quorum });
          assert.deepEqual(
            hit.rows.map((r) => r['k']),
            [`key-${i}`],
            `${ks}.kv_v finds value-${i}`,
          );
        }
      }
      // The SAI index answers a range over rows of every part.
      for (const ks of KEYSPACES) {
        const from = 9_000_000_000_000 + ROWS - 60;
        const hit = await c.execute(`SELECT id FROM ${ks}.things WHERE big >= ?`, [cassandra.types.Long.fromString(`${from}`)], {
          prepare: true,
          consistency: consistencies.quorum,
          fetchSize: 100_000,
        });
        assert.deepEqual(
          hit.rows.map((r) => Number(r['id'])).sort((a, b) => a - b),
          Array.from({ length: 60 }, (_, i) => ROWS - 60 + i),
          `${ks}.things_big (SAI) finds the last 60 rows`,
        );
      }
      assert.equal((await c.execute('SELECT peer FROM system.peers')).rows.length, 0, 'no peer of the source cluster');
      const roles = (await c.execute('SELECT role FROM system_auth.roles')).rows.map((r) => String(r['role']));
      for (const role of ROLES) assert.ok(roles.includes(role), `role ${role} from the source is there: ${roles.join(', ')}`);
    } finally {
      await c.shutdown();
    }
    // Every imported SSTable has a name of its own, and no staging folder is left.
    const dataDir = target.dataDirs[0]!;
    for (const ks of KEYSPACES) {
      const data = globSync(join(dataDir, ks, 'things-*', '*-Data.db'));
      assert.equal(new Set(data).size, data.length);
    }
    assert.deepEqual(
      readdirSync(join(dataDir, '..')).filter((n) => n.includes('.cbr-')),
      [],
      'no staging, parts or old directories left',
    );
  });

  it('a tampered part fails with a code before the node is stopped, from the CLI and over the bus; the target keeps running with its data', async () => {
    const target = await loadProfile(profilePath(TARGET, env));
    const before = globSync(join(target.dataDirs[0]!, '*', '*', '*-Data.db')).sort();
    const pidBefore = readPid(target);
    // One byte of the third part's archive flipped, its size kept (so only the SHA-256 at the end of the stream tells).
    const rec = await readRecord(store, `${ID}-3`);
    const file = join(storageRoot, 'database_backups', rec.object);
    const size = statSync(file).size;
    const fd = openSync(file, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, Math.floor(size / 2));
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, Math.floor(size / 2));
    closeSync(fd);
    const pwFile = join(scratchDir('c1n-pw2'), 'pw');
    writeFileSync(pwFile, 'another-password-2\n', { mode: 0o600 });
    const res = await cbr(['create', TARGET, '--backup', ID, '--config', profilePath(TARGET, env), '--force', '--password-file', pwFile, '--json'], env);
    assert.notEqual(res.code, 0);
    assert.match(String(res.json().error?.code), /^CBR_ERR_(ARCHIVE_CORRUPT|ARCHIVE_CHECKSUM_MISMATCH|DECRYPT_FAILED)$/, res.out + res.err);
    assert.equal(readPid(target), pidBefore, 'the node was never stopped');
    // The same over the bus: the target's agent resolves the cluster id into its parts and refuses alike.
    const prefix = `c1n-${process.pid}.`;
    const agent = spawnAgent({
      host: 'c1n-target',
      profilePath: profilePath(TARGET, env),
      env: { ...env, CBR_STATE_DB: join(scratchDir('c1n-agent'), 'state.db') },
      prefix,
    });
    try {
      await waitForAgentQueue(prefix, 'c1n-target');
      const viaBus = await cbr(
        ['create', TARGET, '--backup', ID, '--bus', BUS_URL, '--prefix', prefix, '--host', 'c1n-target', '--force', '--password-file', pwFile, '--json'],
        env,
      );
      assert.notEqual(viaBus.code, 0);
      assert.match(String(viaBus.json().error?.code), /^CBR_ERR_(ARCHIVE_CORRUPT|ARCHIVE_CHECKSUM_MISMATCH|DECRYPT_FAILED)$/, viaBus.out + viaBus.err);
    } finally {
      await killHard(agent);
    }
    assert.equal(readPid(target), pidBefore, 'the node was never stopped');
    assert.deepEqual(globSync(join(target.dataDirs[0]!, '*', '*', '*-Data.db')).sort(), before, 'its data untouched');
    assert.deepEqual(
      readdirSync(join(target.dataDirs[0]!, '..')).filter((n) => n.includes('.cbr-')),
      [],
      'staging and parts discarded',
    );
    const creds = await loadCredentials(target.cql.credentialsFile);
    const c = client([target.cql.host], target.cql.port, creds.username, creds.password);
    await c.connect();
    try {
      const rows = await dump(c, consistencies.quorum);
      assert.deepEqual(rows, source, 'the restored rows are still there');
    } finally {
      await c.shutdown();
    }
  });

  it('an import Cassandra refuses after the stop (a table the first part lacks) rolls back: the node restarts on its data', async () => {
    const target = await loadProfile(profilePath(TARGET, env));
    const creds = await loadCredentials(target.cql.credentialsFile);
    // The first node's part is taken before the table exists, the others after: their SSTables of it have no table here.
    const late = `${ID}-late`;
    await backUpSandboxClusterForRestoreTests(CLUSTER, late, store, env, {
      afterPart: async (i) => {
        if (i !== 0) return;
        const first = profiles[0]!;
        const own = await loadCredentials(first.cql.credentialsFile);
        const c = client(
          profiles.map((p) => p.cql.host),
          first.cql.port,
          own.username,
          own.password,
        );
        await c.connect();
        try {
          await c.execute(`CREATE TABLE IF NOT EXISTS ${KEYSPACES[1]}.late (k int PRIMARY KEY, v text)`);
          for (let k = 0; k < 20; k++)
            await c.execute(`INSERT INTO ${KEYSPACES[1]}.late (k, v) VALUES (?, ?)`, [k, `v${k}`], { prepare: true, consistency: consistencies.all });
        } finally {
          await c.shutdown();
        }
      },
    });
    const pidBefore = readPid(target);
    const pwFile = join(scratchDir('c1n-pw3'), 'pw');
    writeFileSync(pwFile, 'another-password-3\n', { mode: 0o600 });
    const res = await cbr(['create', TARGET, '--backup', late, '--config', profilePath(TARGET, env), '--force', '--password-file', pwFile, '--json'], env);
    lap('import refused and rolled back');
    assert.equal(res.code, 11, res.out + res.err);
    assert.equal(res.json().error?.code, 'CBR_ERR_IMPORT_FAILED', res.out);
    assert.match(String(res.json().error?.message), /late/);
    const pidAfter = readPid(target);
    assert.ok(pidAfter !== null && pidAfter !== pidBefore, 'the node was stopped, and started again by the rollback');
    assert.deepEqual(
      readdirSync(join(target.dataDirs[0]!, '..')).filter((n) => n.includes('.cbr-')),
      [],
      'staging, parts and moved-aside directories all gone',
    );
    assert.deepEqual(await loadCredentials(target.cql.credentialsFile), creds, 'the password is the one before');
    const c = client([target.cql.host], target.cql.port, creds.username, creds.password);
    await c.connect();
    try {
      const [local] = (await c.execute('SELECT cluster_name FROM system.local')).rows;
      assert.equal(local?.['cluster_name'], TARGET, 'its own cluster name again');
      assert.deepEqual(await dump(c, consistencies.quorum), source, 'the rows restored before are all there');
    } finally {
      await c.shutdown();
    }
  });
});

function readPid(p: Profile): number | null {
  return p.service.kind === 'sandbox' ? runningPid(p.service.instanceDir) : null;
}
