import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CqlSession, Row } from '../../../src/cassandra/cql.ts';
import { CbrError } from '../../../src/core/errors.ts';
import { DrillLog } from '../../../src/state/drillLog.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { describeFailures, drillChecks, firstValue, pairChecks, recordTables } from '../../../src/workflows/drill.ts';

/** What a drill checks on the restored node, against a scripted CQL session (the real node: test/integration/restore/drill.test.ts). */

const ID = '0123456789abcdef0123456789abcdef';
const record = {
  keyspaces: ['shop'],
  files: [
    { path: `shop/orders-${ID}/nb-1-big-Data.db`, size: 1 },
    { path: `shop/orders-${ID}/.by_day/nb-1-big-Data.db`, size: 1 },
    { path: `shop/customers-${ID}/nb-1-big-Data.db`, size: 1 },
    { path: `system/local-${ID}/nb-1-big-Data.db`, size: 1 },
  ],
  tables: [
    { keyspace: 'shop', table: 'orders', rows: 12 },
    { keyspace: 'shop', table: 'customers', rows: null, note: 'not counted: written to while it was counted' },
  ],
};

function session(answers: [RegExp, Row[] | (() => never)][]): CqlSession & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async execute(q) {
      asked.push(q);
      for (const [re, rows] of answers) if (re.test(q)) return typeof rows === 'function' ? rows() : rows;
      throw new CbrError('CBR_ERR_CQL_FAILED', `unknown ${q}`);
    },
    async close() {},
  };
}

const schema: [RegExp, Row[]][] = [
  [/system_schema\.keyspaces/, [{ keyspace_name: 'system' }, { keyspace_name: 'shop' }]],
  [
    /system_schema\.tables/,
    [
      { keyspace_name: 'shop', table_name: 'orders' },
      { keyspace_name: 'shop', table_name: 'customers' },
    ],
  ],
  [/system_schema\.views/, []],
];

describe('drill checks', () => {
  it('the record names its user keyspaces and tables (index subdirectories and system keyspaces left out)', () => {
    assert.deepEqual(recordTables(record), { keyspaces: ['shop'], tables: ['shop.customers', 'shop.orders'] });
    assert.deepEqual(recordTables({ ...record, tables: undefined }).tables, ['shop.customers', 'shop.orders'], 'older records: from the file list');
  });

  it('passes when every keyspace and table is there, the recorded counts match and each --check answers its --expect', async () => {
    const cql = session([...schema, [/count\(\*\) FROM "shop"\."orders"/, [{ count: 12 }]], [/SELECT v FROM/, [{ v: 'seven' }]]]);
    const checks = await drillChecks(cql, record, [{ cql: 'SELECT v FROM shop.orders WHERE id = 7', expect: 'seven' }]);
    assert.deepEqual(
      checks.map((c) => [c.kind, c.name, c.ok, c.actual]),
      [
        ['keyspace', 'shop', true, 'present'],
        ['table', 'shop.customers', true, 'present'],
        ['table', 'shop.orders', true, 'present'],
        ['rows', 'shop.orders', true, '12'],
        ['query', 'SELECT v FROM shop.orders WHERE id = 7', true, 'seven'],
      ],
    );
    assert.ok(!cql.asked.some((q) => q.includes('"customers"')), 'a table recorded without a count is not counted');
  });

  it('fails on a missing table, another row count, a wrong answer or a failing query, and says which', async () => {
    const cql = session([
      [/system_schema\.keyspaces/, [{ keyspace_name: 'shop' }]],
      [/system_schema\.tables/, [{ keyspace_name: 'shop', table_name: 'orders' }]],
      [/system_schema\.views/, []],
      [/count\(\*\)/, [{ count: 11 }]],
      [
        /FROM nowhere/,
        () => {
          throw new CbrError('CBR_ERR_CQL_FAILED', 'no such table');
        },
      ],
    ]);
    const checks = await drillChecks(cql, record, [
      { cql: 'SELECT count(*) FROM shop.orders', expect: '13' },
      { cql: 'SELECT x FROM nowhere', expect: '1' },
    ]);
    assert.deepEqual(
      checks.filter((c) => !c.ok).map((c) => [c.kind, c.name, c.expected, c.actual]),
      [
        ['table', 'shop.customers', 'present', 'missing'],
        ['rows', 'shop.orders', '12', '11'],
        ['query', 'SELECT count(*) FROM shop.orders', '13', '11'],
        ['query', 'SELECT x FROM nowhere', '1', 'error: no such table'],
      ],
    );
    assert.match(describeFailures(checks), /^4 of 6 checks failed: table shop.customers: expected present, got missing; rows shop.orders: expected 12, got 11/);
  });

  it('a table with a default TTL passes with fewer rows than recorded (they expire), never with more', async () => {
    const ttlRecord = { ...record, tables: [{ keyspace: 'shop', table: 'orders', rows: 12, defaultTtl: 3600 }] };
    const checksFor = async (count: number) =>
      (await drillChecks(session([...schema, [/count\(\*\) FROM "shop"\."orders"/, [{ count }]]]), ttlRecord, [])).filter((c) => c.kind === 'rows');
    assert.deepEqual(
      (await checksFor(7)).map((c) => [c.ok, c.expected, c.actual]),
      [[true, 'at most 12 (default TTL 3600 s)', '7']],
    );
    assert.deepEqual(
      (await checksFor(12)).map((c) => c.ok),
      [true],
    );
    assert.deepEqual(
      (await checksFor(13)).map((c) => [c.ok, c.actual]),
      [[false, '13']],
    );
  });

  it('--check and --expect pair up in order; a check without its expectation, or not a SELECT, is refused', () => {
    assert.deepEqual(pairChecks(['SELECT 1 FROM a', 'select b FROM c'], ['1', 'x']), [
      { cql: 'SELECT 1 FROM a', expect: '1' },
      { cql: 'select b FROM c', expect: 'x' },
    ]);
    assert.throws(
      () => pairChecks(['SELECT 1 FROM a'], []),
      (e: CbrError) => e.code === 'CBR_ERR_INVALID_ARGUMENT',
    );
    assert.throws(
      () => pairChecks(['DROP KEYSPACE shop'], ['x']),
      (e: CbrError) => e.code === 'CBR_ERR_INVALID_ARGUMENT',
    );
  });

  it('a first value reads as text: longs as digits, null, no rows, blobs as hex', () => {
    assert.equal(firstValue([{ count: { toString: () => '260' } }]), '260');
    assert.equal(firstValue([{ v: null }]), 'null');
    assert.equal(firstValue([]), '(no rows)');
    assert.equal(firstValue([{ b: Buffer.from([1, 255]) }]), '0x01ff');
    assert.equal(firstValue([{ n: 3, m: 4 }]), '3');
    assert.equal(firstValue([{ ok: true }]), 'true');
  });
});

describe('drill log', () => {
  it('keeps every drill; --last gives the newest drill and the newest pass of each host', () => {
    const db = new StateDb(':memory:');
    const log = new DrillLog(db.db);
    const drill = (id: string, host: string, ok: boolean, at: string) => ({
      id,
      backupId: `b-${id}`,
      host,
      ok,
      startedAt: at,
      finishedAt: at,
      seconds: { total: 1 },
    });
    assert.deepEqual(log.last(), []);
    log.record(drill('1', 'h1', true, '2026-11-30T10:00:00.000Z'));
    log.record(drill('2', 'h1', false, '2026-11-30T11:00:00.000Z'));
    log.record(drill('3', 'h2', false, '2026-11-30T09:00:00.000Z'));
    const rows = log.last();
    assert.deepEqual(
      rows.map((r) => [r.host, r.last.id, r.lastOk?.id ?? null]),
      [
        ['h1', '2', '1'],
        ['h2', '3', null],
      ],
    );
    assert.deepEqual(
      log.last('h1').map((r) => r.lastOk?.backupId),
      ['b-1'],
    );
    db.close();
  });
});
