import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, fromPromise, type SnapshotFrom, toPromise, waitFor } from 'xstate';
import { CbrError, toErrorInfo } from '../../../src/core/errors.ts';
import {
  applyOutcomes,
  type ClusterBackupInput,
  type ClusterStepInput,
  clusterBackupMachine,
  type HostOutcome,
  type RecordStepInput,
  type RingAtBarrier,
} from '../../../src/machines/clusterBackup.machine.ts';

const input: ClusterBackupInput = {
  workflowId: 'cb1',
  backupId: 'cb1',
  name: 'nightly',
  description: '',
  cluster: 'ring',
  hosts: null,
  strategy: 'full',
  concurrency: 2,
  startedAt: '2026-01-01T00:00:00Z',
};
const HOSTS = ['ring-1', 'ring-2', 'ring-3'];

type Step =
  | 'resolveHosts'
  | 'reserveBackupId'
  | 'startHostBackups'
  | 'awaitSnapshots'
  | 'readRing'
  | 'uploadHosts'
  | 'writeClusterRecord'
  | 'removeClusterRecord'
  | 'abortHosts';

const RING: RingAtBarrier = {
  clusterName: 'ring',
  partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
  hosts: HOSTS.map((_, i) => ({ hostId: `id-${i}`, address: `10.0.0.${i + 1}`, datacenter: 'dc1', rack: 'r1', tokens: [String(i)] })),
  schema: 'CREATE KEYSPACE ks;',
};

/**
 * Fake phase steps standing for the hosts' agents: each records its call and the parts it was given, answers one
 * outcome per host; `failHost` makes that host fail in that step, `throwIn` makes the step itself throw,
 * `gate` holds a step until released (a crash is taken while it is held).
 */
function fakes(
  opts: {
    failHost?: { step: Step; host: string };
    throwIn?: Step;
    gate?: { step: Step; until: Promise<void> };
    recordError?: CbrError;
    recordWarnings?: string[];
  } = {},
) {
  const calls: { step: Step; phases: string[] }[] = [];
  const phase =
    (name: Step, extra: (host: string) => Partial<HostOutcome> = () => ({})) =>
    async ({ input: i }: { input: ClusterStepInput }): Promise<HostOutcome[]> => {
      calls.push({ step: name, phases: i.parts.map((p) => `${p.host}:${p.phase}`) });
      if (opts.gate?.step === name) await opts.gate.until;
      if (opts.throwIn === name) throw new CbrError('CBR_ERR_BUS_UNAVAILABLE', `${name}: no broker`);
      return i.parts
        .filter((p) => p.phase !== 'failed')
        .map((p) =>
          opts.failHost?.step === name && opts.failHost.host === p.host
            ? { host: p.host, ok: false, error: toErrorInfo(new CbrError('CBR_ERR_STORAGE_FAILED', `${p.host} could not store`)) }
            : ({ host: p.host, ok: true, ...extra(p.host) } as HostOutcome),
        );
    };
  const actors = {
    resolveHosts: fromPromise<string[], { ctx: ClusterBackupInput }>(async () => {
      calls.push({ step: 'resolveHosts', phases: [] });
      if (opts.gate?.step === 'resolveHosts') await opts.gate.until;
      if (opts.throwIn === 'resolveHosts') throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'no agent announces cluster ring');
      return HOSTS;
    }),
    reserveBackupId: fromPromise<void, ClusterStepInput>(async () => {
      calls.push({ step: 'reserveBackupId', phases: [] });
      if (opts.gate?.step === 'reserveBackupId') await opts.gate.until;
      if (opts.throwIn === 'reserveBackupId') throw new CbrError('CBR_ERR_BACKUP_EXISTS', 'cluster backup cb1 already exists');
    }),
    startHostBackups: fromPromise(phase('startHostBackups')),
    awaitSnapshots: fromPromise(phase('awaitSnapshots', () => ({ snapshot: { files: 4, bytes: 400 } }))),
    readRing: fromPromise<RingAtBarrier, ClusterStepInput>(async () => {
      calls.push({ step: 'readRing', phases: [] });
      if (opts.gate?.step === 'readRing') await opts.gate.until;
      if (opts.throwIn === 'readRing') throw new CbrError('CBR_ERR_CQL_FAILED', 'node down');
      return RING;
    }),
    uploadHosts: fromPromise(phase('uploadHosts', (h) => ({ upload: { objectKey: `cb1/${h}.tar.zst`, size: 100, rawBytes: 400, files: 4 } }))),
    writeClusterRecord: fromPromise<{ recordKey: string; warnings?: string[] }, RecordStepInput>(async ({ input: i }) => {
      calls.push({ step: 'writeClusterRecord', phases: i.parts.map((p) => `${p.host}:${p.phase}`) });
      assert.deepEqual(i.ring, RING, 'the record is written from the ring read after the barrier');
      if (opts.gate?.step === 'writeClusterRecord') await opts.gate.until;
      if (opts.throwIn === 'writeClusterRecord') throw opts.recordError ?? new CbrError('CBR_ERR_STORAGE_FAILED', 'record refused');
      return { recordKey: 'cb1/cluster.json', ...(opts.recordWarnings ? { warnings: opts.recordWarnings } : {}) };
    }),
    removeClusterRecord: fromPromise<void, ClusterStepInput>(async () => {
      calls.push({ step: 'removeClusterRecord', phases: [] });
      if (opts.throwIn === 'removeClusterRecord') throw new CbrError('CBR_ERR_STORAGE_FAILED', 'storage down');
    }),
    abortHosts: fromPromise(phase('abortHosts')),
  };
  return { calls, steps: () => calls.map((c) => c.step), machine: clusterBackupMachine.provide({ actors }) };
}

const HAPPY: Step[] = ['resolveHosts', 'reserveBackupId', 'startHostBackups', 'awaitSnapshots', 'readRing', 'uploadHosts', 'writeClusterRecord'];

describe('cluster backup machine (coordinator)', () => {
  it('starts every host, waits for all snapshots, uploads, then writes the cluster record last', async () => {
    const f = fakes();
    const actor = createActor(f.machine, { input }).start();
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'completed');
    assert.deepEqual(f.steps(), HAPPY);
    // The barrier: uploads are released only once every host is snapshotted; the record sees every host uploaded.
    assert.deepEqual(
      f.calls[5]?.phases,
      HOSTS.map((h) => `${h}:snapshotted`),
    );
    assert.deepEqual(
      f.calls[6]?.phases,
      HOSTS.map((h) => `${h}:uploaded`),
    );
    assert.equal(out.recordKey, 'cb1/cluster.json');
    assert.equal(out.error, null);
    assert.deepEqual(
      out.hosts.map((h) => h.phase),
      ['uploaded', 'uploaded', 'uploaded'],
    );
    const ctx = actor.getSnapshot().context;
    assert.deepEqual(ctx.parts[0]?.snapshot, { files: 4, bytes: 400 });
    assert.equal(ctx.parts[2]?.upload?.objectKey, 'cb1/ring-3.tar.zst');
  });

  for (const step of ['startHostBackups', 'awaitSnapshots', 'uploadHosts'] as const) {
    it(`a host failing in ${step} aborts every host and fails naming that host's error`, async () => {
      const f = fakes({ failHost: { step, host: 'ring-2' } });
      const actor = createActor(f.machine, { input }).start();
      const out = await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'failed');
      assert.deepEqual(f.steps(), [...HAPPY.slice(0, HAPPY.indexOf(step) + 1), 'abortHosts']);
      assert.equal(out.error?.code, 'CBR_ERR_CLUSTER_BACKUP_FAILED');
      assert.match(out.error?.message ?? '', /1 of 3 hosts failed; ring-2: CBR_ERR_STORAGE_FAILED: ring-2 could not store/);
      assert.deepEqual(
        out.hosts.map((h) => [h.host, h.phase, h.error?.code ?? null]),
        [
          ['ring-1', 'aborted', null],
          ['ring-2', 'failed', 'CBR_ERR_STORAGE_FAILED'],
          ['ring-3', 'aborted', null],
        ],
      );
      // Every host is told to drop its part, the failed one included (its snapshot may be there).
      assert.equal(f.calls.at(-1)?.phases.length, 3);
    });
  }

  it('a coordinator error (no broker, record refused) aborts the hosts too and keeps the cause', async () => {
    for (const step of ['awaitSnapshots', 'writeClusterRecord'] as const) {
      const f = fakes({ throwIn: step });
      const actor = createActor(f.machine, { input }).start();
      const out = await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'failed');
      assert.equal(f.steps().at(-1), 'abortHosts');
      assert.equal(out.error?.code, step === 'awaitSnapshots' ? 'CBR_ERR_BUS_UNAVAILABLE' : 'CBR_ERR_STORAGE_FAILED');
    }
  });

  it('a record write that fails removes the record before any host drops its part; if it cannot, the parts stay', async () => {
    const f = fakes({ throwIn: 'writeClusterRecord' });
    const out = await toPromise(createActor(f.machine, { input }).start());
    assert.deepEqual(f.steps().slice(-3), ['writeClusterRecord', 'removeClusterRecord', 'abortHosts']);
    assert.equal(out.error?.code, 'CBR_ERR_STORAGE_FAILED');
    const stuck = fakes({ throwIn: 'writeClusterRecord' });
    const removing = stuck.machine.provide({
      actors: {
        removeClusterRecord: fromPromise<void, ClusterStepInput>(async () => {
          throw new CbrError('CBR_ERR_STORAGE_FAILED', 'storage down');
        }),
      },
    });
    const left = await toPromise(createActor(removing, { input }).start());
    assert.equal(stuck.steps().includes('abortHosts'), false, 'no host drops a part a record may name');
    assert.match(left.warnings.join('\n'), /removeClusterRecord/);
  });

  it('an id taken by another run is refused before any host is asked anything', async () => {
    const f = fakes({ throwIn: 'reserveBackupId' });
    const actor = createActor(f.machine, { input }).start();
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.deepEqual(f.steps(), ['resolveHosts', 'reserveBackupId']);
    assert.equal(out.error?.code, 'CBR_ERR_BACKUP_EXISTS');
  });

  it("a record step that finds another run's record or parts (CONFLICT) fails touching nothing: no withdraw, no abort", async () => {
    const f = fakes({ throwIn: 'writeClusterRecord', recordError: new CbrError('CBR_ERR_WORKFLOW_CONFLICT', 'another cluster record cb1') });
    const actor = createActor(f.machine, { input }).start();
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.deepEqual(f.steps(), HAPPY);
    assert.equal(out.error?.code, 'CBR_ERR_WORKFLOW_CONFLICT');
  });

  it('the ring is read right after the barrier: a CQL failure there aborts held snapshots, before any upload', async () => {
    const f = fakes({ throwIn: 'readRing' });
    const out = await toPromise(createActor(f.machine, { input }).start());
    assert.deepEqual(f.steps(), [...HAPPY.slice(0, HAPPY.indexOf('readRing') + 1), 'abortHosts']);
    assert.equal(out.error?.code, 'CBR_ERR_CQL_FAILED');
  });

  it('a warning of the record step (marker left) is kept on the completed run', async () => {
    const f = fakes({ recordWarnings: ['writeClusterRecord: pending marker left: CBR_ERR_STORAGE_FAILED: down'] });
    const actor = createActor(f.machine, { input }).start();
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'completed');
    assert.deepEqual(out.warnings, ['writeClusterRecord: pending marker left: CBR_ERR_STORAGE_FAILED: down']);
  });

  it('a cancel while the record is written is not taken: the backup completes', async () => {
    let release!: () => void;
    const f = fakes({ gate: { step: 'writeClusterRecord', until: new Promise<void>((r) => (release = r)) } });
    const actor = createActor(f.machine, { input }).start();
    while (actor.getSnapshot().value !== 'recording') await new Promise((r) => setImmediate(r));
    actor.send({ type: 'CANCEL', reason: 'operator' });
    release();
    await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'completed');
  });

  it('a host the barrier step gives no answer for is failed, never let through', () => {
    const parts = HOSTS.map((host) => ({ host, phase: 'started' as const, error: null }));
    const after = applyOutcomes(
      parts,
      [
        { host: 'ring-1', ok: true },
        { host: 'ring-3', ok: true },
      ],
      'snapshotted',
    );
    assert.deepEqual(
      after.map((p) => [p.host, p.phase, p.error?.code ?? null]),
      [
        ['ring-1', 'snapshotted', null],
        ['ring-2', 'failed', 'CBR_ERR_INTERNAL'],
        ['ring-3', 'snapshotted', null],
      ],
    );
  });

  it('a host the phase stopped before (keep: another host failed first) stays as it was, for the abort', () => {
    const parts = HOSTS.map((host) => ({ host, phase: 'snapshotted' as const, error: null }));
    const error = { code: 'CBR_ERR_STORAGE_FAILED' as const, message: 'swift down', retryable: true };
    const after = applyOutcomes(
      parts,
      [
        { host: 'ring-1', ok: true, upload: { objectKey: 'k', size: 1, rawBytes: 1, files: 1 } },
        { host: 'ring-2', ok: false, error },
        { host: 'ring-3', ok: true, keep: true },
      ],
      'uploaded',
    );
    assert.deepEqual(
      after.map((p) => [p.host, p.phase, p.error?.code ?? null]),
      [
        ['ring-1', 'uploaded', null],
        ['ring-2', 'failed', 'CBR_ERR_STORAGE_FAILED'],
        ['ring-3', 'snapshotted', null],
      ],
    );
  });

  it('fails at once, asking nothing of any host, when the hosts cannot be resolved', async () => {
    const f = fakes({ throwIn: 'resolveHosts' });
    const actor = createActor(f.machine, { input }).start();
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.deepEqual(f.steps(), ['resolveHosts']);
    assert.equal(out.error?.code, 'CBR_ERR_INVALID_ARGUMENT');
  });

  it('CANCEL while uploading aborts every host', async () => {
    const f = fakes({ gate: { step: 'uploadHosts', until: new Promise(() => {}) } });
    const actor = createActor(f.machine, { input }).start();
    await waitFor(actor, (s) => s.matches('uploading'));
    actor.send({ type: 'CANCEL', reason: 'operator' });
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.equal(f.steps().at(-1), 'abortHosts');
    assert.equal(out.error?.code, 'CBR_ERR_ABORTED');
  });

  // A crash in each state that runs a step: the persisted snapshot, through JSON, resumes in that state, the
  // in-flight step runs again (it is idempotent), and the run ends completed, or failed after aborting the hosts.
  type State = Parameters<SnapshotFrom<typeof clusterBackupMachine>['matches']>[0];
  const RESUMABLE: { state: State; step: Step; ends: 'completed' | 'failed'; rest: Step[] }[] = [
    { state: 'resolvingHosts', step: 'resolveHosts', ends: 'completed', rest: HAPPY },
    { state: 'reservingId', step: 'reserveBackupId', ends: 'completed', rest: HAPPY.slice(1) },
    { state: 'startingHosts', step: 'startHostBackups', ends: 'completed', rest: HAPPY.slice(2) },
    { state: 'awaitingSnapshots', step: 'awaitSnapshots', ends: 'completed', rest: HAPPY.slice(3) },
    { state: 'readingRing', step: 'readRing', ends: 'completed', rest: HAPPY.slice(4) },
    { state: 'uploading', step: 'uploadHosts', ends: 'completed', rest: HAPPY.slice(5) },
    { state: 'recording', step: 'writeClusterRecord', ends: 'completed', rest: HAPPY.slice(6) },
  ];
  for (const r of RESUMABLE) {
    it(`resumes from a snapshot persisted in ${r.state} and ends ${r.ends}`, async () => {
      const first = fakes({ gate: { step: r.step, until: new Promise(() => {}) } });
      const actor = createActor(first.machine, { input }).start();
      await waitFor(actor, (s) => s.matches(r.state));
      const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
      actor.stop(); // the coordinator's process dies here

      const second = fakes();
      const resumed = createActor(second.machine, { snapshot: persisted as SnapshotFrom<typeof clusterBackupMachine>, input }).start();
      const out = await toPromise(resumed);
      assert.equal(resumed.getSnapshot().value, r.ends);
      assert.deepEqual(second.steps(), r.rest);
      assert.equal(out.error, null);
      assert.deepEqual(
        out.hosts.map((h) => h.phase),
        ['uploaded', 'uploaded', 'uploaded'],
      );
    });
  }

  it('resumes from a snapshot persisted in aborting: the hosts are told again and the run fails naming the host', async () => {
    const first = fakes({ failHost: { step: 'awaitSnapshots', host: 'ring-3' }, gate: { step: 'abortHosts', until: new Promise(() => {}) } });
    const actor = createActor(first.machine, { input }).start();
    await waitFor(actor, (s) => s.matches('aborting'));
    const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
    actor.stop();

    const second = fakes();
    const resumed = createActor(second.machine, { snapshot: persisted as SnapshotFrom<typeof clusterBackupMachine>, input }).start();
    const out = await toPromise(resumed);
    assert.equal(resumed.getSnapshot().value, 'failed');
    assert.deepEqual(second.steps(), ['abortHosts']);
    assert.equal(out.error?.code, 'CBR_ERR_CLUSTER_BACKUP_FAILED');
    assert.match(out.error?.message ?? '', /ring-3: CBR_ERR_STORAGE_FAILED/);
  });

  it('a host that cannot drop its part is a warning on the failed run, not hidden', async () => {
    const f = fakes({ failHost: { step: 'abortHosts', host: 'ring-1' }, throwIn: 'uploadHosts' });
    const actor = createActor(f.machine, { input }).start();
    const out = await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.equal(out.warnings.length, 1);
    assert.match(out.warnings[0] ?? '', /^abortHosts: ring-1: CBR_ERR_STORAGE_FAILED/);
  });
});
