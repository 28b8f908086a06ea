import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fromPromise } from 'xstate';
import { CbrError } from '../../../src/core/errors.ts';
import { createLogger } from '../../../src/core/log.ts';
import type { BackupInput } from '../../../src/machines/backup.machine.ts';
import type { RestoreInput } from '../../../src/machines/restore.machine.ts';
import { type Running, WorkflowRuntime } from '../../../src/runtime/runtime.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { everyStep } from '../../fixtures/steps.ts';

// Every step waits for the gate; then the first step fails, so each workflow ends (failed) once the gate opens.
let open!: () => void;
let gate = new Promise<void>((r) => {
  open = r;
});
// biome-ignore lint/suspicious/noExplicitAny: one fake serves every step
const held = fromPromise<any, any>(async () => {
  await gate;
  throw new CbrError('CBR_ERR_NODE_NOT_RUNNING', 'fake node is down');
});
const steps = everyStep(held);

const storage = { driver: 'local' as const, root: '/nonexistent', container: 'c' };
const backup = (id: string, profilePath: string): BackupInput => ({
  workflowId: id,
  backupId: id,
  name: id,
  description: '',
  profilePath,
  storage,
  compression: 'zstd',
  keySource: null,
  minFreePercent: 10,
  rateLimit: null,
  startedAt: new Date().toISOString(),
});
const restore = (id: string, profilePath: string): RestoreInput => ({
  workflowId: id,
  backupId: 'b',
  instanceName: 'i',
  clusterName: 'i',
  profilePath,
  storage,
  passwordFile: '/nonexistent/pw',
  superuser: 'cassandra',
  keySource: null,
  force: true,
  startedAt: new Date().toISOString(),
});

describe('one node, one restore', () => {
  it('refuses a restore or backup while a restore is active on the node; backups run side by side; other nodes are free', async () => {
    const runtime = new WorkflowRuntime({ stateDb: new StateDb(':memory:'), env: {}, log: createLogger({ level: 'error', sink: () => {} }), steps });
    const runs: Running[] = [(await runtime.startBackup(backup('b1', '/n1/profile.json')))!, (await runtime.startBackup(backup('b2', '/n1/profile.json')))!];
    assert.equal(runs.length, 2, 'two backups of one node at once');
    await assert.rejects(runtime.startRestore(restore('r0', '/n1/profile.json')), (err: CbrError) => {
      assert.equal(err.code, 'CBR_ERR_WORKFLOW_CONFLICT');
      assert.match(err.message, /^backup b[12] is still active on this node/);
      return true;
    });
    runs.push((await runtime.startRestore(restore('r1', '/n2/profile.json')))!);
    await assert.rejects(runtime.startRestore(restore('r2', '/n2/profile.json')), { code: 'CBR_ERR_WORKFLOW_CONFLICT' });
    await assert.rejects(runtime.startBackup(backup('b3', '/n2/profile.json')), /restore r1 is still active on this node/);
    assert.equal(await runtime.startRestore(restore('r1', '/n2/profile.json')), null, 'the same workflow id again is a duplicate, not a conflict');
    open();
    for (const r of runs) assert.equal((await r.done).state, 'failed');
    gate = Promise.resolve();
    const after = await runtime.startRestore(restore('r3', '/n2/profile.json'));
    assert.ok(after, 'free again once the restore ended');
    await after.done;
  });
});
