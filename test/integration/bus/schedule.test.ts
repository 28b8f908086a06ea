import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { watchEvents } from '../../../src/bus/client.ts';
import { commandIdFor } from '../../../src/bus/schedule/plan.ts';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import { freeLoopbackPorts } from '../../../src/cassandra/ports.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { listRecords } from '../../../src/catalog/catalog.ts';
import { PRUNE_PREFIX } from '../../../src/catalog/prune.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { StateDb, type WorkflowRow } from '../../../src/state/stateDb.ts';
import { openStore } from '../../../src/storage/open.ts';
import { backupTargets } from '../../helpers/backupTargets.ts';
import { BUS_URL, killHard, removeBusTopology, spawnAgent, stopGracefully, waitForAgentQueue } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, seedData } from '../../helpers/data.ts';
import { scratchDir, sharedNode, TEST_HOME, testEnv } from '../../helpers/env.ts';

/**
 * Schedules in a real agent (its own process, so it can be killed -9), against the real RabbitMQ, a real sandbox
 * node and local storage (the catch-up also on the Swift all-in-one), with seconds-resolution cron expressions to
 * keep it short.
 */
const prefix = `sch${process.pid}.`;
const targets = backupTargets('schedule');
const HOSTS = ['sched-overlap', 'sched-verify', 'sched-prune', ...targets.map((_, n) => `sched-catch-${n}`)];

/** The scheduled workflows of a job, oldest first, with the instant each was for (from its id). */
function runsOf(dbPath: string, job: string): (WorkflowRow & { instant: number })[] {
  const db = new StateDb(dbPath, { readOnly: true });
  try {
    const re = new RegExp(`^${job}-(\\d{4})(\\d\\d)(\\d\\d)T(\\d\\d)(\\d\\d)(\\d\\d)Z$`);
    return db
      .list()
      .flatMap((w) => {
        const m = re.exec(w.id);
        return m ? [{ ...w, instant: Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`) }] : [];
      })
      .sort((a, b) => a.instant - b.instant);
  } finally {
    db.close();
  }
}

async function until<T>(what: string, probe: () => T | undefined | null | false, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = probe();
      if (v) return v;
    } catch {
      /* the agent may not have created the database yet */
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

/** The JSON log lines of this test's agents of a host (spawnAgent logs to `<scratch>/agent-logs-<pid>-<ms>/<host>.log`). */
function logLines(host: string): Record<string, unknown>[] {
  const scratch = join(TEST_HOME, 'scratch');
  const dirs = readdirSync(scratch).filter((d) => d.startsWith(`agent-logs-${process.pid}-`));
  const text = dirs
    .map((d) => join(scratch, d, `${host}.log`))
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  return text.split('\n').flatMap((l) => {
    if (!l.startsWith('{')) return [];
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** The events of a host's agent, as they come (a private queue bound before the agent starts). */
async function collectEvents(host: string): Promise<{ events: BusEvent[]; close: () => Promise<void> }> {
  const events: BusEvent[] = [];
  const sub = await watchEvents({ url: BUS_URL, prefix, host, resync: false, onEvent: (e) => events.push(e) });
  return { events, close: sub.close };
}

function writeSchedule(dir: string, job: string, cron: string): string {
  const file = join(dir, `${job}.yaml`);
  writeFileSync(file, `jobs:\n  - name: ${job}\n    cron: "${cron}"\n    command:\n      type: backup.create\n      payload: { name: scheduled-${job} }\n`);
  return file;
}

describe('schedules in the agent', () => {
  let source: Profile;
  let storageRoot: string;
  let dir: string;

  before(async () => {
    source = await sharedNode('source');
    storageRoot = scratchDir('schedule-storage');
    dir = scratchDir('schedule');
    const cql = await cqlFor(source);
    await seedData(cql, `sched${process.pid}`, { rows: 50, blobKiB: 1 });
    await cql.close();
  });

  after(async () => {
    await removeBusTopology(prefix, HOSTS);
  });

  for (const [n, target] of targets.entries()) {
    it(`SIGKILL across scheduled instants: at the next start exactly one catch-up run, for the latest missed instant (${target.name})`, async () => {
      const host = `sched-catch-${n}`;
      const job = `catch${n}`;
      const stateDb = join(dir, `catch-${n}-state.db`);
      const { env: targetEnv, store } = target.setUp();
      const env = { ...targetEnv, CBR_STATE_DB: stateDb };
      const opts = { host, profilePath: profilePath('source', testEnv), env, prefix, args: ['--schedule', writeSchedule(dir, job, '*/10 * * * * *')] };
      const first = spawnAgent(opts);
      let killedAt: number;
      try {
        await waitForAgentQueue(prefix, host);
        await until(
          'a first scheduled backup completed, none running',
          () => {
            const runs = runsOf(stateDb, job);
            return runs.some((w) => w.state === 'completed') && runs.every((w) => w.status === 'done');
          },
          60_000,
        );
      } finally {
        await killHard(first);
        killedAt = Date.now();
      }
      const before = runsOf(stateDb, job);
      assert.ok(
        before.every((w) => w.status === 'done'),
        'no run was in flight at the kill',
      );
      const lastBefore = before.at(-1)!.instant;
      // The last instant taken (run, or skipped while a slow run was active): down until two more have passed.
      const db = new StateDb(stateDb, { readOnly: true });
      const lastTaken = Date.parse(db.scheduleRun(job)?.lastInstant ?? new Date(lastBefore).toISOString());
      db.close();
      await sleep(Math.max(0, lastTaken + 20_000 - killedAt) + 500);
      const second = spawnAgent(opts);
      try {
        const catchUp = await until('the catch-up run in the log', () => logLines(host).find((l) => String(l['msg']).startsWith('catch-up run')), 30_000);
        assert.ok(Number(catchUp['missedInstants']) >= 2, `missed ${catchUp['missedInstants']} instants`);
        const catchUpId = String(catchUp['commandId']);
        const row = await until('the catch-up backup to end', () => runsOf(stateDb, job).find((w) => w.id === catchUpId && w.status === 'done'), 60_000);
        assert.equal(row.state, 'completed');
        assert.equal(catchUpId, commandIdFor(job, new Date(row.instant)));
        // Nothing for the instants missed before it: between the last run before the kill and the catch-up, no run.
        const missed = runsOf(stateDb, job).filter((w) => w.instant > lastBefore && w.instant <= row.instant);
        assert.deepEqual(
          missed.map((w) => w.id),
          [catchUpId],
          'one run for all the missed instants',
        );
        assert.equal(logLines(host).filter((l) => String(l['msg']).startsWith('catch-up run')).length, 1, 'one catch-up in the log');
        const records = await listRecords(store);
        assert.ok(
          records.some((r) => r.id === catchUpId),
          'the catch-up backup is in the catalog',
        );
      } finally {
        assert.equal(await stopGracefully(second), 0);
      }
      // Every run, before and after the restart, was taken once: ids are unique per instant and all ended.
      const all = runsOf(stateDb, job);
      assert.equal(new Set(all.map((w) => w.instant)).size, all.length);
    });
  }

  it("a scheduled backup.verify of the latest backup: its result on the bus names the newest backup, its last success in the agent's metrics", async () => {
    const host = 'sched-verify';
    const root = scratchDir('schedule-verify-storage');
    const env = { ...testEnv, CBR_STORAGE_ROOT: root, CBR_STATE_DB: join(dir, 'verify-state.db'), CBR_HOME: scratchDir('schedule-verify-home') };
    const made: string[] = [];
    for (const strategy of ['full', 'incremental']) {
      const r = await cbr(['backup-create', `sched-verify-${strategy}`, '--config', profilePath('source', testEnv), '--strategy', strategy, '--json'], env);
      assert.equal(r.code, 0, r.err);
      made.push(r.json()['id'] as string);
    }
    const schedule = join(dir, 'verify.yaml');
    writeFileSync(
      schedule,
      `jobs:\n  - name: verify\n    cron: "*/3 * * * * *"\n    command: { type: backup.verify, payload: { latest: true, host: "${source.hostId}", deep: true } }\n`,
    );
    const port = (await freeLoopbackPorts(1))[0]!;
    const watch = await collectEvents(host);
    const agent = spawnAgent({
      host,
      profilePath: profilePath('source', testEnv),
      env,
      prefix,
      args: ['--schedule', schedule, '--metrics-listen', `127.0.0.1:${port}`],
    });
    let metrics = '';
    let result: BusEvent;
    try {
      result = await until('a scheduled verify result', () => watch.events.find((e) => e.type === 'result' && e.kind === 'backup.verify'), 60_000);
      metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    } finally {
      await watch.close();
      assert.equal(await stopGracefully(agent), 0);
    }
    assert.match(result.workflowId, /^verify-\d{8}T\d{6}Z$/);
    assert.equal(result.state, 'completed', JSON.stringify(result.error));
    const report = result.result as { id: string; ok: boolean; deep: boolean; strategy: string; bytesRead: number; problems: unknown[] };
    assert.deepEqual([report.id, report.ok, report.deep, report.strategy, report.problems], [made[1], true, true, 'incremental', []]);
    assert.ok(report.bytesRead > 0, 'the deep verify read the blobs back');
    const verifyLines = metrics.split('\n').filter((l) => l.includes('kind="verify"'));
    const last = verifyLines.find(
      (l) => l.startsWith('cbr_last_success_timestamp_seconds{') && l.includes(`host="${source.hostId}"`) && l.includes('strategy="incremental"'),
    );
    assert.ok(last, `no last verify success in the metrics:\n${verifyLines.join('\n')}`);
    assert.ok(Math.abs(Number(last.split(' ').at(-1)) - Date.parse(result.at) / 1000) < 5, last);
    assert.ok(
      verifyLines.some((l) => /^cbr_workflows_total\{.*outcome="completed".*\} [1-9]\d*$/.test(l)),
      verifyLines.join('\n'),
    );
  });

  it('a scheduled incremental backup.create, then a scheduled backup.prune (keepLast 1): only the newest backup remains, no prune journal left', async () => {
    const host = 'sched-prune';
    const root = scratchDir('schedule-prune-storage');
    const store = openStore({ driver: 'local', root, container: 'database_backups' });
    const stateDb = join(dir, 'prune-state.db');
    const env = { ...testEnv, CBR_STORAGE_ROOT: root, CBR_STATE_DB: stateDb };
    const older: string[] = [];
    for (const strategy of ['full', 'incremental']) {
      const r = await cbr(['backup-create', `sched-prune-${strategy}`, '--config', profilePath('source', testEnv), '--strategy', strategy, '--json'], env);
      assert.equal(r.code, 0, r.err);
      older.push(r.json()['id'] as string);
    }
    // 1. The backup job (every 30 s: stopped once its first run ended, long before the next instant).
    const backupSchedule = join(dir, 'prune-backup.yaml');
    writeFileSync(
      backupSchedule,
      'jobs:\n  - name: ibackup\n    cron: "*/30 * * * * *"\n    command: { type: backup.create, payload: { name: scheduled-incremental, strategy: incremental } }\n',
    );
    const first = spawnAgent({ host, profilePath: profilePath('source', testEnv), env, prefix, args: ['--schedule', backupSchedule] });
    let scheduled: WorkflowRow;
    try {
      scheduled = await until('the scheduled backup to end', () => runsOf(stateDb, 'ibackup').find((w) => w.status === 'done'), 90_000);
    } finally {
      assert.equal(await stopGracefully(first), 0);
    }
    assert.equal(scheduled.state, 'completed');
    const made = (await listRecords(store)).find((r) => r.id === scheduled.id);
    assert.equal(made?.strategy, 'incremental', "the payload's strategy reached the backup");
    assert.ok(
      made.files.some((f) => f.shared),
      'it shares blobs with the incremental backup before it',
    );

    // 2. The prune job.
    const pruneSchedule = join(dir, 'prune.yaml');
    writeFileSync(pruneSchedule, 'jobs:\n  - name: prune\n    cron: "*/3 * * * * *"\n    command: { type: backup.prune, payload: { keepLast: 1 } }\n');
    const watch = await collectEvents(host);
    const second = spawnAgent({ host, profilePath: profilePath('source', testEnv), env, prefix, args: ['--schedule', pruneSchedule] });
    let result: BusEvent;
    try {
      result = await until('a scheduled prune result', () => watch.events.find((e) => e.type === 'result' && e.kind === 'backup.prune'), 60_000);
    } finally {
      await watch.close();
      assert.equal(await stopGracefully(second), 0);
    }
    assert.match(result.workflowId, /^prune-\d{8}T\d{6}Z$/);
    assert.equal(result.state, 'completed', JSON.stringify(result.error));
    const pruned = result.result as { remove: { id: string }[]; keep: { id: string }[]; dryRun: boolean };
    assert.equal(pruned.dryRun, false);
    assert.deepEqual(pruned.remove.map((b) => b.id).sort(), [...older].sort());
    assert.deepEqual(
      pruned.keep.map((b) => b.id),
      [scheduled.id],
    );
    assert.deepEqual(
      (await listRecords(store)).map((r) => r.id),
      [scheduled.id],
      'only the newest backup remains',
    );
    const journals: string[] = [];
    for await (const o of store.list(PRUNE_PREFIX)) journals.push(o.key);
    assert.deepEqual(journals, [], 'no prune journal left');
    const check = await cbr(['backup-verify', scheduled.id, '--deep', '--json'], env);
    assert.equal(check.code, 0, `the remaining backup is whole: ${check.err}`);
  });

  it('a run that outlasts its interval is never overlapped: the instants in between are skipped, with a reason', async () => {
    const host = 'sched-overlap';
    const job = 'overlap';
    const stateDb = join(dir, 'overlap-state.db');
    const env = { ...testEnv, CBR_STORAGE_ROOT: storageRoot, CBR_STATE_DB: stateDb };
    const schedule = writeSchedule(dir, job, '*/4 * * * * *');
    // 7 backup steps at 2 s each: every run lasts well over the 4 s interval.
    const agent = spawnAgent({ host, profilePath: profilePath('source', testEnv), env, prefix, stepDelayMs: 2000, args: ['--schedule', schedule] });
    try {
      await waitForAgentQueue(prefix, host);
      await until('two scheduled backups to complete', () => runsOf(stateDb, job).filter((w) => w.state === 'completed').length >= 2 || null, 120_000);
    } finally {
      assert.equal(await stopGracefully(agent), 0);
    }
    // The run the stop interrupted: finish it without the schedule, so no snapshot stays on the shared node.
    if (!runsOf(stateDb, job).every((w) => w.status === 'done')) {
      const started = logLines(host).filter((l) => l['msg'] === 'agent started').length;
      const finisher = spawnAgent({ host, profilePath: profilePath('source', testEnv), env, prefix });
      try {
        await until('every run to end', () => runsOf(stateDb, job).every((w) => w.status === 'done'), 60_000);
        // Stopped once it handles SIGTERM (after it logged its start), so the stop is a graceful one.
        await until('the finisher to have started', () => logLines(host).filter((l) => l['msg'] === 'agent started').length > started, 30_000);
      } finally {
        assert.equal(await stopGracefully(finisher), 0);
      }
    }
    const runs = runsOf(stateDb, job);
    for (let i = 1; i < runs.length; i++) {
      const prev = runs[i - 1]!;
      const next = runs[i]!;
      assert.ok(next.createdAt >= prev.updatedAt, `${next.id} started at ${next.createdAt}, before ${prev.id} ended at ${prev.updatedAt}`);
    }
    const skipped = logLines(host).filter((l) => l['msg'] === 'scheduled run skipped');
    assert.ok(skipped.length >= 2, `skipped instants: ${skipped.length}`);
    assert.match(String(skipped[0]!['reason']), new RegExp(`previous run ${job}-\\d{8}T\\d{6}Z is still active`));
    assert.ok(
      runs.every((w) => w.state === 'completed'),
      runs.map((w) => `${w.id}: ${w.state}`).join(', '),
    );
    const snapshots = await createNodetool(source).listSnapshots();
    assert.deepEqual(
      runs.filter((w) => snapshots.includes(w.id)),
      [],
      'no snapshot left',
    );
  });
});
