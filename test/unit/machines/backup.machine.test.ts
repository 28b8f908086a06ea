import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, fromPromise, type SnapshotFrom, toPromise, waitFor } from 'xstate';
import { CbrError } from '../../../src/core/errors.ts';
import { type BackupInput, backupMachine, holdDeadline } from '../../../src/machines/backup.machine.ts';

const input: BackupInput = {
  workflowId: 'b1',
  backupId: 'b1',
  name: 'nightly',
  description: '',
  profilePath: '/nowhere/profile.json',
  storage: { driver: 'local', root: '/nowhere', container: 'database_backups' },
  compression: 'zstd',
  keySource: null,
  minFreePercent: 10,
  startedAt: '2026-01-01T00:00:00Z',
  rateLimit: null,
};

/** Fake steps that record the order they ran in; `fail` names a step to reject with a coded error. */
function fakes(opts: { fail?: string; gate?: Promise<void> } = {}) {
  const calls: string[] = [];
  const mk = <T>(name: string, out: T) =>
    // biome-ignore lint/suspicious/noExplicitAny: one fake serves steps with different inputs
    fromPromise<T, any>(async () => {
      calls.push(name);
      if (name === 'streamArchive' && opts.gate) await opts.gate;
      if (opts.fail === name) throw new CbrError('CBR_ERR_STORAGE_FAILED', `${name} broke`);
      return out;
    });
  const actors = {
    verifyNode: mk('verifyNode', { clusterName: 'c', cassandraVersion: '5.0.6' }),
    checkFreeSpace: mk('checkFreeSpace', { freeBytes: 1, freePercent: 50 }),
    clearSnapshot: mk<void>('clearSnapshot', undefined),
    takeSnapshot: mk('takeSnapshot', { files: 3, bytes: 30 }),
    streamArchive: mk('streamArchive', { objectKey: 'b1/archive.tar.zst', size: 10, sha256: 'ab', rawBytes: 30, files: 3 }),
    writeRecord: mk<void>('writeRecord', undefined),
    deleteBackupObjects: mk<void>('deleteBackupObjects', undefined),
    // The hold's deadline: `until` in the past resolves at once; otherwise it waits for its abort (a release, a cancel).
    waitUntil: fromPromise<void, { until: string }>(async ({ input: w, signal }) => {
      calls.push('waitUntil');
      if (Date.parse(w.until) <= Date.now()) return;
      await new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
    }),
  };
  return { calls, machine: backupMachine.provide({ actors }) };
}

describe('backup machine', () => {
  it('runs the steps in order and completes', async () => {
    const { calls, machine } = fakes();
    const actor = createActor(machine, { input }).start();
    await toPromise(actor);
    const snap = actor.getSnapshot();
    assert.equal(snap.value, 'completed');
    assert.deepEqual(calls, ['verifyNode', 'checkFreeSpace', 'clearSnapshot', 'takeSnapshot', 'streamArchive', 'writeRecord', 'clearSnapshot']);
    assert.equal(snap.context.result?.sha256, 'ab');
    assert.equal(snap.context.error, null);
  });

  it('clears the snapshot and deletes partial objects when streaming fails', async () => {
    const { calls, machine } = fakes({ fail: 'streamArchive' });
    const actor = createActor(machine, { input }).start();
    await toPromise(actor);
    const snap = actor.getSnapshot();
    assert.equal(snap.value, 'failed');
    assert.deepEqual(calls.slice(-3), ['streamArchive', 'deleteBackupObjects', 'clearSnapshot']);
    assert.deepEqual(snap.context.error, { code: 'CBR_ERR_STORAGE_FAILED', message: 'streamArchive broke', retryable: true });
  });

  it('fails without compensation when the node is not running (no snapshot was taken)', async () => {
    const { calls, machine } = fakes({ fail: 'verifyNode' });
    const actor = createActor(machine, { input }).start();
    await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.deepEqual(calls, ['verifyNode']);
  });

  it('survives a JSON round trip of its persisted snapshot mid-stream and re-runs the in-flight step', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const first = fakes({ gate });
    const actor = createActor(first.machine, { input }).start();
    await waitFor(actor, (s) => s.matches('streaming'));
    const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
    actor.stop(); // the process "dies" here
    release();

    const second = fakes();
    const resumed = createActor(second.machine, { snapshot: persisted as SnapshotFrom<typeof backupMachine>, input }).start();
    await toPromise(resumed);
    assert.equal(resumed.getSnapshot().value, 'completed');
    assert.deepEqual(second.calls, ['streamArchive', 'writeRecord', 'clearSnapshot']);
  });

  it('compensates on CANCEL while streaming', async () => {
    const first = fakes({ gate: new Promise(() => {}) });
    const actor = createActor(first.machine, { input }).start();
    await waitFor(actor, (s) => s.matches('streaming'));
    actor.send({ type: 'CANCEL', reason: 'operator' });
    await toPromise(actor);
    assert.equal(actor.getSnapshot().value, 'failed');
    assert.equal(actor.getSnapshot().context.error?.code, 'CBR_ERR_ABORTED');
    assert.deepEqual(first.calls.slice(-2), ['deleteBackupObjects', 'clearSnapshot']);
  });

  it('keeps progress in context', async () => {
    const { machine } = fakes({ gate: new Promise(() => {}) });
    const actor = createActor(machine, { input }).start();
    await waitFor(actor, (s) => s.matches('streaming'));
    const progress = { bytes: 5, files: 1, totalBytes: 30, totalFiles: 3, storedBytes: 2 };
    actor.send({ type: 'PROGRESS', step: 'streaming', progress });
    assert.deepEqual(actor.getSnapshot().context.progress, progress);
    actor.stop();
  });
});

describe('machines are pure', () => {
  it('machines/ imports no I/O module at runtime', async () => {
    const { readdir, readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { REPO } = await import('../../helpers/paths.ts');
    const dir = join(REPO, 'src', 'machines');
    for (const f of await readdir(dir)) {
      const text = await readFile(join(dir, f), 'utf8');
      const runtimeImports = [...text.matchAll(/^import (?!type )[^;]*from '([^']+)'/gm)].map((m) => m[1]);
      for (const spec of runtimeImports) {
        assert.ok(spec === 'xstate' || spec === './common.ts' || spec === '../core/errors.ts', `${f} imports ${spec}`);
      }
    }
  });

  describe('holding (a cluster backup part)', () => {
    const held: BackupInput = { ...input, clusterBackupId: 'c1', hold: true, holdTimeoutMs: 60_000 };

    it('waits in holding after the snapshot until RELEASE, then uploads and completes', async () => {
      const { calls, machine } = fakes();
      const actor = createActor(machine, { input: held }).start();
      const holding = await waitFor(actor, (s) => s.value === 'holding');
      assert.deepEqual(calls, ['verifyNode', 'checkFreeSpace', 'clearSnapshot', 'takeSnapshot', 'waitUntil']);
      assert.ok(holding.context.heldSince, 'the hold start is in context');
      assert.equal(holdDeadline(holding.context), new Date(Date.parse(holding.context.heldSince!) + 60_000).toISOString());
      actor.send({ type: 'RELEASE' });
      await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'completed');
      assert.deepEqual(calls.slice(5), ['streamArchive', 'writeRecord', 'clearSnapshot']);
    });

    it('keeps holding across a JSON round trip of its snapshot, with the same deadline', async () => {
      const { machine } = fakes();
      const first = createActor(machine, { input: held }).start();
      const snap = await waitFor(first, (s) => s.value === 'holding');
      const persisted = JSON.parse(JSON.stringify(first.getPersistedSnapshot()));
      first.stop();
      const again = fakes();
      const resumed = createActor(again.machine, { input: held, snapshot: persisted }).start();
      assert.equal(resumed.getSnapshot().value, 'holding');
      assert.equal(resumed.getSnapshot().context.heldSince, snap.context.heldSince);
      assert.deepEqual(again.calls, ['waitUntil'], 'only the wait re-runs');
      resumed.send({ type: 'RELEASE' });
      await toPromise(resumed);
      assert.equal(resumed.getSnapshot().value, 'completed');
    });

    it('fails with CBR_ERR_HOLD_EXPIRED and clears the snapshot when the hold passes its deadline', async () => {
      const { calls, machine } = fakes();
      const actor = createActor(machine, { input: { ...held, holdTimeoutMs: 0 } }).start();
      await toPromise(actor);
      const snap = actor.getSnapshot();
      assert.equal(snap.value, 'failed');
      assert.equal(snap.context.error?.code, 'CBR_ERR_HOLD_EXPIRED');
      assert.match(snap.context.error?.message ?? '', /cluster backup c1/);
      assert.deepEqual(calls.slice(4), ['waitUntil', 'deleteBackupObjects', 'clearSnapshot'], 'the compensation ran');
      assert.ok(!calls.includes('streamArchive'));
    });

    it('HOLD (the coordinator keeping a queued part) restarts the wait: the deadline counts again from now', async () => {
      const { calls, machine } = fakes();
      const actor = createActor(machine, { input: held }).start();
      const first = await waitFor(actor, (s) => s.value === 'holding');
      await new Promise((r) => setTimeout(r, 20));
      actor.send({ type: 'HOLD' });
      const again = actor.getSnapshot();
      assert.equal(again.value, 'holding');
      assert.ok(Date.parse(again.context.heldSince!) > Date.parse(first.context.heldSince!), 'a later hold start');
      assert.equal(calls.filter((c) => c === 'waitUntil').length, 2, 'the wait runs again with the new deadline');
      actor.send({ type: 'RELEASE' });
      await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'completed');
    });

    it('compensates on CANCEL while holding', async () => {
      const { calls, machine } = fakes();
      const actor = createActor(machine, { input: held }).start();
      await waitFor(actor, (s) => s.value === 'holding');
      actor.send({ type: 'CANCEL', reason: 'cluster aborted' });
      await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'failed');
      assert.equal(actor.getSnapshot().context.error?.code, 'CBR_ERR_ABORTED');
      assert.deepEqual(calls.slice(-2), ['deleteBackupObjects', 'clearSnapshot']);
    });

    it('a RELEASE that comes before the snapshot is remembered: it never holds', async () => {
      let open!: () => void;
      const gate = new Promise<void>((r) => {
        open = r;
      });
      const calls: string[] = [];
      const { machine } = fakes();
      const slow = machine.provide({
        actors: {
          takeSnapshot: fromPromise(async () => {
            calls.push('takeSnapshot');
            await gate;
            return { files: 1, bytes: 1 };
          }),
        },
      });
      const actor = createActor(slow, { input: held }).start();
      await waitFor(actor, (s) => s.value === 'snapshotting');
      actor.send({ type: 'RELEASE' });
      open();
      await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'completed');
      assert.equal(actor.getSnapshot().context.heldSince ?? null, null);
    });

    it('a backup without hold never enters holding; a RELEASE changes nothing', async () => {
      const { calls, machine } = fakes();
      const actor = createActor(machine, { input }).start();
      actor.send({ type: 'RELEASE' });
      await toPromise(actor);
      assert.equal(actor.getSnapshot().value, 'completed');
      assert.ok(!calls.includes('waitUntil'));
    });
  });
});
