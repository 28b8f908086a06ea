import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createLogger } from '../../../src/core/log.ts';
import { CbrMetrics, type OutcomeSample, outcomeSample, seedFromEnded, workflowObserver } from '../../../src/metrics/metrics.ts';
import { parseListen, serveMetrics } from '../../../src/metrics/serve.ts';
import { parseExposition, writeTextfile } from '../../../src/metrics/textfile.ts';
import { StateDb } from '../../../src/state/stateDb.ts';

const dir = mkdtempSync(join(tmpdir(), 'cbr-metrics-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return parseExposition(text).find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

const base: OutcomeSample = {
  kind: 'backup',
  outcome: 'completed',
  code: '',
  seconds: 42,
  host: 'h1',
  strategy: 'full',
  bytesRead: 1000,
  bytesStored: 400,
  at: 1_800_000_000,
};

describe('metrics: one registry, bounded labels', () => {
  it('records an outcome: count by kind/outcome/code, duration, bytes, last success and last run', async () => {
    const m = new CbrMetrics();
    m.recordOutcome(base);
    m.recordOutcome({ ...base, outcome: 'failed', code: 'CBR_ERR_SNAPSHOT_FAILED', seconds: 3, bytesRead: 0, bytesStored: 0, at: 1_800_000_100 });
    const text = await m.text();
    assert.equal(value(text, 'cbr_workflows_total', { kind: 'backup', outcome: 'completed', code: '' }), 1);
    assert.equal(value(text, 'cbr_workflows_total', { kind: 'backup', outcome: 'failed', code: 'CBR_ERR_SNAPSHOT_FAILED' }), 1);
    assert.equal(value(text, 'cbr_workflow_duration_seconds_sum', { kind: 'backup', outcome: 'completed' }), 42);
    assert.equal(value(text, 'cbr_workflow_duration_seconds_bucket', { kind: 'backup', outcome: 'completed', le: '60' }), 1);
    assert.equal(value(text, 'cbr_workflow_duration_seconds_bucket', { kind: 'backup', outcome: 'completed', le: '30' }), 0);
    assert.equal(value(text, 'cbr_read_bytes_total', { kind: 'backup' }), 1000);
    assert.equal(value(text, 'cbr_stored_bytes_total', { kind: 'backup' }), 400);
    // A failure after a success keeps the success's time and says the last run failed.
    assert.equal(value(text, 'cbr_last_success_timestamp_seconds', { kind: 'backup', host: 'h1', strategy: 'full' }), 1_800_000_000);
    assert.equal(value(text, 'cbr_last_run_success', { kind: 'backup', host: 'h1', strategy: 'full' }), 0);
    assert.equal(value(text, 'cbr_workflow_last_duration_seconds', { kind: 'backup', host: 'h1', strategy: 'full' }), 3);
    // No id of any kind as a label.
    for (const s of parseExposition(text))
      assert.deepEqual(
        Object.keys(s.labels).filter((k) => !['kind', 'outcome', 'code', 'host', 'strategy', 'le'].includes(k)),
        [],
      );
  });

  it('maps a final event: a full backup reads its raw bytes and stores its size; an incremental one its new bytes; a failure its code', () => {
    const row = { createdAt: '2026-01-01T00:00:00.000Z', input: { strategy: 'incremental' } };
    const at = '2026-01-01T00:01:30.000Z';
    const result = { rawBytes: 900, size: 300, newBytes: 100, newStoredBytes: 40, strategy: 'incremental' };
    const inc = outcomeSample(
      { type: 'state', workflowId: 'w', kind: 'backup', state: 'completed', status: 'done', at, error: null, output: { result } as never },
      row,
      'h',
    );
    assert.deepEqual(
      { s: inc.seconds, r: inc.bytesRead, w: inc.bytesStored, st: inc.strategy, o: inc.outcome, code: inc.code, at: inc.at },
      { s: 90, r: 100, w: 40, st: 'incremental', o: 'completed', code: '', at: Date.parse(at) / 1000 },
    );
    const full = outcomeSample(
      {
        type: 'state',
        workflowId: 'w',
        kind: 'backup',
        state: 'completed',
        status: 'done',
        at,
        error: null,
        output: { result: { ...result, strategy: 'full' } } as never,
      },
      { createdAt: row.createdAt, input: {} },
      'h',
    );
    assert.deepEqual([full.bytesRead, full.bytesStored, full.strategy], [900, 300, 'full']);
    const failed = outcomeSample(
      {
        type: 'state',
        workflowId: 'w',
        kind: 'restore',
        state: 'failed',
        status: 'done',
        at,
        error: { code: 'CBR_ERR_STORAGE_FAILED', message: 'x', retryable: false },
      },
      { createdAt: row.createdAt, input: {} },
      'h',
      777,
    );
    assert.deepEqual([failed.outcome, failed.code, failed.strategy, failed.bytesRead], ['failed', 'CBR_ERR_STORAGE_FAILED', '', 777]);
  });

  it('the observer records only final events, with the restore bytes its progress reported', async () => {
    const m = new CbrMetrics();
    const observe = workflowObserver(m, 'h2', () => ({ createdAt: '2026-01-01T00:00:00.000Z', input: {} }));
    const at = '2026-01-01T00:00:10.000Z';
    observe({ type: 'progress', workflowId: 'r', kind: 'restore', step: 'unpacking', progress: { bytes: 5000, files: 3 } as never, at });
    observe({ type: 'state', workflowId: 'r', kind: 'restore', state: 'unpacking', status: 'active', at, error: null });
    assert.equal(value(await m.text(), 'cbr_workflows_total', { kind: 'restore' }), undefined);
    observe({ type: 'state', workflowId: 'r', kind: 'restore', state: 'completed', status: 'done', at, error: null, output: {} as never });
    const text = await m.text();
    assert.equal(value(text, 'cbr_workflows_total', { kind: 'restore', outcome: 'completed' }), 1);
    assert.equal(value(text, 'cbr_read_bytes_total', { kind: 'restore' }), 5000);
    assert.equal(value(text, 'cbr_last_success_timestamp_seconds', { kind: 'restore', host: 'h2', strategy: '' }), Date.parse(at) / 1000);
  });

  it("an agent starts from its state database's last outcomes, per kind and strategy", async () => {
    const db = new StateDb(':memory:');
    const add = (id: string, kind: 'backup' | 'restore', state: string, strategy: string | undefined, at: string) => {
      db.create({ id, kind, machineVersion: 1, status: 'done', state, snapshot: {}, input: strategy ? { strategy } : {}, commandId: null, ownerPid: null });
      db.db.prepare('UPDATE workflows SET updated_at = ? WHERE id = ?').run(at, id);
    };
    add('a', 'backup', 'completed', 'full', '2026-01-01T00:00:00.000Z');
    add('b', 'backup', 'failed', 'full', '2026-01-02T00:00:00.000Z');
    add('c', 'backup', 'completed', 'incremental', '2026-01-03T00:00:00.000Z');
    add('d', 'backup', 'completed', undefined, '2025-12-01T00:00:00.000Z');
    add('e', 'restore', 'failed', undefined, '2026-01-04T00:00:00.000Z');
    db.create({ id: 'f', kind: 'backup', machineVersion: 1, status: 'active', state: 'streaming', snapshot: {}, input: {}, commandId: null, ownerPid: null });
    const m = new CbrMetrics();
    seedFromEnded(m, 'h', db.lastEnded());
    m.watchAgent({ activeByState: () => db.activeByState(), outboxDepth: () => db.countEvents(), outboxOldestAgeSeconds: () => 12, busConnected: () => false });
    db.addEvent('k', '{}');
    const text = await m.text();
    const t = (iso: string) => Date.parse(iso) / 1000;
    assert.equal(value(text, 'cbr_last_success_timestamp_seconds', { kind: 'backup', strategy: 'full' }), t('2026-01-01T00:00:00.000Z'));
    assert.equal(value(text, 'cbr_last_run_success', { kind: 'backup', strategy: 'full' }), 0);
    assert.equal(value(text, 'cbr_last_success_timestamp_seconds', { kind: 'backup', strategy: 'incremental' }), t('2026-01-03T00:00:00.000Z'));
    assert.equal(value(text, 'cbr_last_run_success', { kind: 'backup', strategy: 'incremental' }), 1);
    assert.equal(value(text, 'cbr_last_success_timestamp_seconds', { kind: 'restore' }), undefined);
    assert.equal(value(text, 'cbr_last_run_success', { kind: 'restore', strategy: '' }), 0);
    assert.equal(value(text, 'cbr_workflows_active', { kind: 'backup', state: 'streaming' }), 1);
    assert.equal(value(text, 'cbr_outbox_events'), 1);
    assert.equal(value(text, 'cbr_outbox_oldest_event_age_seconds'), 12);
    assert.equal(value(text, 'cbr_bus_connected'), 0);
    db.close();
  });
});

describe('metrics textfile (node_exporter)', () => {
  it('carries counters and last successes over runs, renamed into place', async () => {
    const path = join(dir, 'cbr.prom');
    await writeTextfile(path, base);
    await writeTextfile(path, { ...base, outcome: 'failed', code: 'CBR_ERR_SNAPSHOT_FAILED', at: base.at + 60, bytesRead: 0, bytesStored: 0 });
    await writeTextfile(path, { ...base, kind: 'restore', strategy: '', at: base.at + 120 });
    const text = readFileSync(path, 'utf8');
    assert.equal(value(text, 'cbr_workflows_total', { kind: 'backup', outcome: 'completed' }), 1);
    assert.equal(value(text, 'cbr_workflows_total', { kind: 'backup', outcome: 'failed', code: 'CBR_ERR_SNAPSHOT_FAILED' }), 1);
    assert.equal(value(text, 'cbr_workflows_total', { kind: 'restore', outcome: 'completed' }), 1);
    assert.equal(value(text, 'cbr_read_bytes_total', { kind: 'backup' }), 1000);
    assert.equal(value(text, 'cbr_last_success_timestamp_seconds', { kind: 'backup', host: 'h1', strategy: 'full' }), base.at);
    assert.equal(value(text, 'cbr_last_run_success', { kind: 'backup', host: 'h1', strategy: 'full' }), 0);
    assert.equal(value(text, 'cbr_last_success_timestamp_seconds', { kind: 'restore', host: 'h1', strategy: '' }), base.at + 120);
    // One observation a file cannot add up across runs: the histogram stays out of it.
    assert.equal(value(text, 'cbr_workflow_duration_seconds_count'), undefined);
    assert.deepEqual(readdirSync(dir), ['cbr.prom'], 'no temporary file left beside it');
  });

  it('a garbled earlier file costs its bad lines only', async () => {
    const path = join(dir, 'garbled.prom');
    writeFileSync(path, 'cbr_workflows_total{kind="backup",outcome="completed",code=""} 5\ncbr_last_success_timestamp_seconds{kind="backup" 12\nnonsense\n');
    await writeTextfile(path, base);
    const text = readFileSync(path, 'utf8');
    assert.equal(value(text, 'cbr_workflows_total', { kind: 'backup', outcome: 'completed' }), 6);
    assert.equal(value(text, 'cbr_last_success_timestamp_seconds', { kind: 'backup' }), base.at);
  });

  it('parses escaped label values', () => {
    assert.deepEqual(parseExposition('m{a="x\\"y\\\\z",b="1\\n2"} 3 1700000000000'), [{ name: 'm', labels: { a: 'x"y\\z', b: '1\n2' }, value: 3 }]);
  });
});

describe('metrics endpoint', () => {
  it('serves /metrics on the address given, 404 elsewhere; a bad address is a coded error', async () => {
    assert.deepEqual(parseListen('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
    assert.deepEqual(parseListen('[::1]:9464'), { host: '::1', port: 9464 });
    for (const bad of ['9464', '127.0.0.1', '127.0.0.1:70000', 'a b:1']) assert.throws(() => parseListen(bad), { code: 'CBR_ERR_INVALID_ARGUMENT' });
    const m = new CbrMetrics({ process: true });
    m.recordOutcome(base);
    const server = await serveMetrics(m, '127.0.0.1:0', createLogger({ level: 'error', sink: () => {} }));
    try {
      const res = await fetch(server.url);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      assert.equal(value(text, 'cbr_workflows_total', { kind: 'backup', outcome: 'completed' }), 1);
      assert.ok(value(text, 'process_start_time_seconds'), 'process metrics with --metrics-listen');
      assert.equal((await fetch(server.url.replace('/metrics', '/'))).status, 404);
      assert.equal((await fetch(server.url, { method: 'POST' })).status, 405);
      await assert.rejects(serveMetrics(m, server.url.replace(/^http:\/\/|\/metrics$/g, ''), createLogger({ level: 'error', sink: () => {} })), {
        code: 'CBR_ERR_INVALID_ARGUMENT',
      });
    } finally {
      await server.close();
    }
  });
});
