import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import cassandra from 'cassandra-driver';
import { connectCql } from '../../../src/cassandra/cql.ts';
import { loadCredentials, loadProfile, type Profile } from '../../../src/cassandra/profile.ts';
import { readTopology } from '../../../src/cassandra/topology.ts';
import type { ClusterRecord } from '../../../src/catalog/clusterRecord.ts';
import { type ClusterStatus, clusterProfiles, clusterStatus, createCluster, isCluster, removeCluster } from '../../../src/sandbox/cluster.ts';
import { profilePath, runningPid } from '../../../src/sandbox/sandbox.ts';
import { journalDir, listJournals } from '../../../src/steps/clusterRestore/journal.ts';
import { openStore } from '../../../src/storage/open.ts';
import { DEFAULT_CONTAINER } from '../../../src/storage/port.ts';
import { cbr } from '../../helpers/cli.ts';
import { backUpSandboxClusterForRestoreTests } from '../../helpers/clusterBackup.ts';
import { REPO, SHARED_CLUSTER, scratchDir, sharedCluster, testEnv } from '../../helpers/env.ts';

/**
 * Issue #15 item 3: a cluster backup of the shared 3-node cluster (keyspace at RF 2, so each node holds its own
 * two thirds of the rows) restored as a new 3-node sandbox cluster: every node takes one source node's data and
 * tokens, the new cluster name and one new password; every row reads identical at consistency ALL. A node failing
 * after the others started in the new cluster rolls every node back. At most 6 nodes run at once (the shared 3
 * and the 3 new ones).
 */

const KS = 'crn';
const ID = `crn-${process.pid}`;
const ALL = { consistency: cassandra.types.consistencies.all, prepare: true, fetchSize: 5000 };

function client(profiles: Profile[], username: string, password: string): cassandra.Client {
  return new cassandra.Client({
    contactPoints: profiles.map((p) => p.cql.host),
    localDataCenter: 'datacenter1',
    protocolOptions: { port: profiles[0]!.cql.port },
    authProvider: new cassandra.auth.PlainTextAuthProvider(username, password),
  });
}

/** Every row of every table of KS read at consistency ALL, as sorted JSON lines per table. */
async function dumpAll(c: cassandra.Client): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const table of ['items', 'events', 'hits']) {
    const rows = (await c.execute(`SELECT * FROM ${KS}.${table}`, [], ALL)).rows;
    out[table] = rows.map((r) => JSON.stringify(Object.fromEntries(r.keys().map((k) => [k, String(r.get(k))])))).sort();
  }
  return out;
}

/** The files under each data, commitlog, hints and saved caches directory of a node, and what lies beside them. */
function nodeFiles(p: Profile): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      out.push(`${rel}/${name}`);
      if (statSync(path).isDirectory()) walk(path, `${rel}/${name}`);
    }
  };
  for (const dir of [...p.dataDirs, p.commitlogDir, p.hintsDir, p.savedCachesDir]) walk(dir, dir);
  // What lies beside them (no leftover .cbr-old-* or .cbr-restore-*); the sandbox's pid file is not the node's data.
  for (const dir of new Set([...p.dataDirs, p.commitlogDir].map((d) => dirname(d)))) {
    out.push(
      ...readdirSync(dir)
        .filter((n) => n !== 'cassandra.pid')
        .map((n) => `${dir}/${n}`),
    );
  }
  return out.sort();
}

function instanceDirOf(p: Profile): string {
  assert.equal(p.service.kind, 'sandbox');
  return p.service.kind === 'sandbox' ? p.service.instanceDir : '';
}

describe('restore a cluster backup as a new cluster', () => {
  let source: Profile[];
  let _sourcePaths: string[];
  let env: NodeJS.ProcessEnv;
  let record: ClusterRecord;
  let expected: Record<string, string[]>;
  let oldPassword: string;

  before(async () => {
    source = await sharedCluster();
    _sourcePaths = source.map((p) => profilePath(p.name, testEnv));
    env = { ...testEnv, CBR_STORAGE_ROOT: scratchDir('cluster-new-storage') };
    const creds = await loadCredentials(source[0]!.cql.credentialsFile);
    oldPassword = creds.password;
    const c = client(source, creds.username, creds.password);
    await c.connect();
    try {
      await c.execute(`DROP KEYSPACE IF EXISTS ${KS}`);
      await c.execute(`CREATE KEYSPACE ${KS} WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 2}`);
      await c.execute(
        `CREATE TABLE ${KS}.items (id uuid PRIMARY KEY, name text, qty int, big bigint, price decimal, ratio double, flag boolean,
         seen timestamp, day date, ip inet, payload blob, tags set<text>, attrs map<text, int>, history list<int>, note varchar)`,
      );
      await c.execute(`CREATE TABLE ${KS}.events (series text, at timeuuid, v varint, PRIMARY KEY (series, at)) WITH CLUSTERING ORDER BY (at DESC)`);
      await c.execute(`CREATE TABLE ${KS}.hits (page text PRIMARY KEY, n counter)`);
      const W = { consistency: cassandra.types.consistencies.all, prepare: true };
      // 20 writers at once: the rows only need to be there, in any order.
      const write = async (i: number) => {
        await c.execute(
          `INSERT INTO ${KS}.items (id, name, qty, big, price, ratio, flag, seen, day, ip, payload, tags, attrs, history, note)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          [
            cassandra.types.Uuid.random(),
            `item-${i}`,
            i,
            cassandra.types.Long.fromString(`${i}000000000007`),
            cassandra.types.BigDecimal.fromString(`${i}.25`),
            i / 7,
            i % 2 === 0,
            new Date(1_700_000_000_000 + i * 1000),
            cassandra.types.LocalDate.fromString(`2026-01-${String((i % 28) + 1).padStart(2, '0')}`),
            cassandra.types.InetAddress.fromString(`10.0.${i % 256}.1`),
            Buffer.from(`payload-${i}`.repeat(20)),
            [`t${i % 3}`, `t${i % 5}`],
            { a: i, b: i * 2 },
            [i, i + 1, i + 2],
            i % 10 === 0 ? null : `note ${i}`,
          ],
          W,
        );
        await c.execute(`INSERT INTO ${KS}.events (series, at, v) VALUES (?, now(), ?)`, [`s${i % 7}`, cassandra.types.Integer.fromNumber(i * 1001)], W);
        await c.execute(`UPDATE ${KS}.hits SET n = n + ? WHERE page = ?`, [cassandra.types.Long.fromNumber(i + 1), `/p/${i % 40}`], W);
      };
      for (let i = 0; i < 300; i += 20) await Promise.all(Array.from({ length: 20 }, (_, j) => write(i + j)));
      expected = await dumpAll(c);
    } finally {
      await c.shutdown();
    }
    assert.equal(expected['items']?.length, 300);
    record = await backUpSandboxClusterForRestoreTests(
      SHARED_CLUSTER,
      ID,
      openStore({ driver: 'local', root: env['CBR_STORAGE_ROOT']!, container: DEFAULT_CONTAINER }),
      env,
    );
    assert.equal(record.hosts.length, 3);
  });

  after(async () => {
    for (const name of ['crnew', 'crfail', 'crkill']) if (isCluster(name, testEnv)) await removeCluster(name, testEnv);
  });

  it('as a new 3-node sandbox cluster: the source tokens and host ids, the new name and password, every row identical at ALL', async () => {
    const t0 = Date.now();
    const r = await cbr(['create', 'crnew', '--backup', ID, '--sandbox', '--nodes', '3', '--json'], env);
    assert.equal(r.code, 0, r.err + r.out);
    console.log(`# restored as a new 3-node cluster in ${((Date.now() - t0) / 1000).toFixed(1)} s (phases, s: ${JSON.stringify(r.json()['seconds'])})`);
    const out = r.json() as unknown as {
      clusterName: string;
      passwordFile: string;
      superuser: string;
      nodes: { node: string; hostId: string; tokens: number }[];
    };
    assert.equal(out.clusterName, 'crnew');
    assert.deepEqual(
      out.nodes.map((n) => [n.node, n.hostId, n.tokens]),
      record.hosts.map((h, i) => [`crnew-${i + 1}`, h.hostId, 16]),
    );
    const password = readFileSync(out.passwordFile, 'utf8').trim();
    assert.notEqual(password, oldPassword);

    const status = await clusterStatus('crnew', { env: testEnv });
    assert.deepEqual(
      status.nodes.map((n) => [n.state, n.peers]),
      [
        ['UN', 2],
        ['UN', 2],
        ['UN', 2],
      ],
    );
    const target = await clusterProfiles('crnew', testEnv);
    assert.ok(
      target.every((p, i) => p.cql.port !== source[i]!.cql.port),
      'the new cluster has ports of its own',
    );
    for (const [i, p] of target.entries()) {
      // The profile took the new password; the source's password is refused on every node.
      assert.deepEqual(await loadCredentials(p.cql.credentialsFile), { username: out.superuser, password });
      const cql = await connectCql({ ...p.cql, credentials: { username: out.superuser, password } });
      try {
        const ring = await readTopology(cql);
        assert.equal(ring.clusterName, 'crnew');
        assert.equal(ring.seenFrom, record.hosts[i]!.hostId);
        assert.deepEqual(
          ring.hosts.map((h) => [h.hostId, h.tokens.join(',')]).sort(),
          record.hosts.map((h) => [h.hostId, h.tokens.join(',')]).sort(),
          'the restored ring shows the recorded tokens',
        );
        assert.deepEqual(
          ring.hosts.map((h) => h.address),
          ['127.0.0.1', '127.0.0.2', '127.0.0.3'],
        );
      } finally {
        await cql.close();
      }
      await assert.rejects(connectCql({ ...p.cql, credentials: { username: out.superuser, password: oldPassword } }), /password|Authentication/i);
    }
    // The source cluster never saw the new nodes.
    const src = await connectCql({ ...source[0]!.cql, credentials: await loadCredentials(source[0]!.cql.credentialsFile) });
    try {
      const ring = await readTopology(src);
      assert.equal(ring.clusterName, SHARED_CLUSTER);
      assert.deepEqual(
        ring.hosts.map((h) => h.nativePort),
        [source[0]!.cql.port, source[0]!.cql.port, source[0]!.cql.port],
      );
    } finally {
      await src.close();
    }

    const c = client(target, out.superuser, password);
    await c.connect();
    try {
      assert.deepEqual(await dumpAll(c), expected, 'every row identical at consistency ALL');
    } finally {
      await c.shutdown();
    }
    await removeCluster('crnew', testEnv);
  });

  it('a node failing after the others started in the new cluster rolls every node back', async () => {
    await createCluster('crfail', 3, { env: testEnv });
    const paths = [1, 2, 3].map((i) => profilePath(`crfail-${i}`, testEnv));
    const profiles = await Promise.all(paths.map((p) => loadProfile(p)));
    const before = profiles.map((p) => ({
      files: nodeFiles(p),
      yaml: readFileSync(p.cassandraYaml, 'utf8'),
      creds: readFileSync(p.cql.credentialsFile, 'utf8'),
    }));

    const t0 = Date.now();
    const r = await cbr(['create', 'crfail', '--backup', ID, '--profiles', paths.join(','), '--json'], {
      ...env,
      CBR_DRILL_CLUSTER_RESTORE_FAIL: '3:startOthers',
    });
    assert.equal(r.code, 11, r.err + r.out);
    console.log(`# failed and rolled back 3 nodes in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const error = r.json().error;
    assert.equal(error?.code, 'CBR_ERR_CLUSTER_RESTORE_FAILED');
    assert.match(error?.message ?? '', /failed at startOthers: crfail-3 \(part crn-\d+-3\): CBR_ERR_INTERNAL: failure injected/);
    assert.match(error?.message ?? '', /every target node rolled back/);

    // The first node had started twice (maintenance, then in the new cluster) before the failure; the third only once.
    const starts = profiles.map((p) => readFileSync(join(instanceDirOf(p), 'logs', 'system.log'), 'utf8').match(/Startup complete/g)?.length ?? 0);
    assert.equal(starts[0], 2, 'node 1 started in the new cluster');
    assert.equal(starts[2], 1, 'node 3 failed before its second start');
    for (const [i, p] of profiles.entries()) {
      assert.equal(runningPid(instanceDirOf(p)), null, `${p.name} is not running`);
      assert.deepEqual(nodeFiles(p), before[i]!.files, `${p.name}: its directories as before`);
      assert.equal(readFileSync(p.cassandraYaml, 'utf8'), before[i]!.yaml, `${p.name}: its cassandra.yaml as before`);
      assert.equal(readFileSync(p.cql.credentialsFile, 'utf8'), before[i]!.creds, `${p.name}: its credentials as before`);
    }
    const status: ClusterStatus = await clusterStatus('crfail', { env: testEnv });
    assert.ok(status.nodes.every((n) => !n.running));
    await removeCluster('crfail', testEnv);
  });
  it('SIGKILL of cbr create once the first node runs in the new cluster: cbr resume rolls every node back from the journal', async () => {
    await createCluster('crkill', 3, { env: testEnv });
    const paths = [1, 2, 3].map((i) => profilePath(`crkill-${i}`, testEnv));
    const profiles = await Promise.all(paths.map((p) => loadProfile(p)));
    const before = profiles.map((p) => ({ files: nodeFiles(p), yaml: readFileSync(p.cassandraYaml, 'utf8') }));
    const child = spawn(
      join(REPO, 'node_modules', '.bin', 'node'),
      [join(REPO, 'bin', 'cbr.js'), 'create', 'crkill', '--backup', ID, '--profiles', paths.join(','), '--json'],
      { env, stdio: 'ignore' },
    );
    const exited = new Promise((r) => child.once('exit', r));
    // startOthers is journalled once the seed (node 1) runs in the new cluster, its peers swapped and configured.
    let phase = '';
    for (let i = 0; i < 600 && phase !== 'startOthers'; i++) {
      await sleep(500);
      phase = listJournals(testEnv).find((j) => j.nodes.some((n) => n.profilePath === paths[0]))?.phase ?? '';
      assert.ok(child.exitCode === null, `cbr create ended (${child.exitCode}) before the kill`);
    }
    assert.equal(phase, 'startOthers');
    child.kill('SIGKILL');
    await exited;
    const [journal] = listJournals(testEnv);
    assert.ok(
      journal?.nodes.every((n) => n.touched),
      'the journal calls every node swapped',
    );
    assert.notEqual(runningPid(instanceDirOf(profiles[0]!)), null, 'node 1 runs in the new cluster after the kill');
    assert.match(readFileSync(profiles[0]!.cassandraYaml, 'utf8'), /initial_token/);
    assert.ok(
      readdirSync(dirname(profiles[0]!.dataDirs[0]!)).some((n) => n.includes('.cbr-old-')),
      'the replaced data lies aside',
    );

    const r = await cbr(['resume', '--json'], env);
    assert.equal(r.code, 0, r.err + r.out);
    const outcomes = JSON.parse(r.out) as { kind: string; from: string; state: string }[];
    assert.deepEqual(
      outcomes.filter((o) => o.kind === 'cluster-restore').map((o) => [o.from, o.state]),
      [['startOthers', 'rolled back']],
    );
    for (const [i, p] of profiles.entries()) {
      assert.equal(runningPid(instanceDirOf(p)), null, `${p.name} is not running`);
      assert.deepEqual(nodeFiles(p), before[i]!.files, `${p.name}: its directories as before, no .cbr-old-* left`);
      assert.equal(readFileSync(p.cassandraYaml, 'utf8'), before[i]!.yaml, `${p.name}: its cassandra.yaml as before`);
    }
    assert.deepEqual(listJournals(testEnv), [], 'the journal is gone');
    assert.deepEqual(readdirSync(journalDir(testEnv)), []);
    await removeCluster('crkill', testEnv);
  });
});
