import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import { loadProfile, type Profile } from '../../../src/cassandra/profile.ts';
import { listRecords } from '../../../src/catalog/catalog.ts';
import { profilePath, sandboxesDir } from '../../../src/sandbox/sandbox.ts';
import { createLocalStore } from '../../../src/storage/local/localStore.ts';
import { killHard, publishRaw, removeBusTopology, spawnAgent, stopGracefully, waitForAgentQueue, waitForWorkflow } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, dumpKeyspaces, seedData } from '../../helpers/data.ts';
import { scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { validCommand } from '../../helpers/malformed.ts';

const prefix = `k${process.pid}.`;
const BACKUP_STATES = ['verifyingNode', 'checkingFreeSpace', 'clearingStaleSnapshot', 'snapshotting', 'streaming', 'recording', 'clearingSnapshot'];
const RESTORE_STATES = [
  'checking',
  'unpacking',
  'stoppingNode',
  'swappingDataDirs',
  'chowning',
  'startingMaintenance',
  'resettingIdentity',
  'writingFinalConfig',
  'startingNode',
  'verifying',
  'finalizing',
];

describe('kill -9 of the agent in every state, then a restart', () => {
  let source: Profile;
  let env: NodeJS.ProcessEnv;
  let stateDb: string;
  let storageRoot: string;
  let keyspaces: string[];
  let sourceDump: string;
  const completedBackups: string[] = [];

  before(async () => {
    source = await sharedNode('source');
    storageRoot = scratchDir('crash-storage');
    stateDb = join(scratchDir('crash-state'), 'state.db');
    env = { ...testEnv, CBR_STORAGE_ROOT: storageRoot, CBR_STATE_DB: stateDb };
    const cql = await cqlFor(source);
    keyspaces = await seedData(cql, `crash${process.pid}`, { rows: 150, blobKiB: 2 });
    sourceDump = await dumpKeyspaces(cql, keyspaces);
    await cql.close();
  });

  after(async () => {
    await removeBusTopology(prefix, ['crash-src', 'crash-dst']);
  });

  for (const state of BACKUP_STATES) {
    it(`backup killed in ${state}: ends completed or cleanly failed, no snapshot left`, async () => {
      const id = randomUUID();
      const opts = { host: 'crash-src', profilePath: profilePath('source', testEnv), env, prefix, stepDelayMs: 700 };
      const first = spawnAgent(opts);
      try {
        await waitForAgentQueue(prefix, 'crash-src');
        await publishRaw(prefix, 'crash-src', validCommand('crash-src', { id, payload: { name: `killed-in-${state}` } }));
        await waitForWorkflow(stateDb, id, (w) => w.state === state, 60_000);
      } finally {
        await killHard(first);
      }
      const second = spawnAgent({ ...opts, stepDelayMs: 0 });
      try {
        const end = await waitForWorkflow(stateDb, id, (w) => w.status === 'done', 120_000);
        assert.ok(['completed', 'failed'].includes(end.state), end.state);
        assert.ok(!(await createNodetool(source).listSnapshots()).includes(id), 'no snapshot left');
        const records = await listRecords(createLocalStore(storageRoot, 'database_backups'));
        if (end.state === 'completed') {
          assert.ok(
            records.some((r) => r.id === id),
            'a completed backup is listed',
          );
          completedBackups.push(id);
        } else {
          assert.ok(!records.some((r) => r.id === id), 'a failed backup is not listed');
          assert.deepEqual(
            readdirSync(join(storageRoot, 'database_backups')).filter((d) => d === id),
            [],
            'and leaves no object',
          );
        }
      } finally {
        assert.equal(await stopGracefully(second), 0, 'the agent stops gracefully on SIGTERM');
      }
      const cql = await cqlFor(source);
      try {
        assert.equal(await dumpKeyspaces(cql, keyspaces), sourceDump, 'source data intact');
      } finally {
        await cql.close();
      }
    });
  }

  it('target for the restores: a running sandbox', async () => {
    const start = await cbr(['sandbox', 'start', 'crash-dst', '--json'], env);
    assert.equal(start.code, 0, start.err);
    assert.ok(completedBackups.length > 0, 'at least one backup survived its crash');
  });

  for (const state of RESTORE_STATES) {
    it(`restore killed in ${state}: finishes or rolls back, never a stopped node with mixed data`, async () => {
      const id = randomUUID();
      const backupId = completedBackups[completedBackups.length - 1]!;
      const opts = { host: 'crash-dst', profilePath: profilePath('crash-dst', testEnv), env, prefix, stepDelayMs: 600 };
      const first = spawnAgent(opts);
      try {
        await waitForAgentQueue(prefix, 'crash-dst');
        await publishRaw(
          prefix,
          'crash-dst',
          validCommand('crash-dst', { id, type: 'restore.create', payload: { backupId, instanceName: 'crash-dst', force: true } }),
        );
        await waitForWorkflow(stateDb, id, (w) => w.state === state, 120_000);
      } finally {
        await killHard(first);
      }
      const second = spawnAgent({ ...opts, stepDelayMs: 0 });
      try {
        const end = await waitForWorkflow(stateDb, id, (w) => w.status === 'done', 240_000);
        assert.ok(['completed', 'failed'].includes(end.state), end.state);
        // Running and answering with the profile's credentials (new ones if completed, old ones if rolled back).
        const status = await cbr(['sandbox', 'status', 'crash-dst', '--json'], env);
        assert.equal(status.json()['running'], true, `node running after ${end.state}`);
        if (end.state === 'completed') {
          const dst = await cqlFor(await loadProfile(profilePath('crash-dst', testEnv)));
          try {
            assert.equal(await dumpKeyspaces(dst, keyspaces), sourceDump, 'restored data equals the source');
          } finally {
            await dst.close();
          }
        }
        const dir = join(sandboxesDir(testEnv), 'crash-dst');
        const leftovers = [...readdirSync(dir), ...readdirSync(join(dir, 'conf'))].filter((f) => f.includes('.cbr-'));
        assert.deepEqual(leftovers, [], 'no staging, old directories or kept yaml left');
      } finally {
        await stopGracefully(second);
      }
    });
  }
});
