import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { CbrError } from '../../../src/core/errors.ts';
import { checkTargetPlaces, isLoopback, readTargetPlace, type TargetPlace } from '../../../src/steps/clusterRestore/checkTargets.ts';
import { type ClusterRestoreJournal, deadJournals, type JournalNode, nodeRollback, recoveryPlan } from '../../../src/steps/clusterRestore/journal.ts';

const node = (name: string, touched: boolean, wasRunning: boolean): JournalNode => ({
  name,
  profilePath: `/p/${name}`,
  workflowId: `w-${name}`,
  input: {},
  touched,
  wasRunning,
});

describe('cluster restore journal: what a recovery does', () => {
  it('an untouched node only loses its staging; a touched one is stopped, its yaml and directories go back, and it starts again only if it ran', () => {
    assert.deepEqual(nodeRollback({ touched: false, wasRunning: true }), ['discardStaging']);
    assert.deepEqual(nodeRollback({ touched: true, wasRunning: false }), ['stopNode', 'restoreConfig', 'restoreDataDirs', 'discardStaging']);
    assert.deepEqual(nodeRollback({ touched: true, wasRunning: true }), ['stopNode', 'restoreConfig', 'restoreDataDirs', 'discardStaging', 'startNode']);
  });

  it('every phase before finalize rolls every node back (rollingBack included: a rollback killed runs again); finalizing finishes', () => {
    const nodes = [node('a', true, false), node('b', false, false)];
    for (const phase of ['check', 'unpack', 'swap', 'startSeed', 'startOthers', 'ring', 'rollingBack'] as const) {
      assert.deepEqual(recoveryPlan({ phase, nodes }), {
        action: 'rollBack',
        nodes: [
          { name: 'a', steps: ['stopNode', 'restoreConfig', 'restoreDataDirs', 'discardStaging'] },
          { name: 'b', steps: ['discardStaging'] },
        ],
      });
    }
    assert.deepEqual(recoveryPlan({ phase: 'finalizing', nodes }), {
      action: 'finalize',
      nodes: [
        { name: 'a', steps: ['finalizeRestore'] },
        { name: 'b', steps: ['finalizeRestore'] },
      ],
    });
  });

  it('only journals whose coordinator is gone are taken', () => {
    const j = (runId: string, owner: string): ClusterRestoreJournal => ({
      version: 1,
      runId,
      clusterBackupId: 'cb',
      owner,
      pid: 1,
      startedAt: '',
      phase: 'swap',
      nodes: [],
    });
    const live = new Set(['alive']);
    assert.deepEqual(
      deadJournals([j('r1', 'alive'), j('r2', 'gone')], (owner) => live.has(owner)).map((x) => x.runId),
      ['r2'],
    );
  });
});

const place = (name: string, address: string, over: Partial<TargetPlace> = {}): TargetPlace => ({
  name,
  address,
  storagePort: 7000,
  cqlHost: address,
  datacenter: 'dc1',
  rack: 'r1',
  ...over,
});
const hosts = [1, 2, 3].map((i) => ({ host: `src${i}`, datacenter: 'dc1', rack: 'r1' }));

function refuses(places: TargetPlace[], match: RegExp): void {
  assert.throws(
    () => checkTargetPlaces(places, hosts),
    (err: unknown) => err instanceof CbrError && err.code === 'CBR_ERR_INVALID_ARGUMENT' && match.test(err.message),
  );
}

describe('cluster restore: targets that cannot form the restored cluster are refused before any node is touched', () => {
  it('accepts nodes on addresses of their own in the source hosts datacenter and rack (loopback sandboxes too)', () => {
    checkTargetPlaces([place('n1', '10.0.0.1'), place('n2', '10.0.0.2'), place('n3', '10.0.0.3')], hosts);
    checkTargetPlaces([place('n1', '127.0.0.1'), place('n2', '127.0.0.2'), place('n3', '127.0.0.3')], hosts);
    // Same address, other storage ports: separate endpoints.
    checkTargetPlaces([place('n1', '127.0.0.1'), place('n2', '127.0.0.1', { storagePort: 7001 }), place('n3', '127.0.0.1', { storagePort: 7002 })], hosts);
  });

  it('two nodes on one storage address (stock listen_address: localhost) would form separate rings', () => {
    refuses(
      [place('n1', 'localhost', { cqlHost: 'localhost' }), place('n2', 'localhost'), place('n3', '127.0.0.3')],
      /n1 and n2 both use storage address localhost:7000/,
    );
  });

  it('a loopback seed while other nodes run on other machines', () => {
    refuses(
      [place('n1', 'localhost'), place('n2', '10.0.0.2'), place('n3', '10.0.0.3')],
      /the seed n1 listens on loopback \(localhost\) while n2, n3 run elsewhere/,
    );
    refuses([place('n1', '127.0.0.1'), place('n2', '127.0.0.2', { cqlHost: 'db2.example' }), place('n3', '127.0.0.3')], /while n2 run elsewhere/);
    assert.ok(isLoopback('::1') && isLoopback('[::1]') && isLoopback('127.0.1.1') && !isLoopback('10.0.0.1'));
  });

  it('a node in another datacenter or rack than the source host it takes the data of (Cassandra 5.0 would refuse to start it)', () => {
    refuses(
      [place('n1', '10.0.0.1'), place('n2', '10.0.0.2', { datacenter: 'dc2' }), place('n3', '10.0.0.3')],
      /n2 is in datacenter dc2, rack r1 but takes src2's data from datacenter dc1, rack r1/,
    );
    refuses([place('n1', '10.0.0.1'), place('n2', '10.0.0.2'), place('n3', '10.0.0.3', { rack: 'r9' })], /n3 is in datacenter dc1, rack r9/);
    // Not readable (another snitch): not refused here.
    checkTargetPlaces([place('n1', '10.0.0.1', { datacenter: null, rack: null }), place('n2', '10.0.0.2'), place('n3', '10.0.0.3')], hosts);
  });

  it('reads the place from the yaml and, for GossipingPropertyFileSnitch, cassandra-rackdc.properties beside it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cbr-place-'));
    const yaml = join(dir, 'cassandra.yaml');
    const profile = { name: 'n1', cassandraYaml: yaml, cql: { host: '10.0.0.9' } } as Profile;
    writeFileSync(yaml, 'listen_address: 10.0.0.1\nstorage_port: 7010\nendpoint_snitch: org.apache.cassandra.locator.GossipingPropertyFileSnitch\n');
    writeFileSync(join(dir, 'cassandra-rackdc.properties'), '# where\ndc=east\nrack = r2\n');
    assert.deepEqual(await readTargetPlace(profile), {
      name: 'n1',
      address: '10.0.0.1',
      storagePort: 7010,
      cqlHost: '10.0.0.9',
      datacenter: 'east',
      rack: 'r2',
    });
    writeFileSync(yaml, 'broadcast_address: 192.168.0.1\nlisten_address: 10.0.0.1\nendpoint_snitch: SimpleSnitch\n');
    assert.deepEqual(await readTargetPlace(profile), {
      name: 'n1',
      address: '192.168.0.1',
      storagePort: 7000,
      cqlHost: '10.0.0.9',
      datacenter: 'datacenter1',
      rack: 'rack1',
    });
    writeFileSync(yaml, 'endpoint_snitch: Ec2Snitch\n');
    assert.deepEqual(await readTargetPlace(profile), { name: 'n1', address: '10.0.0.9', storagePort: 7000, cqlHost: '10.0.0.9', datacenter: null, rack: null });
  });
});
