import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import { freeLoopbackPorts } from '../../../src/cassandra/ports.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { latestBackupId, readRecord } from '../../../src/catalog/catalog.ts';
import { removeStaleDrillSandboxes } from '../../../src/cli/drillSandboxes.ts';
import { createSandbox, listSandboxes, profilePath } from '../../../src/sandbox/sandbox.ts';
import { DrillLog } from '../../../src/state/drillLog.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { openStore } from '../../../src/storage/open.ts';
import type { DrillResult } from '../../../src/workflows/drill.ts';
import { BUS_URL, removeBusTopology, spawnAgent, stopGracefully, waitForAgentQueue } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor } from '../../helpers/data.ts';
import { scratchDir, sharedNode, TEST_HOME, testEnv } from '../../helpers/env.ts';
import { swiftEnv, swiftUp } from '../../helpers/swift.ts';

/**
 * `cbr drill` on real nodes and stores: a full and an incremental backup of a real sandbox node drill green with
 * their recorded row counts compared exactly, a --check with a wrong --expect fails with CBR_ERR_DRILL_FAILED, a
 * drill reads from a real Swift, the sandbox is gone after every drill, a dead drill's sandbox is removed by the
 * next one, and `drill --last` answers when a restore of the node last succeeded. The agent's schedule drills too
 * (`backup.drill`, a real agent process and RabbitMQ): the outcome lands in its drill log and its metrics.
 */

const prefix = `drl${process.pid}.`;
const AGENT_HOST = 'drill-agent';

const freePort = async (): Promise<number> => (await freeLoopbackPorts(1))[0]!;

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
    // Rows that expire 30 s after they are written: gone, or going, by the time a drill counts them.
    await cql.execute(`CREATE TABLE IF NOT EXISTS ${KS}.expiring (id int PRIMARY KEY, v text) WITH default_time_to_live = 30`);
    for (let i = 0; i < 20; i++) await cql.execute(`INSERT INTO ${KS}.expiring (id, v) VALUES (?, ?)`, [i, 'x']);
    env = { ...testEnv, CBR_STORAGE_ROOT: scratchDir('drill-storage'), CBR_STATE_DB: join(scratchDir('drill-state'), 'state.db') };
    swift = swiftEnv(env, swiftUp(), `cbr-drill-${process.pid}`);
  });

  after(async () => {
    await removeBusTopology(prefix, [AGENT_HOST]).catch(() => {});
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
    const { [`${KS}.expiring`]: expiring, ...exact } = rowsChecks(result);
    assert.deepEqual(exact, { [`${KS}.Mixed`]: ['40', '40', true], [`${KS}.t`]: ['250', '250', true] });
    // A table with a default TTL: recorded with it, and compared with <= (its rows expire between backup and drill).
    const recorded = (await readRecord(openStore({ driver: 'local', root: String(env['CBR_STORAGE_ROOT']), container: 'database_backups' }), id)).tables?.find(
      (t) => t.table === 'expiring' && t.keyspace === KS,
    );
    assert.equal(recorded?.defaultTtl, 30);
    assert.deepEqual(expiring && [expiring[0], expiring[2]], [`at most ${recorded?.rows} (default TTL 30 s)`, true]);
    assert.ok(Number(expiring?.[1]) <= Number(recorded?.rows));
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

  it("the agent's schedule drills the newest backup over backup.drill: kept in its drill log and metrics, no overlap", async () => {
    const stateDb = join(scratchDir('drill-agent-state'), 'state.db');
    const agentEnv = { ...env, CBR_STATE_DB: stateDb };
    const latest = await latestBackupId(openStore({ driver: 'local', root: String(env['CBR_STORAGE_ROOT']), container: 'database_backups' }), source.hostId);
    const schedule = join(scratchDir('drill-agent'), 'schedule.yaml');
    // Every 5 s: a drill lasts longer, so the instants during it are skipped (a drill is active while it runs).
    writeFileSync(
      schedule,
      `jobs:\n  - name: drill\n    cron: "*/5 * * * * *"\n    command: { type: backup.drill, payload: { latest: true, host: "${source.hostId}" } }\n`,
    );
    const port = await freePort();
    const agent = spawnAgent({
      host: AGENT_HOST,
      profilePath: profilePath('source', testEnv),
      env: agentEnv,
      prefix,
      args: ['--schedule', schedule, '--metrics-listen', `127.0.0.1:${port}`],
    });
    let row: { last: DrillResult } | undefined;
    let metrics = '';
    try {
      await waitForAgentQueue(prefix, AGENT_HOST);
      const deadline = Date.now() + 240_000;
      while (!row) {
        assert.ok(Date.now() < deadline, 'timed out waiting for the scheduled drill');
        await sleep(250);
        try {
          const db = new StateDb(stateDb, { readOnly: true });
          try {
            row = new DrillLog(db.db).last(source.hostId)[0] as { last: DrillResult } | undefined;
          } finally {
            db.close();
          }
        } catch {
          /* no drills table yet */
        }
      }
      metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      // `cbr drill --bus` reaches the same agent: a backup it cannot find ends with that code, no sandbox made.
      const missing = await cbr(['drill', 'no-such-backup', '--bus', BUS_URL, '--host', AGENT_HOST, '--prefix', prefix, '--json'], agentEnv);
      assert.equal(missing.code, 9, missing.err);
      assert.match(missing.err, /CBR_ERR_BACKUP_NOT_FOUND/);
    } finally {
      assert.equal(await stopGracefully(agent), 0);
      // A second drill the stop cut short leaves its sandbox: the next drill (here, now) removes it.
      await removeStaleDrillSandboxes(agentEnv);
    }
    const result = row.last;
    assert.equal(result.ok, true, JSON.stringify(result.error));
    assert.equal(result.backupId, latest);
    assert.equal(result.sandboxRemoved, true);
    const counts = rowsChecks(result);
    assert.equal(counts[`${KS}.t`]?.[2], true, JSON.stringify(counts));
    const drillLines = metrics.split('\n').filter((l) => l.includes('kind="drill"'));
    const last = drillLines.find((l) => l.startsWith('cbr_last_success_timestamp_seconds{') && l.includes(`host="${source.hostId}"`));
    assert.ok(last, `no last drill success in the metrics:\n${drillLines.join('\n')}`);
    assert.ok(Math.abs(Number(last.split(' ').at(-1)) - Date.parse(result.finishedAt) / 1000) < 5, last);
    assert.ok(
      drillLines.some((l) => /^cbr_workflows_total\{.*outcome="completed".*\} 1$/.test(l)),
      drillLines.join('\n'),
    );
    const scratch = join(TEST_HOME, 'scratch');
    const log = readdirSync(scratch)
      .filter((d) => d.startsWith(`agent-logs-${process.pid}-`))
      .map((d) => join(scratch, d, `${AGENT_HOST}.log`))
      .filter((f) => existsSync(f))
      .map((f) => readFileSync(f, 'utf8'))
      .join('\n');
    const skipped = log.split('\n').filter((l) => l.includes('"msg":"scheduled run skipped"'));
    assert.ok(skipped.length > 0, 'instants during the drill were skipped');
    assert.match(skipped[0]!, /"reason":"the previous run drill-\d{8}T\d{6}Z is still active/);
  });

  it('drills a backup kept in Swift', async () => {
    const id = await backup(swift);
    const { code, result, err } = await drill(id, swift);
    assert.equal(code, 0, err);
    assert.deepEqual(rowsChecks(result)[`${KS}.t`], ['260', '260', true]);
  });
});
