import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import amqplib, { type ConsumeMessage } from 'amqplib';
import type { WorkflowStatus } from '../../../src/bus/schemas/status.ts';
import { readRecord } from '../../../src/catalog/catalog.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { createLocalStore } from '../../../src/storage/local/localStore.ts';
import { BUS_URL, removeBusTopology, spawnAgent, stopGracefully, waitForAgentQueue, waitForWorkflow } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';

const run = promisify(execFile);
const prefix = `o${process.pid}.`;
const HOST = 'outage';

/** A `cbr` child process whose output is collected as it comes. */
function cbrChild(args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(join(REPO, 'node_modules', '.bin', 'node'), [join(REPO, 'bin', 'cbr.js'), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  /** When each stderr chunk came (the CLI's notices), to time the reconnect and the resync. */
  const marks: { at: number; text: string }[] = [];
  child.stdout.on('data', (d: Buffer) => {
    out.stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out.stderr += d.toString();
    marks.push({ at: Date.now(), text: d.toString() });
  });
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.once('exit', (code) => resolve({ code, at: Date.now() })));
  const markAt = (re: RegExp) => marks.find((m) => re.test(m.text))?.at;
  return { child, out, exited, markAt };
}

async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Stops RabbitMQ's app, runs `during` (the outage), and always starts the app again. Returns when it is back. */
async function brokerOutage(during: (stoppedAt: number) => Promise<void>): Promise<{ stoppedAt: number; backAt: number }> {
  const stoppedAt = Date.now();
  try {
    await run('rabbitmqctl', ['stop_app']);
    await during(stoppedAt);
  } finally {
    await run('rabbitmqctl', ['start_app']);
  }
  // start_app returns once the app runs; wait for the listener too.
  for (;;) {
    try {
      await (await amqplib.connect(BUS_URL)).close();
      break;
    } catch {
      await sleep(100);
    }
  }
  return { stoppedAt, backAt: Date.now() };
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('broker outages in the middle of a bus-driven backup (real RabbitMQ, real agent, real node)', () => {
  let env: NodeJS.ProcessEnv;
  let stateDb: string;
  let storageRoot: string;
  let agent: ChildProcess;
  const ids: string[] = [];
  const bus = ['--bus', BUS_URL, '--prefix', prefix];

  before(async () => {
    await sharedNode('source');
    storageRoot = scratchDir('outage-storage');
    stateDb = join(scratchDir('outage-state'), 'state.db');
    env = { ...testEnv, CBR_STORAGE_ROOT: storageRoot, CBR_STATE_DB: stateDb };
    // Each state is held 1.5 s, so an outage lands mid-workflow and the backup ends while the broker is away.
    agent = spawnAgent({ host: HOST, profilePath: profilePath('source', testEnv), env, prefix, stepDelayMs: 1500 });
    await waitForAgentQueue(prefix, HOST);
  });

  after(async () => {
    if (agent) await stopGracefully(agent);
    await removeBusTopology(prefix, [HOST]);
  });

  it('broker stopped ~20 s mid-backup: the CLI exits 0 with the real result, and a watch alongside sees the final completed state', async () => {
    // Two backups at once, each followed by its own CLI: `cli` reconnects as it will (it usually rebinds before
    // the agent drains its outbox, so the final events come live); `late` is frozen (SIGSTOP) until the agent has
    // reconnected and drained, so the events it missed are gone and only the status answer can tell it.
    const id = randomUUID();
    const lateId = randomUUID();
    ids.push(id, lateId);
    const watch = cbrChild(['watch', ...bus, '--host', HOST, '--json'], env);
    // (The default outage deadline, 5 min, is far beyond this outage.)
    const follow = (name: string, wid: string) => cbrChild(['backup-create', name, ...bus, '--host', HOST, '--id', wid, '--json'], env);
    const cli = follow('through-an-outage', id);
    const late = follow('through-an-outage-late', lateId);
    try {
      for (const w of [id, lateId]) await waitForWorkflow(stateDb, w, (x) => x.state === 'snapshotting', 60_000);
      await until('the watch to show the backup', () => jsonLines(watch.out.stdout).some((e) => e['workflowId'] === id), 10_000);
      const { stoppedAt, backAt } = await brokerOutage(async (since) => {
        // The workflows go on without the broker: they usually end while it is away (their events wait in the
        // agent's outbox). The outage lasts 20 s whatever they do.
        for (const w of [id, lateId]) await waitForWorkflow(stateDb, w, (x) => x.status === 'done', Math.max(1, since + 19_000 - Date.now())).catch(() => {});
        late.child.kill('SIGSTOP');
        await sleep(Math.max(0, 20_000 - (Date.now() - since)));
      });
      for (const w of [id, lateId]) await waitForWorkflow(stateDb, w, (x) => x.status === 'done', 60_000);
      const end = await Promise.race([cli.exited, sleep(60_000).then(() => ({ code: -1, at: Date.now() }))]);
      const store = createLocalStore(storageRoot, 'database_backups');
      const check = async (c: typeof cli, e: typeof end, wid: string) => {
        const why = `backup-create ${wid} exited ${e.code}\nstdout: ${c.out.stdout}\nstderr: ${c.out.stderr}\n(watch: ${watch.child.exitCode === null ? 'running' : `exited ${watch.child.exitCode}`}, printed ${jsonLines(watch.out.stdout).length} events; stderr: ${watch.out.stderr})`;
        assert.equal(e.code, 0, why);
        const result = JSON.parse(c.out.stdout) as Record<string, unknown>;
        assert.equal(result['id'], wid);
        assert.equal(result['state'], 'COMPLETED');
        const record = await readRecord(store, wid);
        assert.equal(result['sha256'], record.sha256, 'the real result: the stored archive');
        assert.equal(result['size'], record.size);
        assert.match(c.out.stderr, /lost the broker/);
        assert.match(c.out.stderr, /reconnected to the broker after/);
      };
      await check(cli, end, id);
      await until(
        'the watch to see the final completed state',
        () => jsonLines(watch.out.stdout).some((e) => e['workflowId'] === id && e['type'] === 'state' && e['state'] === 'completed'),
        30_000,
      );
      const watchSawAt = Date.now();
      const outbox = () => {
        const db = new StateDb(stateDb, { readOnly: true });
        try {
          return db.countEvents();
        } finally {
          db.close();
        }
      };
      await until("the agent's outbox to drain", () => outbox() === 0, 30_000);
      const resumedAt = Date.now();
      late.child.kill('SIGCONT');
      const lateEnd = await Promise.race([late.exited, sleep(60_000).then(() => ({ code: -1, at: Date.now() }))]);
      await check(late, lateEnd, lateId);
      assert.match(late.out.stderr, /outage answered the status query \(1 workflow\)/, 'the late CLI learnt the outcome from the status answer');

      assert.equal(watch.child.exitCode, null, 'the watch is still following');
      const final = jsonLines(watch.out.stdout).find((e) => e['workflowId'] === id && e['type'] === 'result');
      assert.equal(final?.['state'], 'completed');
      // A watch started now begins from the present state (the agent's answer), not from an empty page.
      const fresh = cbrChild(['watch', ...bus, '--host', HOST, '--workflow', lateId, '--json'], env);
      const freshAt = Date.now();
      try {
        await until(
          'a new watch to show the finished backup',
          () => jsonLines(fresh.out.stdout).some((e) => e['type'] === 'result' && e['state'] === 'completed' && e['resync'] === true),
          15_000,
        );
      } finally {
        fresh.child.kill('SIGTERM');
      }
      const s = (ms: number | undefined) => (ms === undefined ? '?' : `${(ms / 1000).toFixed(2)} s`);
      const reconnected = cli.markAt(/reconnected to the broker/);
      const answered = cli.markAt(/answered the status query/);
      console.log(
        `[outage] broker away ${s(backAt - stoppedAt)}; after it was back: the CLI reconnected in ${s(reconnected && reconnected - backAt)} (backoff), had the agent's answer ${s(answered && reconnected && answered - reconnected)} later, exited after ${s(end.at - backAt)};` +
          ` the watch had the completed state after ${s(Math.max(0, watchSawAt - backAt))} (resync: ${Boolean(final?.['resync'])});` +
          ` the late CLI exited ${s(lateEnd.at - resumedAt)} after SIGCONT (reconnect, status query, answer); a new watch showed the result in ${s(Date.now() - freshAt)}\n` +
          `[outage] CLI stderr: ${cli.out.stderr.trim().split('\n').join(' | ')}\n[outage] late CLI stderr: ${late.out.stderr.trim().split('\n').join(' | ')}`,
      );
    } finally {
      late.child.kill('SIGCONT');
      for (const c of [watch, cli, late]) c.child.kill('SIGTERM');
    }
  });

  it('broker away past the outage deadline (5 s): the CLI exits CBR_ERR_OUTCOME_UNKNOWN naming the workflow, not a failure', async () => {
    const id = randomUUID();
    ids.push(id);
    const cli = cbrChild(['backup-create', 'past-the-deadline', ...bus, '--host', HOST, '--id', id, '--json'], { ...env, CBR_BUS_OUTAGE_DEADLINE: '5s' });
    let end: { code: number | null; at: number } | undefined;
    try {
      await waitForWorkflow(stateDb, id, (w) => w.state === 'snapshotting', 60_000);
      const { stoppedAt } = await brokerOutage(async () => {
        end = await Promise.race([cli.exited, sleep(30_000).then(() => ({ code: -1, at: Date.now() }))]);
      });
      assert.equal(end?.code, 75, `backup-create exited ${end?.code}\nstdout: ${cli.out.stdout}\nstderr: ${cli.out.stderr}`);
      const error = (JSON.parse(cli.out.stdout) as { error: Record<string, unknown> }).error;
      assert.equal(error['code'], 'CBR_ERR_OUTCOME_UNKNOWN');
      assert.equal(error['retryable'], true);
      assert.equal(error['workflowId'], id);
      assert.equal(error['host'], HOST);
      assert.match(String(error['message']), new RegExp(`cbr status --host ${HOST} --workflow ${id}`));
      assert.doesNotMatch(cli.out.stderr, /CBR_ERR_BUS_UNAVAILABLE/);
      console.log(`[outage] outcome unknown reported ${((end!.at - stoppedAt) / 1000).toFixed(1)} s after the broker stop began`);

      // Asking again, as the message says, gives the true outcome once the workflow is over.
      await waitForWorkflow(stateDb, id, (w) => w.status === 'done', 60_000);
      const status = await cbr(['status', ...bus, '--host', HOST, '--workflow', id, '--json'], env);
      assert.equal(status.code, 0, status.err);
      assert.equal(status.json()['state'], 'completed');
      assert.equal(status.json()['workflowId'], id);
    } finally {
      cli.child.kill('SIGTERM');
    }
  });

  it('the agent answers a status query for all its recent workflows, and refuses a malformed one with a reason', async () => {
    assert.equal(ids.length, 3, 'runs after the two outage tests');
    // Loaded here, not at the top, so that tests 1 and 2 also run against a tree without the status query (they
    // fail there: that is how they were shown to test the change).
    const { queryStatus } = await import('../../../src/bus/client.ts');
    const { parseStatusReply, STATUS_REPLY_TYPE } = await import('../../../src/bus/schemas/status.ts');
    const [one] = await queryStatus({ url: BUS_URL, prefix, host: HOST });
    assert.ok(one, 'the agent answered');
    assert.equal(one.host, HOST);
    assert.equal(one.truncated, false);
    for (const id of ids) {
      const w: WorkflowStatus | undefined = one.workflows.find((x) => x.workflowId === id);
      assert.equal(w?.state, 'completed', id);
      assert.equal(w?.status, 'done');
      assert.equal(w?.kind, 'backup');
      assert.equal(w?.error, null);
      assert.equal(typeof w?.result?.['sha256'], 'string');
    }
    // Asked of every agent (routing key ''): this one answers among them.
    const all = await queryStatus({ url: BUS_URL, prefix, timeoutMs: 1500 });
    assert.ok(all.some((r) => r.host === HOST && r.workflows.length >= 2));
    const listed = await cbr(['status', ...bus, '--host', HOST, '--json'], env);
    assert.equal(listed.code, 0, listed.err);
    assert.ok(String(listed.out).includes(ids[0]!));

    // A malformed query is answered with its coded error (it changes nothing, so it is not dead-lettered).
    const conn = await amqplib.connect(BUS_URL);
    try {
      const ch = await conn.createChannel();
      const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
      const got = new Promise<ConsumeMessage>((resolve) => {
        void ch.consume(queue, (m) => m && resolve(m), { noAck: true });
      });
      const bad = { version: 1, id: 'bad-q', type: 'status.query', host: HOST, issuedAt: new Date().toISOString(), payload: { everything: true } };
      ch.publish(`${prefix}cbr.status`, HOST, Buffer.from(JSON.stringify(bad)), { replyTo: queue, correlationId: 'bad-q' });
      const m = await Promise.race([got, sleep(10_000).then(() => null)]);
      assert.ok(m, 'answered');
      assert.equal(m.properties.type, STATUS_REPLY_TYPE);
      const reply = parseStatusReply(m.content);
      assert.equal(reply?.error?.code, 'CBR_ERR_COMMAND_INVALID');
      assert.match(String(reply?.error?.message), /everything/);
      assert.deepEqual(reply?.workflows, []);
    } finally {
      await conn.close();
    }
  });
});
