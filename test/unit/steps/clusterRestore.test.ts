import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CassandraYaml } from '../../../src/cassandra/yaml.ts';
import { type ClusterRecord, partId } from '../../../src/catalog/clusterRecord.ts';
import { recoverDeadClusterRestores } from '../../../src/cli/clusterRecovery.ts';
import { CbrError } from '../../../src/core/errors.ts';
import { WorkflowRuntime } from '../../../src/runtime/runtime.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { type ClusterRestoreJournal, listJournals, writeJournal } from '../../../src/steps/clusterRestore/journal.ts';
import { type ClusterTarget, recoverClusterRestore, restoreCluster } from '../../../src/steps/clusterRestore/restoreCluster.ts';
import { forgetSourcePeers } from '../../../src/steps/restore/forgetSourcePeers.ts';
import { restorePaths } from '../../../src/steps/restore/restoreDeps.ts';
import { writeClusterConfig } from '../../../src/steps/restore/writeClusterConfig.ts';
import { type FakeNode, fakeNode, removeFakeNodes, treeState } from '../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';
import { liveSignal, makeBackup, recordingLogger, rejectsCoded, restoreDeps, restoreInput } from '../../fixtures/stepKit.ts';

after(removeFakeNodes);

const TOKENS = [
  ['-9000', '-5000'],
  ['-1000', '2000'],
  ['5000', '9000'],
];

/** Three parts of one cluster backup (one fake source node each) in one store, and their cluster record. */
async function clusterBackup(): Promise<{ store: MemoryStore; record: ClusterRecord }> {
  const store = new MemoryStore();
  const hosts = [];
  for (let i = 0; i < 3; i++) {
    await makeBackup({ store, backupId: partId('cb', i), source: { name: `src${i + 1}` } });
    hosts.push({
      host: `src${i + 1}`,
      backupId: partId('cb', i),
      hostId: `host-${i + 1}`,
      address: `10.0.0.${i + 1}`,
      datacenter: 'datacenter1',
      rack: 'rack1',
      tokens: TOKENS[i]!,
    });
  }
  const record: ClusterRecord = {
    format: 1,
    kind: 'cluster',
    id: 'cb',
    name: 'nightly',
    description: '',
    state: 'COMPLETED',
    clusterName: 'Source Cluster',
    partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
    strategy: 'full',
    created: '2026-01-01T00:00:00.000Z',
    finished: '2026-01-01T00:01:00.000Z',
    schema: '',
    hosts,
  };
  return { store, record };
}

function targetsOf(nodes: FakeNode[], store: MemoryStore, record: ClusterRecord): ClusterTarget[] {
  return nodes.map((n, i) => ({
    host: record.hosts[i]!,
    deps: restoreDeps(n, store),
    input: restoreInput(n, { workflowId: `wr-${i + 1}`, backupId: record.hosts[i]!.backupId, passwordFile: '/same/password', clusterName: 'New Cluster' }).ctx,
  }));
}

/** Fake target nodes, each on a storage address of its own (the operator yaml says localhost: one address for all). */
async function targetNodes(count: number): Promise<FakeNode[]> {
  const nodes = await Promise.all(Array.from({ length: count }, (_, i) => fakeNode({ name: `t${i + 1}` })));
  for (const [i, n] of nodes.entries()) {
    const y = readFileSync(n.profile.cassandraYaml, 'utf8');
    writeFileSync(n.profile.cassandraYaml, y.replace(/^listen_address: localhost$/m, `listen_address: 127.0.0.${i + 1}`));
  }
  return nodes;
}

function snapshot(n: FakeNode) {
  return { tree: treeState(n.root), running: n.running };
}

describe('restore as a new cluster: the coordinator rolls every node back', () => {
  it('a node whose maintenance start fails: every node, already swapped, gets its directories and yaml back, and runs again', async () => {
    const { store, record } = await clusterBackup();
    const nodes = await targetNodes(3);
    const before = nodes.map(snapshot);
    nodes[2]!.fail('service.start', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'the unit did not start'), { times: 1 });
    await rejectsCoded(
      restoreCluster(record, targetsOf(nodes, store, record), { env: {}, log: recordingLogger() }),
      'CBR_ERR_CLUSTER_RESTORE_FAILED',
      /^restore of cluster backup cb failed at maintenance: t3 \(part cb-3\): CBR_ERR_SERVICE_CONTROL_FAILED: the unit did not start; every target node rolled back$/,
    );
    for (const [i, n] of nodes.entries()) {
      assert.ok(n.calls.includes('service stop'), `t${i + 1} was touched (stopped) before the failure`);
      assert.deepEqual(snapshot(n), before[i], `t${i + 1} as before`);
    }
  });

  it('a node failing at its start after the first node started in the new cluster: that one is stopped and rolled back too', async () => {
    const { store, record } = await clusterBackup();
    const nodes = await targetNodes(3);
    const before = nodes.map(snapshot);
    await rejectsCoded(
      restoreCluster(record, targetsOf(nodes, store, record), { env: { CBR_DRILL_CLUSTER_RESTORE_FAIL: '3:startOthers' }, log: recordingLogger() }),
      'CBR_ERR_CLUSTER_RESTORE_FAILED',
      /failed at startOthers: t3 \(part cb-3\): CBR_ERR_INTERNAL: failure injected/,
    );
    const own = `service start 127.0.0.1:${nodes[0]!.profile.cql.port}`;
    assert.ok(nodes[0]!.calls.includes(own), 'the first node had started on its own configuration');
    for (const [i, n] of nodes.entries()) assert.deepEqual(snapshot(n), before[i], `t${i + 1} as before`);
  });

  it('a cancel (Ctrl-C) rolls back too, and says it was cancelled', async () => {
    const { store, record } = await clusterBackup();
    const nodes = await targetNodes(3);
    const before = nodes.map(snapshot);
    const ac = new AbortController();
    ac.abort();
    await rejectsCoded(
      restoreCluster(record, targetsOf(nodes, store, record), { env: {}, log: recordingLogger(), signal: ac.signal }),
      'CBR_ERR_CLUSTER_RESTORE_FAILED',
      /failed at check: CBR_ERR_ABORTED: cancelled: interrupted; every target node rolled back$/,
    );
    for (const [i, n] of nodes.entries()) assert.deepEqual(snapshot(n), before[i], `t${i + 1} as before`);
  });

  it('refuses targets that do not match the hosts one to one, before touching anything', async () => {
    const { store, record } = await clusterBackup();
    const nodes = await targetNodes(2);
    const targets = targetsOf(nodes, store, { ...record, hosts: record.hosts.slice(0, 2) });
    await rejectsCoded(restoreCluster(record, targets, { env: {}, log: recordingLogger() }), 'CBR_ERR_INVALID_ARGUMENT', /3 hosts/);
    const same = targetsOf([nodes[0]!, nodes[0]!, nodes[1]!], store, record);
    await rejectsCoded(restoreCluster(record, same, { env: {}, log: recordingLogger() }), 'CBR_ERR_INVALID_ARGUMENT', /share/);
    assert.deepEqual(
      nodes.map((n) => n.calls),
      [[], []],
    );
  });
});

describe('restore as a new cluster: a coordinator killed midway, recovered from its journal', () => {
  it('the journal written before each phase rolls back nodes left swapped with the first one running in the new cluster, and again finds nothing to do', async () => {
    const { store, record } = await clusterBackup();
    const nodes = await targetNodes(3);
    const before = nodes.map(snapshot);
    const home = mkdtempSync(join(tmpdir(), 'cbr-journal-'));
    const env = { CBR_HOME: home };
    // The kill: at the moment startOthers begins, each node's state is forked (tree and in-memory) with the journal.
    // The run itself then fails there (fakes form no ring) and rolls back in-process, its journal going with it.
    let crashed: { forks: FakeNode[]; journal: ClusterRestoreJournal } | null = null;
    const phases: string[] = [];
    const run = restoreCluster(record, targetsOf(nodes, store, record), {
      env: { ...env, CBR_DRILL_CLUSTER_RESTORE_FAIL: '3:startOthers' },
      log: recordingLogger(),
      journal: { runId: 'run-1', owner: 'boot:1:1' },
      onPhase: (phase) => {
        const j = listJournals(env);
        phases.push(`${phase}: ${j.map((x) => `${x.phase} ${x.nodes.map((n) => (n.touched ? 't' : '-')).join('')}`).join()}`);
        if (phase === 'startOthers') crashed = { forks: nodes.map((n) => n.fork()), journal: j[0]! };
      },
    });
    await rejectsCoded(run, 'CBR_ERR_CLUSTER_RESTORE_FAILED', /every target node rolled back$/);
    assert.deepEqual(listJournals(env), [], 'a run rolled back without a warning leaves no journal');
    assert.deepEqual(phases, [
      'check: check ---',
      'unpack: check ---',
      'clearPeers: unpack ---',
      'swap: clearPeers ---',
      'maintenance: swap ttt',
      'config: maintenance ttt',
      'startSeed: config ttt',
      'startOthers: startSeed ttt',
    ]);
    const { forks, journal } = crashed!;
    assert.equal(forks[0]!.running, true, 'node 1 ran in the new cluster when the coordinator died');
    assert.match(readFileSync(forks[0]!.profile.cassandraYaml, 'utf8'), /initial_token/);
    await writeJournal(env, journal);
    const byWorkflow = new Map(journal.nodes.map((n, i) => [n.workflowId, forks[i]!]));
    const recover = () =>
      recoverClusterRestore(journal, {
        env,
        log: recordingLogger(),
        owner: 'boot:2:2',
        depsFor: async (input) => restoreDeps(byWorkflow.get(input.workflowId)!, store),
      });
    assert.deepEqual(await recover(), { action: 'rollBack', warnings: [] });
    for (const [i, f] of forks.entries()) assert.deepEqual(snapshot(f), before[i], `t${i + 1} as before the restore`);
    assert.deepEqual(listJournals(env), [], 'the journal is gone');
    // Killed during the rollback, run again: every step finds its work done.
    assert.deepEqual(await recover(), { action: 'rollBack', warnings: [] });
    for (const [i, f] of forks.entries()) assert.deepEqual(snapshot(f), before[i], `t${i + 1} still as before`);
  });

  it('cbr resume: a journal whose nodes cannot be loaded is reported, and the journals after it are still recovered', async () => {
    const env = { CBR_HOME: mkdtempSync(join(tmpdir(), 'cbr-journal-')) };
    const gone = (runId: string) => ({
      version: 1 as const,
      runId,
      clusterBackupId: 'cb',
      owner: 'boot:dead:1',
      pid: 999_999_999,
      startedAt: '',
      phase: 'swap' as const,
      nodes: [{ name: 'n1', profilePath: `/nonexistent/${runId}.json`, workflowId: `w-${runId}`, input: {}, touched: true, wasRunning: true }],
    });
    await writeJournal(env, gone('r1'));
    await writeJournal(env, gone('r2'));
    const out = await recoverDeadClusterRestores(env, recordingLogger());
    assert.deepEqual(
      out.map((r) => [r.journal.runId, r.warnings.length]),
      [
        ['r1', 1],
        ['r2', 1],
      ],
    );
    assert.match(out[0]!.warnings[0]!, /^cluster restore r1: /);
    assert.equal(listJournals(env).length, 2, 'kept for a later resume once the cause is fixed');
  });

  it('a backup or restore on a node a cluster restore holds is refused by the workflow runtime', async () => {
    const env = { CBR_HOME: mkdtempSync(join(tmpdir(), 'cbr-journal-')) };
    const node = { name: 'n1', profilePath: '/etc/cbr/n1.json', workflowId: 'w1', input: {}, touched: true, wasRunning: true };
    await writeJournal(env, { version: 1, runId: 'r9', clusterBackupId: 'cb', owner: 'x', pid: 1, startedAt: '', phase: 'swap', nodes: [node] });
    const db = new StateDb(':memory:');
    const runtime = new WorkflowRuntime({ stateDb: db, env, log: recordingLogger() });
    await rejectsCoded(
      runtime.startBackup({ profilePath: '/etc/cbr/n1.json', workflowId: 'b1' } as never),
      'CBR_ERR_WORKFLOW_CONFLICT',
      /cluster restore r9 of cluster backup cb holds this node \(swap\)/,
    );
    db.close();
  });
});

describe('cluster restore steps', () => {
  it('forgetSourcePeers (the clearPeers phase) removes the staged peers tables only, and again finds nothing', async () => {
    const n = await fakeNode({ name: 'p1' });
    const deps = restoreDeps(n, new MemoryStore());
    const input = { ctx: restoreInput(n).ctx, plan: null as never };
    const staging = restorePaths(n.profile, 'wr-1').stagings[0]!.staging;
    const dir = (t: string) => join(staging, 'system', t);
    for (const t of ['peers-37f71aca7dc2383ba70672528af04d4f', 'peers_v2-c4325fbb8e5e3bafbd070f9250ed818e', 'local-7ad54392bcdd35a684174e047860b377']) {
      mkdirSync(dir(t), { recursive: true });
      writeFileSync(join(dir(t), 'nb-1-big-Data.db'), 'x');
    }
    await forgetSourcePeers(deps, input, liveSignal());
    assert.deepEqual(readdirSync(join(staging, 'system')), ['local-7ad54392bcdd35a684174e047860b377']);
    assert.deepEqual(readdirSync(dir('local-7ad54392bcdd35a684174e047860b377')), ['nb-1-big-Data.db']);
    await forgetSourcePeers(deps, input, liveSignal());
    assert.deepEqual(readdirSync(join(staging, 'system')), ['local-7ad54392bcdd35a684174e047860b377']);
  });

  it('writeClusterConfig gives the yaml the source tokens and the new seeds, keeping every other line', async () => {
    const n = await fakeNode({ name: 'y1' });
    const deps = restoreDeps(n, new MemoryStore());
    const input = { ctx: restoreInput(n).ctx, plan: null as never, node: { tokens: ['-5', '7', '9'], seeds: '10.1.0.1:7000' } };
    const original = readFileSync(n.profile.cassandraYaml, 'utf8');
    await writeClusterConfig(deps, input, liveSignal());
    const once = readFileSync(n.profile.cassandraYaml, 'utf8');
    const y = CassandraYaml.parse(once);
    assert.equal(y.get('num_tokens'), 3);
    assert.equal(y.get('initial_token'), '-5,7,9');
    assert.deepEqual(y.get('seed_provider'), [{ class_name: 'org.apache.cassandra.locator.SimpleSeedProvider', parameters: [{ seeds: '10.1.0.1:7000' }] }]);
    assert.equal(y.get('cluster_name'), CassandraYaml.parse(original).get('cluster_name'));
    await writeClusterConfig(deps, input, liveSignal());
    assert.equal(readFileSync(n.profile.cassandraYaml, 'utf8'), once, 'idempotent');
    await rejectsCoded(writeClusterConfig(deps, { ...input, node: { tokens: ['1'], seeds: 'a b' } }, liveSignal()), 'CBR_ERR_INVALID_ARGUMENT');
  });
});
