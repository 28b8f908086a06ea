import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fromPromise } from 'xstate';
import { Agent } from '../../../src/bus/agent.ts';
import { parseStatusQuery, parseStatusReply, type StatusReply, statusReplyTo } from '../../../src/bus/schemas/status.ts';
import { StatusBook } from '../../../src/bus/statusBook.ts';
import { statusEvents } from '../../../src/bus/subscriber.ts';
import { livenessFor, outageDeadline, parseDuration } from '../../../src/cli/bus.ts';
import { CbrError } from '../../../src/core/errors.ts';
import { silentLogger } from '../../../src/core/log.ts';
import type { BackupInput } from '../../../src/machines/backup.machine.ts';
import { WorkflowRuntime } from '../../../src/runtime/runtime.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { instantSteps } from '../../fixtures/steps.ts';

const host = 'node-1';
const j = (v: unknown) => Buffer.from(JSON.stringify(v));
const query = (over: Record<string, unknown> = {}) => ({
  version: 1,
  id: 'q-1',
  type: 'status.query',
  host,
  issuedAt: new Date().toISOString(),
  payload: {},
  ...over,
});

describe('status queries: the parser', () => {
  it('accepts a query for one workflow, for recent workflows with a limit, and one addressed to every agent', () => {
    assert.deepEqual(parseStatusQuery(j(query({ payload: { workflowId: 'w-1' } })), { hostId: host }).payload, { workflowId: 'w-1' });
    assert.equal(parseStatusQuery(j(query({ payload: { limit: 200 } })), { hostId: host }).payload.limit, 200);
    assert.equal(parseStatusQuery(j(query({ host: '*' })), { hostId: host }).host, '*');
  });

  it('refuses malformed queries as strictly as commands, each with a reason', () => {
    const cases: [string, Buffer][] = [
      ['not JSON', Buffer.from('status?')],
      ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d])],
      ['an array', j([query()])],
      ['oversized', j(query({ payload: { workflowId: 'x'.repeat(5000) } }))],
      ['unknown field', j({ ...query(), extra: 1 })],
      ['a signature field (queries are never signed)', j({ ...query(), signature: `v2:${'0'.repeat(64)}` })],
      ['__proto__ key', Buffer.from(`{"__proto__":{"x":1},${JSON.stringify(query()).slice(1)}`)],
      ['wrong version', j(query({ version: 2 }))],
      ['bad id', j(query({ id: '../x' }))],
      ['a command type', j(query({ type: 'backup.create' }))],
      ['another host', j(query({ host: 'node-2' }))],
      ['host not a host id', j(query({ host: 'a b' }))],
      ['bad issuedAt', j(query({ issuedAt: 'yesterday' }))],
      ['payload not an object', j(query({ payload: [] }))],
      ['unknown payload field', j(query({ payload: { state: 'failed' } }))],
      ['workflowId with path characters', j(query({ payload: { workflowId: '../../etc' } }))],
      ['limit 0', j(query({ payload: { limit: 0 } }))],
      ['limit over 200', j(query({ payload: { limit: 201 } }))],
      ['limit a string', j(query({ payload: { limit: '5' } }))],
    ];
    const reasons = new Set<string>();
    for (const [label, body] of cases) {
      assert.throws(
        () => parseStatusQuery(body, { hostId: host }),
        (err: CbrError) => {
          assert.equal(err.code, 'CBR_ERR_COMMAND_INVALID', label);
          reasons.add(err.message);
          return true;
        },
        label,
      );
    }
    assert.ok(reasons.size >= cases.length - 3, 'reasons say what is wrong');
  });

  it('answers only into server-named queues (never into a command queue)', () => {
    assert.equal(statusReplyTo('amq.gen-JzTY20BRgKO-HjmUJj0wLg'), 'amq.gen-JzTY20BRgKO-HjmUJj0wLg');
    for (const bad of ['cbr.host.node-1', 't1.cbr.dead', '', 'amq.rabbitmq.reply-to', 'amq.gen-', 42, undefined, null])
      assert.equal(statusReplyTo(bad), null, String(bad));
  });

  it('reads replies by shape and drops malformed entries', () => {
    assert.equal(parseStatusReply(Buffer.from('nope')), null);
    assert.equal(parseStatusReply(j({ type: 'status.reply', version: 1, queryId: 'q', host: 'a b', workflows: [] })), null);
    const r = parseStatusReply(
      j({
        type: 'status.reply',
        version: 1,
        queryId: 'q',
        host,
        at: 'now',
        truncated: false,
        workflows: [{ workflowId: 'w', kind: 'backup', state: 's', status: 'active', updatedAt: 't' }, { workflowId: 5 }],
      }),
    );
    assert.equal(r?.workflows.length, 1);
  });

  it("names the agent's cluster once it is known (a cluster backup finds its hosts by it); a malformed one is dropped", () => {
    const book = new StatusBook(new StateDb(':memory:'), host);
    const query = j({ version: 1, id: 'q1', type: 'status.query', host: '*', issuedAt: new Date().toISOString(), payload: {} });
    assert.equal(book.reply(query, 'x', silentLogger).cluster, undefined, 'not yet read from the node');
    book.cluster = 'Prod Cluster';
    const reply = book.reply(query, 'x', silentLogger);
    assert.equal(reply.cluster, 'Prod Cluster');
    assert.equal(parseStatusReply(j(reply))?.cluster, 'Prod Cluster');
    assert.equal(parseStatusReply(j({ ...reply, cluster: 42 }))?.cluster, undefined);
  });
});

describe('commands run beside the workflows (verify, prune, drill)', () => {
  it('are answered as running while they run, then by their outcome; a book that never saw one (a restart) knows nothing', () => {
    const book = new StatusBook(new StateDb(':memory:'), host);
    const ask = (workflowId?: string) =>
      book.reply(
        j({ version: 1, id: 'q', type: 'status.query', host, issuedAt: new Date().toISOString(), payload: workflowId ? { workflowId } : {} }),
        'x',
        silentLogger,
      );
    book.started('v1', 'backup.verify');
    book.progressed('v1', 'verifying', { bytes: 5, files: 1, totalBytes: 10, totalFiles: 2, storedBytes: 5 });
    const running = ask('v1').workflows;
    assert.deepEqual(
      running.map((w) => [w.workflowId, w.kind, w.state, w.status, w.step, w.progress?.bytes]),
      [['v1', 'backup.verify', 'running', 'active', 'verifying', 5]],
    );
    assert.deepEqual(
      ask().workflows.map((w) => w.workflowId),
      ['v1'],
      'listed among the recent ones',
    );
    book.remember({
      type: 'result',
      host,
      workflowId: 'v1',
      kind: 'backup.verify',
      at: 'now',
      state: 'completed',
      status: 'done',
      error: null,
      result: { ok: true },
    });
    book.stopped('v1');
    assert.deepEqual(
      ask('v1').workflows.map((w) => [w.state, w.status]),
      [['completed', 'done']],
    );
    assert.deepEqual(
      new StatusBook(new StateDb(':memory:'), host).reply(
        j({ version: 1, id: 'q', type: 'status.query', host, issuedAt: new Date().toISOString(), payload: { workflowId: 'v1' } }),
        'x',
        silentLogger,
      ).workflows,
      [],
    );
  });

  it('a CLI asks about them every CBR_BUS_LIVENESS_MS (default 10 s); other commands are followed by their events alone', () => {
    assert.deepEqual(livenessFor('backup.verify', {}), { everyMs: 10_000 });
    assert.deepEqual(livenessFor('backup.prune', { CBR_BUS_LIVENESS_MS: '500' }), { everyMs: 500 });
    assert.deepEqual(livenessFor('backup.drill', { CBR_BUS_LIVENESS_MS: 'soon' }), { everyMs: 10_000 });
    assert.equal(livenessFor('backup.create', {}), undefined);
  });
});

describe('the outage deadline of a CLI following its command', () => {
  it('is --bus-outage-deadline, else $CBR_BUS_OUTAGE_DEADLINE, else 5 minutes', () => {
    assert.equal(outageDeadline({}, {}), 300_000);
    assert.equal(outageDeadline({}, { CBR_BUS_OUTAGE_DEADLINE: '5s' }), 5000);
    assert.equal(outageDeadline({ 'bus-outage-deadline': '300s' }, { CBR_BUS_OUTAGE_DEADLINE: '5s' }), 300_000);
    assert.deepEqual(
      ['90', '1.5m', '2h', '750ms'].map((t) => parseDuration(t, 'd')),
      [90_000, 90_000, 7_200_000, 750],
    );
    for (const bad of ['', 'soon', '-5s', '5 days', '5d'])
      assert.throws(() => parseDuration(bad, '--bus-outage-deadline'), { code: 'CBR_ERR_INVALID_ARGUMENT' });
  });
});

describe('status queries: the answer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cbr-status-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const storage = { driver: 'local' as const, root: '/nonexistent', container: 'c' };
  const input = (id: string, profilePath: string): BackupInput => ({
    workflowId: id,
    backupId: id,
    name: `name-${id}`,
    description: '',
    profilePath,
    storage,
    compression: 'zstd',
    keySource: { file: '/etc/cbr/secret-backup.key' },
    minFreePercent: 10,
    rateLimit: null,
    startedAt: new Date().toISOString(),
  });

  it('has state, status, error, progress and the summary the final result event carries; the recent list is bounded', async () => {
    const db = join(dir, 'state.db');
    const agent = new Agent({ url: 'amqp://unused', hostId: host, profilePath: '/p', storage, stateDb: db, env: {}, log: silentLogger });
    // Workflows run by a runtime on the same database, as the agent's own would be.
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    // biome-ignore lint/suspicious/noExplicitAny: a fake step
    const fails = fromPromise<any, any>(async () => {
      throw new CbrError('CBR_ERR_STORAGE_FAILED', 'store said no');
    });
    // biome-ignore lint/suspicious/noExplicitAny: a fake step
    const holds = fromPromise<any, any>(async () => {
      await held;
      throw new CbrError('CBR_ERR_ABORTED', 'released');
    });
    const runtime = new WorkflowRuntime({
      stateDb: new StateDb(db),
      env: {},
      log: silentLogger,
      steps: {
        backup: (i) => ({
          ...instantSteps.backup(i),
          ...(i.workflowId === 'failing' ? { streamArchive: fails } : i.workflowId === 'running' ? { streamArchive: holds } : {}),
        }),
        restore: instantSteps.restore,
      },
    });
    try {
      const done = await (await runtime.startBackup(input('done-1', '/n1/p')))!.done;
      assert.equal(done.state, 'completed');
      assert.equal((await (await runtime.startBackup(input('failing', '/n1/p')))!.done).state, 'failed');
      const running = (await runtime.startBackup(input('running', '/n2/p')))!;
      while (agent.store.get('running')?.state !== 'streaming') await new Promise((r) => setTimeout(r, 5));
      // Two days old: out of the recent list, still found by id.
      assert.equal((await (await runtime.startBackup(input('old', '/n1/p')))!.done).state, 'completed');
      agent.store.db.prepare("UPDATE workflows SET updated_at = '2000-01-01T00:00:00.000Z' WHERE id = 'old'").run();

      const one = agent.statusOf({ workflowId: 'done-1' });
      assert.equal(one.workflows.length, 1);
      const w = one.workflows[0]!;
      assert.equal(w.kind, 'backup');
      assert.equal(w.state, 'completed');
      assert.equal(w.status, 'done');
      assert.equal(w.error, null);
      assert.deepEqual(w.result, {
        backupId: 'done-1',
        name: 'name-done-1',
        objectKey: 'done-1/archive.tar.zst',
        size: 100,
        sha256: '0'.repeat(64),
        rawBytes: 1000,
        files: 10,
        warnings: [],
      });
      assert.equal(w.progress, undefined, 'no progress once done');

      const failed = agent.statusOf({ workflowId: 'failing' }).workflows[0]!;
      assert.equal(failed.state, 'failed');
      assert.deepEqual(failed.error, { code: 'CBR_ERR_STORAGE_FAILED', message: 'store said no', retryable: true });

      assert.equal(agent.statusOf({ workflowId: 'old' }).workflows[0]?.state, 'completed');
      assert.deepEqual(agent.statusOf({ workflowId: 'nobody' }), { workflows: [], truncated: false });

      const recent = agent.statusOf({});
      assert.deepEqual(recent.workflows.map((x) => x.workflowId).sort(), ['done-1', 'failing', 'running']);
      assert.equal(recent.truncated, false);
      assert.equal(recent.workflows.find((x) => x.workflowId === 'running')?.status, 'active');
      assert.equal(recent.workflows.find((x) => x.workflowId === 'running')?.result, undefined);
      const two = agent.statusOf({ limit: 2 });
      assert.equal(two.workflows.length, 2);
      assert.equal(two.truncated, true);
      assert.ok(!JSON.stringify(recent).includes('secret-backup.key'), 'never the key source, nor anything of the input');

      // What a subscriber replays from it: state, then the result (done), or state alone (active).
      const reply: StatusReply = { version: 1, type: 'status.reply', queryId: 'q', host, at: new Date().toISOString(), ...recent };
      const events = statusEvents(reply);
      const forDone = events.filter((e) => e.workflowId === 'done-1');
      assert.deepEqual(
        forDone.map((e) => e.type),
        ['state', 'result'],
      );
      assert.ok(forDone.every((e) => e.resync === true && e.host === host && !e.eventId));
      assert.deepEqual(forDone[1]!.result, w.result);
      assert.equal(forDone[1]!.state, 'completed');
      assert.deepEqual(
        events.filter((e) => e.workflowId === 'running').map((e) => `${e.type}:${e.state}:${e.status}`),
        ['state:streaming:active'],
      );
      assert.deepEqual(events.find((e) => e.workflowId === 'failing' && e.type === 'result')?.error?.code, 'CBR_ERR_STORAGE_FAILED');
      release();
      await running.done;
    } finally {
      release();
      runtime.stopAll();
      await agent.stop();
    }
  });
});
