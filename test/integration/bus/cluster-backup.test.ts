import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { queryStatus } from '../../../src/bus/client.ts';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { listRecords, readRecord } from '../../../src/catalog/catalog.ts';
import { listClusterRecords, partId, pendingMarkerKey, readClusterRecord } from '../../../src/catalog/clusterRecord.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { createLocalStore } from '../../../src/storage/local/localStore.ts';
import { BUS_URL, killHard, publishRaw, removeBusTopology, spawnAgent, stopGracefully, waitForAgentQueue, waitForWorkflow } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, seedData } from '../../helpers/data.ts';
import { SHARED_CLUSTER, scratchDir, sharedCluster, testEnv } from '../../helpers/env.ts';
import { validCommand } from '../../helpers/malformed.ts';

/**
 * Cluster backups end to end: one real 3-node sandbox cluster, one real `cbr agent` process per node on the real
 * RabbitMQ, all started once for this file. The coordinator is the agent of node 1 (the first host found). Steps are
 * paused for the kill tests through the test-only CBR_TEST_CLUSTER_PAUSE_FILE (a file naming the steps that wait).
 */
/** The 3-node cluster every cluster test shares (test/helpers/env.ts); its cluster_name is its name. */
const NAME = SHARED_CLUSTER;
const HOSTS = [1, 2, 3].map((i) => `${NAME}-${i}`);
const prefix = `cb${process.pid}.`;

describe('cluster backup over the bus (3 real nodes, 3 real agents, real RabbitMQ)', () => {
  let profiles: Profile[];
  let storageRoot: string;
  let pauseFile: string;
  const agents = new Map<string, ChildProcess>();
  const stateDbs = new Map<string, string>();
  let agentEnv: NodeJS.ProcessEnv;
  let fullId = '';

  const store = () => createLocalStore(storageRoot, 'database_backups');
  const env = () => ({ ...testEnv, CBR_STORAGE_ROOT: storageRoot });
  const pause = (...steps: string[]) => writeFileSync(pauseFile, `${steps.join('\n')}\n`);
  const unpause = () => writeFileSync(pauseFile, '');

  function startAgent(host: string): ChildProcess {
    const child = spawnAgent({ host, profilePath: profilePath(host, testEnv), env: { ...agentEnv, CBR_STATE_DB: stateDbs.get(host)! }, prefix });
    agents.set(host, child);
    return child;
  }

  /** Waits until every agent announces the cluster in its status replies (each reads its node's cluster_name once). */
  async function waitForAnnouncements(): Promise<void> {
    for (let i = 0; i < 60; i++) {
      const replies = await queryStatus({ url: BUS_URL, prefix, limit: 1, timeoutMs: 1500 });
      if (HOSTS.every((h) => replies.some((r) => r.host === h && r.cluster === NAME))) return;
      await sleep(500);
    }
    throw new Error('the agents never announced their cluster');
  }

  /** Snapshot tags of this cluster backup left on any node. */
  async function snapshotsOf(id: string): Promise<string[]> {
    const left: string[] = [];
    for (const p of profiles) for (const tag of await createNodetool(p, testEnv).listSnapshots()) if (tag.startsWith(id)) left.push(`${p.name}:${tag}`);
    return left;
  }

  async function partsStored(id: string): Promise<string[]> {
    return (await listRecords(store())).map((r) => r.id).filter((r) => r.startsWith(`${id}-`));
  }

  async function waitForPart(host: string, id: string, state: string) {
    return waitForWorkflow(stateDbs.get(host)!, id, (w) => w.state === state, 120_000);
  }

  before(async () => {
    profiles = await sharedCluster();
    const cql = await cqlFor(profiles[0]!);
    await seedData(cql, `cb${process.pid}`, { rows: 120, blobKiB: 1 });
    await cql.close();
    storageRoot = scratchDir('cluster-backup-storage');
    const dir = scratchDir('cluster-backup-agents');
    pauseFile = join(dir, 'pause');
    unpause();
    agentEnv = {
      ...testEnv,
      CBR_STORAGE_ROOT: storageRoot,
      CBR_TEST_CLUSTER_PAUSE_FILE: pauseFile,
      CBR_CLUSTER_POLL_MS: '200',
      CBR_CLUSTER_ABORT_TIMEOUT_MS: '120000',
    };
    for (const h of HOSTS) {
      stateDbs.set(h, join(dir, `${h}.db`));
      startAgent(h);
    }
    for (const h of HOSTS) await waitForAgentQueue(prefix, h);
    await waitForAnnouncements();
  });

  after(async () => {
    for (const a of agents.values()) await stopGracefully(a);
    await removeBusTopology(prefix, HOSTS);
  });

  it('a full cluster backup completes: 3 parts with tokens in the cluster record, each part verifies deep, no snapshot left', async () => {
    const r = await cbr(['backup-create', 'nightly', '--cluster', NAME, '--bus', BUS_URL, '--prefix', prefix, '--json'], env());
    assert.equal(r.code, 0, r.err);
    const out = r.json() as { id: string; state: string; coordinator: string; hosts: { host: string; phase: string }[] };
    fullId = out.id;
    assert.equal(out.state, 'COMPLETED');
    assert.equal(out.coordinator, `${NAME}-1`, 'the first host found coordinates');
    assert.deepEqual(
      out.hosts.map((h) => [h.host, h.phase]),
      HOSTS.map((h) => [h, 'uploaded']),
    );
    const record = await readClusterRecord(store(), fullId);
    assert.equal(record.clusterName, NAME);
    assert.equal(record.strategy, 'full');
    assert.deepEqual(
      record.hosts.map((h) => [h.host, h.backupId, h.address, h.tokens.length]),
      HOSTS.map((h, i) => [h, partId(fullId, i), `127.0.0.${i + 1}`, 16]),
    );
    assert.equal(new Set(record.hosts.map((h) => h.hostId)).size, 3);
    assert.match(record.schema, new RegExp(`CREATE KEYSPACE cb${process.pid}_shop`));
    for (const h of record.hosts) {
      assert.equal((await readRecord(store(), h.backupId)).sourceInstance, h.host, "each part is its own host's backup");
      const v = await cbr(['backup-verify', h.backupId, '--deep', '--json'], env());
      assert.equal(v.code, 0, `${h.backupId}: ${v.err}${v.out}`);
    }
    assert.deepEqual(await snapshotsOf(fullId), []);
    assert.equal(await store().head(pendingMarkerKey(fullId)), null, 'the pending marker went once the record was written');
    const list = await cbr(['backup-list', '--json'], env());
    assert.equal(list.code, 0, list.err);
    const alone = await cbr(['backup-delete', partId(fullId, 1)], env());
    assert.equal(alone.code, 9, alone.err);
    assert.match(alone.err, /CBR_ERR_CLUSTER_PART/);
  });

  it('an incremental cluster backup: each part follows the same host part of the full one', async () => {
    assert.ok(fullId, 'runs after the full cluster backup');
    const r = await cbr(
      [
        'backup-create',
        'hourly',
        '--cluster',
        NAME,
        '--hosts',
        HOSTS.join(','),
        '--strategy',
        'incremental',
        '--concurrency',
        '3',
        '--bus',
        BUS_URL,
        '--prefix',
        prefix,
        '--json',
      ],
      env(),
    );
    assert.equal(r.code, 0, r.err);
    const id = (r.json() as { id: string }).id;
    const record = await readClusterRecord(store(), id);
    assert.equal(record.strategy, 'incremental');
    for (const [i, h] of record.hosts.entries()) {
      const part = await readRecord(store(), h.backupId);
      assert.equal(part.strategy, 'incremental');
      assert.equal(part.parent, partId(fullId, i), `${h.host} follows its own part`);
    }
    const v = await cbr(['backup-verify', partId(id, 2), '--deep', '--json'], env());
    assert.equal(v.code, 0, v.err);
    assert.deepEqual(await snapshotsOf(id), []);
  });

  it('a --hosts subset leaving a ring node out is refused before any host backs up', async () => {
    const id = `subset-${randomUUID().slice(0, 8)}`;
    const r = await cbr(
      ['backup-create', 'partial', '--cluster', NAME, '--hosts', HOSTS.slice(0, 2).join(','), '--id', id, '--bus', BUS_URL, '--prefix', prefix],
      env(),
    );
    assert.equal(r.code, 12, r.err);
    assert.match(r.err, /CBR_ERR_CLUSTER_INCOMPLETE/);
    assert.deepEqual(await snapshotsOf(id), [], 'no host took a snapshot');
    assert.deepEqual(await partsStored(id), []);
    assert.equal(await store().head(pendingMarkerKey(id)), null, 'no pending marker');
  });

  it('a host failing mid-upload fails the cluster backup naming it: every snapshot cleared, no record, no part left', async () => {
    const id = `fail-${randomUUID().slice(0, 8)}`;
    pause('uploadHosts');
    const run = cbr(['backup-create', 'doomed', '--cluster', NAME, '--id', id, '--concurrency', '1', '--bus', BUS_URL, '--prefix', prefix], env());
    const blocker = join(storageRoot, 'database_backups', partId(id, 2));
    try {
      for (const [i, h] of HOSTS.entries()) await waitForPart(h, partId(id, i), 'holding');
      // The third host's part cannot be stored: a file stands where its folder would go.
      writeFileSync(blocker, 'not a folder');
      unpause();
      const r = await run;
      assert.equal(r.code, 12, r.err);
      assert.match(r.err, /CBR_ERR_CLUSTER_BACKUP_FAILED/);
      assert.match(r.err, new RegExp(`${NAME}-3: CBR_ERR_`));
      assert.match(r.err, new RegExp(`${NAME}-3\\s+failed`));
      assert.deepEqual(await snapshotsOf(id), [], 'every host cleared its snapshot');
      assert.deepEqual(await partsStored(id), [], 'the completed parts were deleted');
      assert.ok(!(await listClusterRecords(store())).some((c) => c.id === id), 'no cluster record');
      assert.equal(await store().head(pendingMarkerKey(id)), null, 'no pending marker');
    } finally {
      unpause();
      rmSync(blocker, { force: true });
    }
  });

  /** Where the coordinator is paused for each of its states, and what brings it there. */
  const KILL_STATES: { state: string; pause: string[]; cancel?: boolean }[] = [
    { state: 'resolvingHosts', pause: ['resolveHosts'] },
    { state: 'startingHosts', pause: ['startHostBackups'] },
    { state: 'awaitingSnapshots', pause: ['awaitSnapshots'] },
    { state: 'readingRing', pause: ['readRing'] },
    { state: 'uploading', pause: ['uploadHosts'] },
    { state: 'recording', pause: ['writeClusterRecord'] },
    { state: 'aborting', pause: ['uploadHosts', 'abortHosts'], cancel: true },
  ];

  for (const k of KILL_STATES) {
    it(`the coordinator's agent killed -9 in ${k.state}, then started again: ends completed or cleanly failed, no snapshot left`, async () => {
      const id = `kill-${k.state.slice(0, 6)}-${randomUUID().slice(0, 6)}`;
      const coordinator = HOSTS[0]!;
      const db = stateDbs.get(coordinator)!;
      pause(...k.pause);
      try {
        await publishRaw(
          prefix,
          coordinator,
          validCommand(coordinator, { id, type: 'cluster.backup', payload: { name: `killed-in-${k.state}`, cluster: NAME } }),
        );
        if (k.cancel) {
          await waitForWorkflow(db, id, (w) => w.state === 'uploading', 120_000);
          await publishRaw(prefix, coordinator, validCommand(coordinator, { type: 'workflow.cancel', payload: { workflowId: id } }));
        }
        await waitForWorkflow(db, id, (w) => w.state === k.state, 120_000);
        await killHard(agents.get(coordinator)!);
      } finally {
        unpause();
      }
      startAgent(coordinator);
      const end = await waitForWorkflow(db, id, (w) => w.status === 'done', 240_000);
      if (k.cancel) assert.equal(end.state, 'failed');
      else assert.ok(['completed', 'failed'].includes(end.state), end.state);
      // Every host had its part (each resolved, none left out), and it ended: a released one completed, a held one of a
      // failed cluster backup was cancelled. Only a run that failed before it started any part has none.
      for (const [i, h] of HOSTS.entries()) {
        const part = waitForWorkflow(stateDbs.get(h)!, partId(id, i), (w) => w.status === 'done', 60_000);
        if (end.state === 'completed' || k.state !== 'resolvingHosts') assert.equal((await part).kind, 'backup');
        else await part.catch(() => null);
      }
      assert.deepEqual(await snapshotsOf(id), [], 'no snapshot left');
      const records = (await listClusterRecords(store())).filter((c) => c.id === id);
      if (end.state === 'completed') {
        assert.equal(records.length, 1);
        assert.deepEqual(
          records[0]!.hosts.map((h) => h.backupId),
          HOSTS.map((_, i) => partId(id, i)),
        );
      } else {
        assert.deepEqual(records, [], 'no cluster record');
        assert.deepEqual(await partsStored(id), [], 'no part left');
      }
      assert.equal(await store().head(pendingMarkerKey(id)), null, 'no pending marker left');
    });
  }

  it('backup-delete of a cluster backup id removes its record, then every part; the backups left still verify', async () => {
    assert.ok(fullId, 'runs after the full cluster backup');
    const r = await cbr(['backup-delete', fullId, '--json'], env());
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(
      ((r.json() as { parts: { id: string }[] }).parts ?? []).map((p) => p.id),
      HOSTS.map((_, i) => partId(fullId, i)),
    );
    assert.ok(!(await listClusterRecords(store())).some((c) => c.id === fullId));
    assert.deepEqual(await partsStored(fullId), []);
    // The incremental cluster backup followed the full one's parts: its blobs stay, and it still reads back whole.
    const left = (await listClusterRecords(store())).find((c) => c.strategy === 'incremental');
    assert.ok(left, 'the incremental cluster backup is still listed');
    const v = await cbr(['backup-verify', left.hosts[0]!.backupId, '--deep', '--json'], env());
    assert.equal(v.code, 0, v.err);
  });

  it('backup-delete --bus of a cluster backup id: the agent deletes its record, then every part', async () => {
    const left = (await listClusterRecords(store())).find((c) => c.strategy === 'incremental');
    assert.ok(left, 'runs after the incremental cluster backup');
    const r = await cbr(['backup-delete', left.id, '--bus', BUS_URL, '--prefix', prefix, '--host', HOSTS[1]!, '--json'], env());
    assert.equal(r.code, 0, r.err);
    const out = r.json() as { cluster: boolean; parts: { id: string }[] };
    assert.equal(out.cluster, true);
    assert.deepEqual(
      out.parts.map((p) => p.id),
      HOSTS.map((_, i) => partId(left.id, i)),
    );
    assert.ok(!(await listClusterRecords(store())).some((c) => c.id === left.id));
    assert.deepEqual(await partsStored(left.id), []);
  });
});
