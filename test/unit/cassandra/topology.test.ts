import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CqlSession, Row } from '../../../src/cassandra/cql.ts';
import { readSchema, readTopology } from '../../../src/cassandra/topology.ts';

/** A session answering system.local, system.peers_v2 and DESCRIBE SCHEMA as a 5.0 node does (inet as objects). */
function session(local: Row, peers: Row[], schema: Row[] = []): CqlSession {
  return {
    async execute(query) {
      if (query.includes('system.local')) return [local];
      if (query.includes('system.peers_v2')) return peers;
      if (query === 'DESCRIBE SCHEMA') return schema;
      throw new Error(`unexpected ${query}`);
    },
    async close() {},
  };
}
const inet = (a: string) => ({ toString: () => a });

describe('ring topology', () => {
  it('lists itself and its peers sorted by address, tokens sorted as numbers', async () => {
    const t = await readTopology(
      session(
        {
          cluster_name: 'ring',
          partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
          host_id: 'h2',
          broadcast_address: inet('127.0.0.2'),
          rpc_address: inet('127.0.0.2'),
          rpc_port: 9042,
          data_center: 'dc1',
          rack: 'r1',
          tokens: new Set(['10', '-5', '3']),
        },
        [
          { peer: inet('127.0.0.10'), host_id: 'h10', native_address: inet('127.0.0.10'), native_port: 9042, data_center: 'dc1', rack: 'r2', tokens: ['7'] },
          {
            peer: inet('127.0.0.1'),
            host_id: 'h1',
            native_address: inet('127.0.0.1'),
            native_port: null,
            data_center: 'dc1',
            rack: 'r1',
            tokens: ['-9223372036854775808'],
          },
        ],
      ),
    );
    assert.equal(t.clusterName, 'ring');
    assert.equal(t.seenFrom, 'h2');
    assert.deepEqual(
      t.hosts.map((h) => [h.address, h.hostId, h.rack, h.nativePort, h.tokens]),
      [
        ['127.0.0.1', 'h1', 'r1', null, ['-9223372036854775808']],
        ['127.0.0.2', 'h2', 'r1', 9042, ['-5', '3', '10']],
        ['127.0.0.10', 'h10', 'r2', 9042, ['7']],
      ],
    );
  });

  it('joins the CREATE statements of DESCRIBE SCHEMA', async () => {
    const s = await readSchema(session({}, [], [{ create_statement: 'CREATE KEYSPACE a;' }, { create_statement: 'CREATE TABLE a.t (k int PRIMARY KEY);' }]));
    assert.equal(s, 'CREATE KEYSPACE a;\n\nCREATE TABLE a.t (k int PRIMARY KEY);');
  });
});
