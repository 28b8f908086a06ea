import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import cassandra from 'cassandra-driver';
import { connectCql } from '../../../src/cassandra/cql.ts';
import { loadCredentials } from '../../../src/cassandra/profile.ts';
import { readSchema, readTopology } from '../../../src/cassandra/topology.ts';
import { type ClusterStatus, clusterProfiles } from '../../../src/sandbox/cluster.ts';
import { cbr } from '../../helpers/cli.ts';
import { SHARED_CLUSTER, testEnv } from '../../helpers/env.ts';

/**
 * The real 3-node cluster every cluster test shares (sharedCluster in test/helpers/env.ts): started here through the
 * CLI, or found running when another file started it first (start is idempotent); removed by the global teardown.
 */
const NAME = SHARED_CLUSTER;

describe('sandbox cluster of 3 real nodes', () => {
  let started: ClusterStatus & { startSeconds: number };

  before(async () => {
    const r = await cbr(['sandbox', 'start', NAME, '--nodes', '3', '--json']);
    assert.equal(r.code, 0, r.err);
    started = r.json() as unknown as ClusterStatus & { startSeconds: number };
    console.log(`# 3-node cluster started in ${started.startSeconds.toFixed(1)} s`);
  });

  it('forms one ring: 3 nodes UN on 127.0.0.1-3 with the same ports, their own JMX ports, 16 tokens each', async () => {
    assert.equal(started.running, true);
    assert.equal(started.clusterName, NAME);
    assert.match(started.releaseVersion ?? '', /^5\.0\./);
    assert.deepEqual(
      started.nodes.map((n) => [n.name, n.address, n.state, n.tokens, n.peers, n.datacenter]),
      [1, 2, 3].map((i) => [`${NAME}-${i}`, `127.0.0.${i}`, 'UN', 16, 2, 'datacenter1']),
    );
    assert.equal(new Set(started.nodes.map((n) => n.cqlPort)).size, 1, 'one CQL port for all');
    assert.equal(new Set(started.nodes.map((n) => n.jmxPort)).size, 3, 'a JMX port each');
    assert.equal(new Set(started.nodes.map((n) => n.hostId)).size, 3, 'three host ids');

    const text = await cbr(['sandbox', 'status', NAME]);
    assert.equal(text.code, 0, text.err);
    for (const n of started.nodes)
      assert.match(text.out, new RegExp(`UN\\s+${n.address.replaceAll('.', '\\.')}:${n.cqlPort}\\s+${n.hostId}\\s+16\\s+datacenter1/rack1`));

    const again = await cbr(['sandbox', 'start', NAME, '--json']);
    assert.equal(again.code, 0, again.err);
    assert.deepEqual(
      (again.json() as unknown as ClusterStatus).nodes.map((n) => n.pid),
      started.nodes.map((n) => n.pid),
      'start is idempotent',
    );
    const reshape = await cbr(['sandbox', 'start', NAME, '--nodes', '2']);
    assert.equal(reshape.code, 4);
    assert.match(reshape.err, /CBR_ERR_SANDBOX_EXISTS/);
  });

  it('keeps rows at replication factor 3: written and read at consistency ALL', async () => {
    const profiles = await clusterProfiles(NAME, testEnv);
    const first = profiles[0];
    assert.ok(first);
    const creds = await loadCredentials(first.cql.credentialsFile);
    const client = new cassandra.Client({
      contactPoints: profiles.map((p) => p.cql.host),
      localDataCenter: 'datacenter1',
      protocolOptions: { port: first.cql.port },
      authProvider: new cassandra.auth.PlainTextAuthProvider(creds.username, creds.password),
    });
    await client.connect();
    try {
      assert.equal(client.hosts.length, 3, 'the driver sees every node');
      const ALL = { consistency: cassandra.types.consistencies.all, prepare: true };
      await client.execute("CREATE KEYSPACE IF NOT EXISTS ring3 WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 3}");
      await client.execute('CREATE TABLE IF NOT EXISTS ring3.kv (k int PRIMARY KEY, v text)');
      for (let k = 0; k < 200; k++) await client.execute('INSERT INTO ring3.kv (k, v) VALUES (?, ?)', [k, `value-${k}`], ALL);
      const rows = (await client.execute('SELECT k, v FROM ring3.kv', [], { ...ALL, fetchSize: 1000 })).rows;
      assert.equal(rows.length, 200);
      for (const r of rows) assert.equal(r['v'], `value-${r['k']}`);
      const one = await client.execute('SELECT v FROM ring3.kv WHERE k = ?', [7], ALL);
      assert.equal(one.rows[0]?.['v'], 'value-7');
    } finally {
      await client.shutdown();
    }
  });

  it('every node tells the same ring: host ids, datacenter, rack, 16 distinct tokens each; and the schema', async () => {
    const views = [];
    for (const p of await clusterProfiles(NAME, testEnv)) {
      const cql = await connectCql({ ...p.cql, credentials: await loadCredentials(p.cql.credentialsFile) });
      try {
        views.push({ topology: await readTopology(cql), schema: await readSchema(cql) });
      } finally {
        await cql.close();
      }
    }
    const [first] = views;
    assert.ok(first);
    assert.equal(first.topology.clusterName, NAME);
    assert.equal(first.topology.partitioner, 'org.apache.cassandra.dht.Murmur3Partitioner');
    assert.deepEqual(
      first.topology.hosts.map((h) => [h.address, h.hostId, h.datacenter, h.rack, h.tokens.length, h.nativeAddress, h.nativePort]),
      started.nodes.map((n) => [n.address, n.hostId, 'datacenter1', 'rack1', 16, n.address, n.cqlPort]),
    );
    assert.equal(new Set(first.topology.hosts.flatMap((h) => h.tokens)).size, 48, 'no token owned twice');
    assert.deepEqual(
      views.map((v) => v.topology.seenFrom),
      started.nodes.map((n) => n.hostId),
    );
    for (const v of views.slice(1)) assert.deepEqual(v.topology.hosts, first.topology.hosts, 'every node sees the same ring');
    assert.match(
      first.schema,
      /CREATE KEYSPACE ring3 WITH replication = \{'class': '(org\.apache\.cassandra\.locator\.)?NetworkTopologyStrategy', 'datacenter1': '3'\}/,
    );
    assert.match(first.schema, /CREATE TABLE ring3\.kv/);
    assert.doesNotMatch(first.schema, /CREATE KEYSPACE system_schema/);
  });

  // Other files share this cluster (sharedCluster in test/helpers/env.ts; the global teardown removes it): the last
  // case stops it and starts it again, as an operator's restart of the machine would.
  it('stops the whole cluster and starts it again from its saved state: same host ids and tokens, rows still there', async () => {
    const stop = await cbr(['sandbox', 'stop', NAME]);
    assert.equal(stop.code, 0, stop.err);
    const stopped = await cbr(['sandbox', 'status', NAME, '--json']);
    assert.equal(stopped.code, 1);
    assert.deepEqual(
      (stopped.json() as unknown as ClusterStatus).nodes.map((n) => [n.running, n.state]),
      [
        [false, 'DN'],
        [false, 'DN'],
        [false, 'DN'],
      ],
    );
    const again = await cbr(['sandbox', 'start', NAME, '--json']);
    assert.equal(again.code, 0, again.err);
    const restarted = again.json() as unknown as ClusterStatus;
    assert.deepEqual(
      restarted.nodes.map((n) => [n.name, n.state, n.hostId, n.tokens, n.peers]),
      started.nodes.map((n) => [n.name, 'UN', n.hostId, 16, 2]),
    );
    const profiles = await clusterProfiles(NAME, testEnv);
    const cql = await connectCql({ ...profiles[2]!.cql, credentials: await loadCredentials(profiles[2]!.cql.credentialsFile) });
    try {
      assert.equal((await cql.execute('SELECT count(*) AS n FROM ring3.kv'))[0]?.['n']?.toString(), '200');
    } finally {
      await cql.close();
    }
  });
});
