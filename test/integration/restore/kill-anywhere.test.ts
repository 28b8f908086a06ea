import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, dumpKeyspaces, seedData } from '../../helpers/data.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';

/**
 * SIGKILL at any instant, not only in states held open by a drill delay: inside each Cassandra start and stop
 * of a restore, at uniformly random instants of a restore and of a backup. After `cbr resume` every workflow
 * ends completed with the data of the source (or, killed before it was persisted, never started).
 * The instants come from a seed printed with each run, so a failure can be replayed (CBR_KILL_SEED).
 */

const SEED = Number(process.env['CBR_KILL_SEED'] ?? Date.now() % 100_000);
let rng = SEED;
function random(): number {
  // mulberry32
  rng = (rng + 0x6d2b79f5) | 0;
  let t = Math.imul(rng ^ (rng >>> 15), 1 | rng);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

function spawnCbr(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(join(REPO, 'node_modules', '.bin', 'node'), [join(REPO, 'bin', 'cbr.js'), ...args], { env, stdio: 'ignore' });
}

function activeState(env: NodeJS.ProcessEnv, kind: 'backup' | 'restore'): string | undefined {
  const path = String(env['CBR_STATE_DB']);
  if (!existsSync(path)) return undefined;
  try {
    const db = new StateDb(path, { readOnly: true });
    try {
      return db.list({ kind, status: 'active' })[0]?.state;
    } finally {
      db.close();
    }
  } catch {
    return undefined;
  }
}

function restoreOf(env: NodeJS.ProcessEnv, instance: string): boolean {
  if (!existsSync(String(env['CBR_STATE_DB']))) return false;
  const db = new StateDb(String(env['CBR_STATE_DB']), { readOnly: true });
  try {
    return db.list({ kind: 'restore' }).some((w) => (w.input as { instanceName?: string }).instanceName === instance);
  } finally {
    db.close();
  }
}

type When = { ms: number } | { state: string; extraMs: number; logLine?: { file: string; re: RegExp } };

/**
 * Kills the child at `ms` after start, or once the workflow has been `extraMs` in state `state` (counted from
 * the moment `logLine` appears in the node's log, when given: e.g. the SIGTERM of a stop).
 */
async function killAt(child: ChildProcess, env: NodeJS.ProcessEnv, when: When): Promise<string> {
  const exited = new Promise((r) => child.once('exit', r));
  let at: string;
  if ('ms' in when) {
    await Promise.race([sleep(when.ms), exited]);
    at = `${when.ms} ms in (${activeState(env, 'restore') ?? activeState(env, 'backup') ?? 'no active workflow'})`;
  } else {
    const deadline = Date.now() + 180_000;
    while (activeState(env, 'restore') !== when.state && child.exitCode === null && Date.now() < deadline) await sleep(20);
    const line = when.logLine;
    if (line) {
      const seen = () => existsSync(line.file) && line.re.test(readFileSync(line.file, 'utf8'));
      while (!seen() && child.exitCode === null && Date.now() < deadline) await sleep(20);
    }
    await Promise.race([sleep(when.extraMs), exited]);
    at = `${when.extraMs} ms into ${when.state}${line ? ` after ${line.re}` : ''} (now ${activeState(env, 'restore') ?? 'ended'})`;
  }
  child.kill('SIGKILL');
  await exited;
  return at;
}

describe(`kill -9 at any instant, then resume (seed ${SEED})`, () => {
  let source: Profile;
  let cql: CqlSession;
  let keyspaces: string[];
  let env: NodeJS.ProcessEnv;
  let backupId: string;
  let dump: string;

  before(async () => {
    source = await sharedNode('source');
    cql = await cqlFor(source);
    keyspaces = await seedData(cql, `ka${process.pid}`, { rows: 150, blobKiB: 2 });
    dump = await dumpKeyspaces(cql, keyspaces);
    env = { ...testEnv, CBR_STORAGE_ROOT: scratchDir('kill-storage'), CBR_STATE_DB: join(scratchDir('kill-state'), 'state.db') };
    const made = await cbr(['backup-create', 'kill-anywhere', '--config', profilePath('source', testEnv), '--json'], env);
    assert.equal(made.code, 0, made.err);
    backupId = String(made.json()['id']);
  });

  after(async () => {
    for (const ks of keyspaces ?? []) await cql.execute(`DROP KEYSPACE IF EXISTS ${ks}`).catch(() => {});
    await cql?.close();
  });

  const log = (i: number) => join(String(testEnv['CBR_HOME']), 'sandboxes', `kill${i}`, 'logs', 'system.log');
  const restoreKills: When[] = [
    { state: 'startingMaintenance', extraMs: 500 + Math.floor(random() * 4000) }, // inside start 1
    { state: 'resettingIdentity', extraMs: Math.floor(random() * 1500) }, // while resetting over CQL
    // Inside the stop at its end: the node had its SIGTERM and is draining when cbr dies.
    { state: 'resettingIdentity', extraMs: Math.floor(random() * 200), logLine: { file: log(2), re: /Announcing shutdown/ } },
    { state: 'startingNode', extraMs: 500 + Math.floor(random() * 4000) }, // inside start 2
    { ms: 1000 + Math.floor(random() * 25_000) },
  ];

  for (const [i, when] of restoreKills.entries()) {
    const where = 'state' in when ? `in ${when.state}${when.logLine ? ' during its stop' : ''}` : 'at a random instant';
    it(`restore killed ${where}: resume ends completed, data equal`, async () => {
      const name = `kill${i}`;
      const child = spawnCbr(['create', name, '--backup', backupId, '--sandbox', '--json'], env);
      const at = await killAt(child, env, when);
      const resumed = await cbr(['resume', '--json'], env);
      assert.equal(resumed.code, 0, `killed ${at}; resume: ${resumed.err}${resumed.out}`);
      if (!restoreOf(env, name)) {
        // Killed before the workflow was persisted: the rerun takes over the instance the first run left.
        const rerun = await cbr(['create', name, '--backup', backupId, '--sandbox', '--json'], env);
        assert.equal(rerun.code, 0, `killed ${at}; rerun: ${rerun.err}${rerun.out}`);
      }
      const status = await cbr(['sandbox', 'status', name, '--json'], env);
      assert.equal(status.json()['running'], true, `killed ${at}: the restored node runs`);
      assert.equal(status.json()['clusterName'], name, `killed ${at}`);
      const profile = JSON.parse(readFileSync(String(status.json()['profilePath']), 'utf8')) as Profile;
      const c = await cqlFor(profile);
      try {
        assert.equal(await dumpKeyspaces(c, keyspaces), dump, `killed ${at}: every row equal`);
      } finally {
        await c.close();
      }
      await cbr(['sandbox', 'rm', name], env);
    });
  }

  it('backup killed at random instants: resume ends completed (or it never started), no snapshot left', async () => {
    for (let run = 0; run < 2; run++) {
      const id = `kill-backup-${SEED}-${run}`;
      const child = spawnCbr(['backup-create', 'killed', '--id', id, '--config', profilePath('source', testEnv), '--json'], env);
      const at = await killAt(child, env, { ms: 300 + Math.floor(random() * 6000) });
      const resumed = await cbr(['resume', '--json'], env);
      assert.equal(resumed.code, 0, `killed ${at}; resume: ${resumed.err}${resumed.out}`);
      const db = new StateDb(String(env['CBR_STATE_DB']), { readOnly: true });
      const row = db.get(id);
      db.close();
      if (row) {
        assert.equal(row.state, 'completed', `killed ${at}`);
        const listed = (await cbr(['backup-list', '--json'], env)).json() as unknown as { id: string }[];
        assert.ok(
          listed.some((b) => b.id === id),
          `killed ${at}: the backup is listed`,
        );
      }
      assert.ok(!(await createNodetool(source).listSnapshots()).includes(id), `killed ${at}: no snapshot left`);
    }
  });
});
