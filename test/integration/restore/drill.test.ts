import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { createSandbox, listSandboxes, profilePath } from '../../../src/sandbox/sandbox.ts';
import type { DrillResult } from '../../../src/workflows/drill.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor } from '../../helpers/data.ts';
import { scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { swiftEnv, swiftUp } from '../../helpers/swift.ts';

/**
 * `cbr drill` on real nodes and stores: a full and an incremental backup of a real sandbox node drill green with
 * their recorded row counts compared exactly, a --check with a wrong --expect fails with CBR_ERR_DRILL_FAILED, a
 * drill reads from a real Swift, the sandbox is gone after every drill, a dead drill's sandbox is removed by the
 * next one, and `drill --last` answers when a restore of the node last succeeded.
 */

const KS = `drill${process.pid}`;

describe('restore drills on real nodes', () => {
  let source: Profile;
  let cql: CqlSession;
  let env: NodeJS.ProcessEnv;
  let swift: NodeJS.ProcessEnv;

  before(async () => {
    source = await sharedNode('source');
    cql = await cqlFor(source);
    await cql.execute(`CREATE KEYSPACE IF NOT EXISTS ${KS} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
    await cql.execute(`CREATE TABLE IF NOT EXISTS ${KS}.t (id int PRIMARY KEY, v text)`);
    await cql.execute(`CREATE TABLE IF NOT EXISTS ${KS}."Mixed" (k int, c int, v text, PRIMARY KEY (k, c))`);
    for (let i = 0; i < 250; i++) await cql.execute(`INSERT INTO ${KS}.t (id, v) VALUES (?, ?)`, [i, `v${i}`]);
    for (let i = 0; i < 40; i++) await cql.execute(`INSERT INTO ${KS}."Mixed" (k, c, v) VALUES (?, ?, ?)`, [i % 4, i, 'x']);
    env = { ...testEnv, CBR_STORAGE_ROOT: scratchDir('drill-storage'), CBR_STATE_DB: join(scratchDir('drill-state'), 'state.db') };
    swift = swiftEnv(env, swiftUp(), `cbr-drill-${process.pid}`);
  });

  after(async () => {
    await cql?.execute(`DROP KEYSPACE IF EXISTS ${KS}`).catch(() => {});
    await cql?.close();
  });

  async function backup(e: NodeJS.ProcessEnv, extra: string[] = []): Promise<string> {
    const res = await cbr(['backup-create', 'drilled', '--config', profilePath('source', testEnv), '--json', ...extra], e);
    assert.equal(res.code, 0, res.err);
    return String(res.json()['id']);
  }

  async function drill(id: string, e: NodeJS.ProcessEnv, extra: string[] = []): Promise<{ code: number; result: DrillResult; err: string }> {
    const res = await cbr(['drill', id, '--json', ...extra], e);
    const result = res.json() as unknown as DrillResult;
    assert.equal(result.sandboxRemoved, true);
    assert.ok(!(await listSandboxes(testEnv)).includes(result.sandbox), 'the drill sandbox is gone');
    return { code: res.code, result, err: res.err };
  }

  // The row checks of this file's keyspace: the shared node also holds other test files' keyspaces (drilled too).
  const rowsChecks = (r: DrillResult) =>
    Object.fromEntries(r.checks.filter((c) => c.kind === 'rows' && c.name.startsWith(`${KS}.`)).map((c) => [c.name, [c.expected, c.actual, c.ok]]));

  it('a full backup records exact row counts, and its drill restores, finds every keyspace and table and the same rows', async () => {
    const id = await backup(env);
    const { code, result, err } = await drill(id, env, ['--check', `SELECT v FROM ${KS}.t WHERE id = 7`, '--expect', 'v7']);
    assert.equal(code, 0, err);
    assert.equal(result.ok, true);
    assert.equal(result.rowCountsRecorded, true);
    assert.deepEqual(rowsChecks(result), { [`${KS}.Mixed`]: ['40', '40', true], [`${KS}.t`]: ['250', '250', true] });
    assert.ok(result.checks.some((c) => c.kind === 'keyspace' && c.name === KS && c.ok));
    assert.ok(result.checks.some((c) => c.kind === 'query' && c.ok && c.actual === 'v7'));
    assert.equal(result.host, source.hostId);
    assert.ok(result.seconds.restore > 0 && result.seconds.cleanup > 0);
  });

  it('an incremental backup drills green too, with the rows added since', async () => {
    for (let i = 250; i < 260; i++) await cql.execute(`INSERT INTO ${KS}.t (id, v) VALUES (?, ?)`, [i, `v${i}`]);
    const id = await backup(env, ['--incremental']);
    const { code, result, err } = await drill(id, env);
    assert.equal(code, 0, err);
    assert.deepEqual(rowsChecks(result)[`${KS}.t`], ['260', '260', true]);
  });

  it('a wrong --expect fails the drill with CBR_ERR_DRILL_FAILED; a dead drill sandbox is removed first; --last keeps the last pass', async () => {
    // A sandbox a drill killed with -9 would leave (its pid is not alive).
    await createSandbox('drill-999999-deadbeef', { env: testEnv });
    const id = await backup(env);
    const { code, result, err } = await drill(id, env, ['--check', `SELECT count(*) FROM ${KS}.t`, '--expect', '9999']);
    assert.equal(code, 16, err);
    assert.match(err, /CBR_ERR_DRILL_FAILED/);
    assert.equal(result.ok, false);
    assert.equal(result.error?.code, 'CBR_ERR_DRILL_FAILED');
    const failed = result.checks.filter((c) => !c.ok);
    assert.deepEqual(
      failed.map((c) => [c.kind, c.expected, c.actual]),
      [['query', '9999', '260']],
    );
    assert.ok(!(await listSandboxes(testEnv)).includes('drill-999999-deadbeef'), 'the dead drill sandbox was removed');

    const last = await cbr(['drill', '--last', '--host', source.hostId, '--json'], env);
    assert.equal(last.code, 0, last.err);
    const [row] = last.json()['drills'] as { host: string; last: DrillResult; lastOk: DrillResult | null }[];
    assert.equal(row?.last.ok, false);
    assert.equal(row?.last.backupId, id);
    assert.equal(row?.lastOk?.ok, true);
  });

  it('drills a backup kept in Swift', async () => {
    const id = await backup(swift);
    const { code, result, err } = await drill(id, swift);
    assert.equal(code, 0, err);
    assert.deepEqual(rowsChecks(result)[`${KS}.t`], ['260', '260', true]);
  });
});
