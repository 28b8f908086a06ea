import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClusterGroups, formatClusterRows, phaseOfPartState, splitPartId } from '../../../src/bus/clusterParts.ts';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import { describeGrouped } from '../../../src/cli/commands/watch.ts';

const at = '2026-11-30T22:00:00.000Z';
const state = (host: string, workflowId: string, kind: string, s: string, error: BusEvent['error'] = null): BusEvent => ({
  type: 'state',
  host,
  workflowId,
  kind,
  at,
  state: s,
  status: s === 'completed' || s === 'failed' ? 'done' : 'active',
  error,
});
const progress = (host: string, workflowId: string, bytes: number): BusEvent => ({
  type: 'progress',
  host,
  workflowId,
  kind: 'backup',
  at,
  step: 'streaming',
  progress: { bytes, files: 1, totalBytes: 200, totalFiles: 2, storedBytes: bytes },
});
const failedUpload = { code: 'CBR_ERR_STORAGE_FAILED', message: 'upload failed', retryable: true };

describe('cluster backup rows (cbr watch, cbr ui)', () => {
  it('remembers only parts of cluster backups seen, and forgets the oldest cluster backup past its limit', () => {
    const g = new ClusterGroups({ limit: 2 });
    for (let i = 1; i <= 50; i++) g.see(state('h1', `nightly-${i}`, 'backup', 'completed'));
    assert.equal(g.partCount, 0, 'backups of no cluster backup are not kept');
    for (const id of ['c1', 'c2', 'c3']) {
      g.see(state('h1', id, 'clusterBackup', 'startingHosts'));
      g.see(state('h2', `${id}-1`, 'backup', 'holding'));
    }
    assert.deepEqual(
      ['c1', 'c2', 'c3'].map((id) => g.isCluster(id)),
      [false, true, true],
    );
    assert.equal(g.partCount, 2);
    assert.deepEqual(g.rows('c1'), []);
  });

  it('splits part ids and leaves other ids alone', () => {
    assert.deepEqual(splitPartId('cb1-3'), { clusterId: 'cb1', n: 3 });
    assert.deepEqual(splitPartId('a-b-12'), { clusterId: 'a-b', n: 12 });
    assert.equal(splitPartId('cb1'), null);
    assert.equal(splitPartId('cb1-0'), null);
    assert.equal(splitPartId('cb1-x'), null);
  });

  it('derives a phase from a part state until the coordinator says it', () => {
    assert.deepEqual([null, 'snapshotting', 'holding', 'streaming', 'completed', 'failed'].map(phaseOfPartState), [
      'pending',
      'started',
      'snapshotted',
      'started',
      'uploaded',
      'failed',
    ]);
  });

  it('groups the parts of a seen cluster backup beneath it, one row per host, with state, progress and error', () => {
    const g = new ClusterGroups();
    // A backup of another host whose id merely ends in -<n> belongs to no cluster.
    assert.equal(g.see(state('h9', 'nightly-2', 'backup', 'snapshotting')), null);
    assert.equal(g.see(state('h1', 'cb', 'clusterBackup', 'startingHosts')), null);
    assert.deepEqual(g.see(state('h1', 'cb-1', 'backup', 'holding')), { clusterId: 'cb', n: 1 });
    assert.deepEqual(g.see(state('h2', 'cb-2', 'backup', 'streaming')), { clusterId: 'cb', n: 2 });
    g.see(progress('h2', 'cb-2', 50));
    g.see(state('h3', 'cb-3', 'backup', 'failed', failedUpload));
    assert.equal(g.isCluster('cb'), true);
    assert.equal(g.isCluster('cb-1'), false);
    assert.deepEqual(
      g.rows('cb').map((r) => [r.n, r.host, r.phase, r.state, r.progress?.bytes ?? null, r.error?.code ?? null]),
      [
        [1, 'h1', 'snapshotted', 'holding', null, null],
        [2, 'h2', 'started', 'streaming', 50, null],
        [3, 'h3', 'failed', 'failed', null, 'CBR_ERR_STORAGE_FAILED'],
      ],
    );
    assert.deepEqual(g.rows('nightly'), []);
  });

  it("takes each host's phase and error from the coordinator's result, hosts it never heard from included", () => {
    const g = new ClusterGroups();
    g.see(state('h1', 'cb', 'clusterBackup', 'startingHosts'));
    g.see(state('h1', 'cb-1', 'backup', 'holding'));
    const hosts = [
      { host: 'h1', phase: 'aborted', error: null },
      { host: 'h2', phase: 'failed', error: { code: 'CBR_ERR_NODE_DOWN', message: 'h2 is down', retryable: true } },
    ];
    const result: BusEvent = {
      type: 'result',
      host: 'h1',
      workflowId: 'cb',
      kind: 'clusterBackup',
      at,
      state: 'failed',
      status: 'done',
      error: { code: 'CBR_ERR_CLUSTER_BACKUP_FAILED', message: '1 of 2 hosts failed', retryable: true },
      result: { backupId: 'cb', hosts },
    };
    const text = describeGrouped(g, result).split('\n');
    assert.match(text[0]!, /clusterBackup cb result failed CBR_ERR_CLUSTER_BACKUP_FAILED/);
    assert.deepEqual(text.slice(1), ['  1. h1 cb-1 aborted (holding)', '  2. h2 cb-2 failed CBR_ERR_NODE_DOWN: h2 is down', '']);
    assert.match(
      describeGrouped(g, state('h1', 'cb-1', 'backup', 'compensating.clearingSnapshot')),
      /^ {2}1\. .* h1 backup cb-1 state compensating\.clearingSnapshot\n$/,
    );
  });

  it('prints progress as a percentage beside the part state', () => {
    const g = new ClusterGroups();
    g.see(state('h1', 'cb', 'clusterBackup', 'uploading'));
    g.see(state('h1', 'cb-1', 'backup', 'streaming'));
    g.see(progress('h1', 'cb-1', 100));
    assert.deepEqual(formatClusterRows(g.rows('cb')), ['  1. h1 cb-1 started (streaming 50%)']);
  });
});
