import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import { UiModel } from '../../../src/ui/model.ts';

const at = (s: number) => new Date(Date.UTC(2026, 10, 26, 12, 0, s)).toISOString();
const ev = (e: Partial<BusEvent> & { type: BusEvent['type'] }, s: number, seq: number): BusEvent =>
  ({
    host: 'h1',
    workflowId: 'w1',
    kind: 'backup',
    at: at(s),
    eventId: `h1:${seq}`,
    ...e,
  }) as BusEvent;

describe('the live view model', () => {
  it('folds states into a history, progress into rate and ETA, and a result into the final state', () => {
    const m = new UiModel();
    m.apply(ev({ type: 'state', state: 'verifyingNode', status: 'active', error: null }, 0, 1));
    m.apply(ev({ type: 'state', state: 'streaming', status: 'active', error: null }, 1, 2));
    m.apply(ev({ type: 'progress', step: 'streaming', progress: { bytes: 0, files: 0, totalBytes: 1000, totalFiles: 4, storedBytes: 0 } }, 1, 3));
    const mid = m.apply(
      ev({ type: 'progress', step: 'streaming', progress: { bytes: 400, files: 2, totalBytes: 1000, totalFiles: 4, storedBytes: 100 } }, 3, 4),
    )!;
    assert.equal(mid.progress!.rate, 200, '400 bytes in 2 s');
    assert.equal(mid.progress!.etaSeconds, 3, '600 bytes left at 200 B/s');
    m.apply(ev({ type: 'progress', step: 'streaming', progress: { bytes: 1000, files: 4, totalBytes: 1000, totalFiles: 4, storedBytes: 300 } }, 4, 5));
    m.apply(ev({ type: 'state', state: 'completed', status: 'done', error: null }, 5, 6));
    const w = m.apply(ev({ type: 'result', state: 'completed', status: 'done', error: null, result: { backupId: 'w1' } }, 5, 7))!;
    assert.deepEqual(
      w.history.map((h) => h.state),
      ['verifyingNode', 'streaming', 'completed'],
    );
    assert.equal(w.state, 'completed');
    assert.equal(w.status, 'done');
    assert.equal(w.progress!.bytes, 1000);
    assert.equal(w.progress!.etaSeconds, 0);
    assert.deepEqual(w.result, { backupId: 'w1' });
    assert.equal(w.startedAt, at(0));
    assert.equal(w.updatedAt, at(5));
  });

  it('remembers the state a workflow failed in and keeps its coded error', () => {
    const m = new UiModel();
    m.apply(ev({ type: 'state', kind: 'restore', state: 'checking', status: 'active', error: null }, 0, 1));
    m.apply(ev({ type: 'state', kind: 'restore', state: 'unpacking', status: 'active', error: null }, 1, 2));
    const error = { code: 'CBR_ERR_ARCHIVE_CORRUPT', message: 'bad block', retryable: false };
    m.apply(ev({ type: 'state', kind: 'restore', state: 'rollingBack.discardingStaging', status: 'active', error }, 2, 3));
    const w = m.apply(ev({ type: 'state', kind: 'restore', state: 'failed', status: 'done', error }, 3, 4))!;
    assert.equal(w.failedIn, 'unpacking');
    assert.equal(w.error?.code, 'CBR_ERR_ARCHIVE_CORRUPT');
    assert.equal(w.history[2]!.error?.code, 'CBR_ERR_ARCHIVE_CORRUPT');
  });

  it('ignores redelivered events, keeps rejections apart, and skips non-workflow results', () => {
    const m = new UiModel();
    const first = ev({ type: 'state', state: 'verifyingNode', status: 'active', error: null }, 0, 1);
    assert.ok(m.apply(first));
    assert.equal(m.apply(first), null, 'same eventId twice');
    assert.equal(
      m.apply(ev({ type: 'rejected', workflowId: 'c9', kind: 'command', error: { code: 'CBR_ERR_COMMAND_INVALID', message: 'x', retryable: false } }, 1, 2)),
      null,
    );
    assert.equal(m.apply(ev({ type: 'result', workflowId: 'c10', kind: 'backup.delete', state: 'completed', status: 'done' }, 1, 3)), null);
    const s = m.snapshot();
    assert.equal(s.workflows.length, 1);
    assert.equal(s.workflows[0]!.history.length, 1);
    assert.equal(s.rejected[0]!.error?.code, 'CBR_ERR_COMMAND_INVALID');
  });

  it('stays bounded: the oldest finished workflows are dropped first, active ones kept', () => {
    const m = new UiModel({ maxWorkflows: 10 });
    m.apply(ev({ type: 'state', workflowId: 'active-0', state: 'streaming', status: 'active', error: null }, 0, 0));
    for (let i = 1; i <= 20; i++) m.apply(ev({ type: 'state', workflowId: `w${i}`, state: 'completed', status: 'done', error: null }, i, i));
    const ids = m.snapshot().workflows.map((w) => w.id);
    assert.equal(ids.length, 10);
    assert.ok(ids.includes('active-0'));
    assert.ok(ids.includes('w20') && !ids.includes('w1'));
  });

  it("shows a cluster backup with one row per host beneath it, following its parts' own events", () => {
    const m = new UiModel();
    m.apply(ev({ type: 'state', workflowId: 'cb', kind: 'clusterBackup', host: 'h1', state: 'startingHosts', status: 'active', error: null }, 1, 1));
    const part = m.apply(ev({ type: 'state', workflowId: 'cb-2', host: 'h2', eventId: 'h2:1', state: 'holding', status: 'active', error: null }, 2, 0));
    assert.equal(part?.clusterOf, 'cb');
    m.apply(ev({ type: 'state', workflowId: 'cb-1', host: 'h1', eventId: 'h1:2', state: 'streaming', status: 'active', error: null }, 3, 0));
    m.apply(
      ev(
        {
          type: 'progress',
          workflowId: 'cb-1',
          host: 'h1',
          eventId: 'h1:3',
          step: 'streaming',
          progress: { bytes: 5, files: 1, totalBytes: 10, totalFiles: 2, storedBytes: 4 },
        },
        4,
        0,
      ),
    );
    const rows = m.get('cb')?.hosts ?? [];
    assert.deepEqual(
      rows.map((r) => [r.n, r.host, r.phase, r.state, r.progress?.bytes ?? null]),
      [
        [1, 'h1', 'started', 'streaming', 5],
        [2, 'h2', 'snapshotted', 'holding', null],
      ],
    );
    // An ordinary backup is no part of anything.
    assert.equal(
      m.apply(ev({ type: 'state', workflowId: 'nightly-1', host: 'h3', eventId: 'h3:1', state: 'streaming', status: 'active', error: null }, 5, 0))?.clusterOf,
      undefined,
    );
  });
});
