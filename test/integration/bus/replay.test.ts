import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import amqplib, { type GetMessage } from 'amqplib';
import { Agent } from '../../../src/bus/agent.ts';
import type { Command } from '../../../src/bus/schemas/commands.ts';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import { signCommand } from '../../../src/bus/signing.ts';
import { declareTopology, topology } from '../../../src/bus/topology.ts';
import { silentLogger } from '../../../src/core/log.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { BUS_URL, publishRaw, removeBusTopology } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { scratchDir, testEnv } from '../../helpers/env.ts';
import { validCommand } from '../../helpers/malformed.ts';

/**
 * Security review (issue 11, item 10): a signed command is taken once, for its whole signing window and across an
 * agent restart, and only under the bus prefix it was signed for. Real RabbitMQ; no Cassandra node is needed (a
 * backup.delete of a backup that does not exist and a workflow.cancel of a workflow that does not run each get a
 * failed result the first time).
 */
const prefix = `rp${process.pid}.`;
const otherPrefix = `rq${process.pid}.`;
const crashPrefix = `rr${process.pid}.`;
const host = 'replay';

describe('signed bus commands cannot be replayed (real RabbitMQ)', () => {
  const key = randomBytes(32);
  const agents = new Set<Agent>();
  let conn: amqplib.ChannelModel;
  let ch: amqplib.Channel;
  const events: BusEvent[] = [];
  const dead = new Map<string, GetMessage[]>();
  let stateDb: string;
  let storage: { driver: 'local'; root: string; container: string };

  const startAgent = async (p: string, db: string): Promise<Agent> => {
    const a = new Agent({
      url: BUS_URL,
      hostId: host,
      // Never read: backup.delete and workflow.cancel need no node.
      profilePath: join(scratchDir('no-profile'), 'profile.json'),
      storage,
      stateDb: db,
      env: { ...testEnv, CBR_STORAGE_ROOT: storage.root },
      log: silentLogger,
      prefix: p,
      signingKey: key,
    });
    agents.add(a);
    await a.start();
    await a.waitForConnect();
    return a;
  };

  /** The dead-lettered copies of one command under a prefix (drains the dead queue into `dead`). */
  const deadLettered = async (p: string, id: string, want: number, timeoutMs = 15_000): Promise<GetMessage[]> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (;;) {
        const m = await ch.get(`${p}cbr.dead`, { noAck: true });
        if (!m) break;
        const mid = String(m.properties.headers?.['x-cbr-command-id']);
        dead.set(mid, [...(dead.get(mid) ?? []), m]);
      }
      const got = dead.get(id) ?? [];
      if (got.length >= want || Date.now() > deadline) return got;
      await sleep(50);
    }
  };

  const results = (id: string) => events.filter((e) => e.workflowId === id && e.type === 'result');
  const waitForResults = async (id: string, n: number, timeoutMs = 15_000): Promise<BusEvent[]> => {
    const deadline = Date.now() + timeoutMs;
    while (results(id).length < n && Date.now() < deadline) await sleep(50);
    return results(id);
  };

  const signed = (type: string, payload: Record<string, unknown>, p: string): Command =>
    signCommand(validCommand(host, { type, payload }) as unknown as Command, key, p);

  before(async () => {
    stateDb = join(scratchDir('state-replay'), 'state.db');
    storage = { driver: 'local', root: scratchDir('replay-storage'), container: 'database_backups' };
    conn = await amqplib.connect(BUS_URL);
    ch = await conn.createChannel();
    await startAgent(prefix, stateDb);
    await startAgent(otherPrefix, join(scratchDir('state-replay-other'), 'state.db'));
    for (const p of [prefix, otherPrefix]) {
      const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
      await ch.bindQueue(queue, `${p}cbr.events`, '#');
      await ch.consume(queue, (m) => m && events.push(JSON.parse(m.content.toString()) as BusEvent), { noAck: true });
    }
  });

  after(async () => {
    for (const a of agents) await a.stop().catch(() => {});
    for (const p of [prefix, otherPrefix, crashPrefix]) await removeBusTopology(p, [host]);
    await conn?.close().catch(() => {});
  });

  it('the same signed backup.delete or workflow.cancel published twice: the second is dead-lettered as replayed, also after an agent restart', async () => {
    const commands = [signed('backup.delete', { backupId: 'no-such-backup' }, prefix), signed('workflow.cancel', { workflowId: 'no-such-workflow' }, prefix)];
    for (const cmd of commands) {
      await publishRaw(prefix, host, cmd as unknown as Record<string, unknown>);
      const first = await waitForResults(cmd.id, 1);
      assert.equal(first.length, 1, `${cmd.type}: the first copy is handled`);
      assert.match(String(first[0]!.error?.code), /CBR_ERR_(BACKUP|WORKFLOW)_NOT_FOUND/);

      await publishRaw(prefix, host, cmd as unknown as Record<string, unknown>);
      const copies = await deadLettered(prefix, cmd.id, 1);
      assert.equal(copies.length, 1, `${cmd.type}: the replay is dead-lettered`);
      const h = copies[0]!.properties.headers ?? {};
      assert.equal(h['x-cbr-error-code'], 'CBR_ERR_COMMAND_UNAUTHORIZED');
      assert.match(String(h['x-cbr-error-message']), /replayed/);
      assert.equal(results(cmd.id).length, 1, `${cmd.type}: the replay started nothing and answered nothing`);
      const rejected = () => events.some((e) => e.type === 'rejected' && e.workflowId === cmd.id && /replayed/.test(String(e.error?.message)));
      for (const deadline = Date.now() + 10_000; !rejected() && Date.now() < deadline; ) await sleep(50);
      assert.ok(rejected(), `${cmd.type}: a rejected event says why`);
    }

    // The ids live in the state database: a new agent on it refuses them too.
    const [old] = agents;
    await old!.stop();
    agents.delete(old!);
    await startAgent(prefix, stateDb);
    const cmd = commands[0]!;
    await publishRaw(prefix, host, cmd as unknown as Record<string, unknown>);
    const copies = await deadLettered(prefix, cmd.id, 2);
    assert.equal(copies.length, 2, 'refused again after the restart');
    assert.match(String(copies[1]!.properties.headers?.['x-cbr-error-message']), /replayed/);
    assert.equal(results(cmd.id).length, 1);

    // A fresh signed command still goes through the restarted agent.
    const fresh = signed('backup.delete', { backupId: 'another-missing-one' }, prefix);
    await publishRaw(prefix, host, fresh as unknown as Record<string, unknown>);
    assert.equal((await waitForResults(fresh.id, 1)).length, 1);
  });

  it('a command signed for one bus prefix is refused under another', async () => {
    const cmd = signed('backup.delete', { backupId: 'signed-for-the-first-prefix' }, prefix);
    await publishRaw(otherPrefix, host, cmd as unknown as Record<string, unknown>);
    const copies = await deadLettered(otherPrefix, cmd.id, 1);
    assert.equal(copies.length, 1, 'dead-lettered under the other prefix');
    assert.equal(copies[0]!.properties.headers?.['x-cbr-error-code'], 'CBR_ERR_COMMAND_UNAUTHORIZED');
    assert.match(String(copies[0]!.properties.headers?.['x-cbr-error-message']), /another bus prefix/);
    assert.equal(results(cmd.id).length, 0, 'nothing ran under the other prefix');
    // The very same message is taken under the prefix it was signed for (a refusal above was not for another reason).
    await publishRaw(prefix, host, cmd as unknown as Record<string, unknown>);
    assert.equal((await waitForResults(cmd.id, 1)).length, 1);
  });

  it('a redelivery (the agent died before its ack) is no replay: run again if it never finished, dropped if it did', async () => {
    // What an agent that died mid-command leaves: both ids recorded, one never settled, one handled but not acked.
    const db = join(scratchDir('state-replay-crash'), 'state.db');
    const unfinished = signed('backup.delete', { backupId: 'cut-short' }, crashPrefix);
    const handled = signed('workflow.cancel', { workflowId: 'done-before' }, crashPrefix);
    const store = new StateDb(db);
    for (const c of [unfinished, handled]) assert.equal(store.recordCommand(c.id, c.type, Date.now() + 600_000), null);
    store.settleCommand(handled.id, 'accepted');
    store.close();
    // Delivered once and never acked: the broker redelivers both, flagged `redelivered`.
    const side = await conn.createChannel();
    await declareTopology(side, topology(crashPrefix), host);
    for (const c of [unfinished, handled]) await publishRaw(crashPrefix, host, c as unknown as Record<string, unknown>);
    let got = 0;
    await side.consume(`${crashPrefix}cbr.host.${host}`, (m) => {
      if (m) got++;
    });
    for (const deadline = Date.now() + 10_000; got < 2 && Date.now() < deadline; ) await sleep(50);
    assert.equal(got, 2);
    await side.close();

    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    await ch.bindQueue(queue, `${crashPrefix}cbr.events`, '#');
    await ch.consume(queue, (m) => m && events.push(JSON.parse(m.content.toString()) as BusEvent), { noAck: true });
    await startAgent(crashPrefix, db);
    assert.equal((await waitForResults(unfinished.id, 1)).length, 1, 'the unfinished command ran again');
    await sleep(1500);
    assert.equal(results(handled.id).length, 0, 'the handled one did not run twice');
    assert.equal((await deadLettered(crashPrefix, handled.id, 1, 500)).length, 0, 'and is not reported as a replay');
    assert.equal((await deadLettered(crashPrefix, unfinished.id, 1, 500)).length, 0);
    // Published again (not redelivered), each is a replay.
    for (const c of [unfinished, handled]) {
      await publishRaw(crashPrefix, host, c as unknown as Record<string, unknown>);
      assert.match(String((await deadLettered(crashPrefix, c.id, 1))[0]?.properties.headers?.['x-cbr-error-message']), /replayed/);
    }
  });

  it('the CLI signs for the prefix it publishes under: its signed commands reach the agent under either prefix', async () => {
    const keyFile = join(scratchDir('replay-key'), 'signing.hex');
    writeFileSync(keyFile, `${key.toString('hex')}\n`, { mode: 0o600 });
    for (const p of [prefix, otherPrefix]) {
      const res = await cbr(['backup-delete', 'not-there', '--bus', BUS_URL, '--host', host, '--prefix', p, '--signing-key-file', keyFile, '--json'], testEnv);
      // Verified and run: the agent answers that there is no such backup (not that the command is unauthorized).
      assert.equal(res.json().error?.code, 'CBR_ERR_BACKUP_NOT_FOUND', `${p}: ${res.out}${res.err}`);
    }
  });
});
