import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import amqplib, { type ConsumeMessage, type GetMessage } from 'amqplib';
import { Agent } from '../../../src/bus/agent.ts';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import { connectCql } from '../../../src/cassandra/cql.ts';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import { loadProfile, type Profile } from '../../../src/cassandra/profile.ts';
import { silentLogger } from '../../../src/core/log.ts';
import { createSandbox, profilePath, removeSandbox } from '../../../src/sandbox/sandbox.ts';
import { BUS_URL, publishRaw, removeBusTopology } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, dumpKeyspaces, seedData } from '../../helpers/data.ts';
import { scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { malformedCommands, validCommand } from '../../helpers/malformed.ts';

const prefix = `t${process.pid}.`;

describe('the bus: agents driven by AMQP commands (real RabbitMQ, real nodes)', () => {
  let source: Profile;
  let sourcePath: string;
  let env: NodeJS.ProcessEnv;
  let storage: { driver: 'local'; root: string; container: string };
  const agents: Agent[] = [];
  let keyspaces: string[];

  const agent = async (host: string, profile: string, extra: Partial<ConstructorParameters<typeof Agent>[0]> = {}) => {
    const a = new Agent({
      url: BUS_URL,
      hostId: host,
      profilePath: profile,
      storage,
      stateDb: join(scratchDir(`state-${host}`), 'state.db'),
      env,
      log: silentLogger,
      prefix,
      ...extra,
    });
    agents.push(a);
    await a.start();
    await a.waitForConnect();
    return a;
  };
  const bus = (...args: string[]) => [...args, '--bus', BUS_URL, '--prefix', prefix, '--json'];

  before(async () => {
    source = await sharedNode('source');
    sourcePath = profilePath('source', testEnv);
    storage = { driver: 'local', root: scratchDir('bus-storage'), container: 'database_backups' };
    env = { ...testEnv, CBR_STORAGE_ROOT: storage.root };
    const cql = await cqlFor(source);
    keyspaces = await seedData(cql, `bus${process.pid}`, { rows: 200, blobKiB: 2 });
    await cql.close();
  });

  after(async () => {
    for (const a of agents) await a.stop().catch(() => {});
    await removeBusTopology(prefix, ['source', 'bus-target', 'signed', 'rmq'], ['test.sub']);
  });

  it('backs up and restores end to end through the bus only', async () => {
    await agent('source', sourcePath);
    const backup = await cbr(bus('backup-create', 'over-the-bus', '--host', 'source'), env);
    assert.equal(backup.code, 0, backup.err);
    const id = String(backup.json()['id']);
    assert.equal(backup.json()['state'], 'COMPLETED');
    assert.ok(!(await createNodetool(source).listSnapshots()).includes(id));

    await createSandbox('bus-target', { env: testEnv });
    await agent('bus-target', profilePath('bus-target', testEnv));
    const restore = await cbr(bus('create', 'bus-target', '--backup', id, '--host', 'bus-target'), env);
    assert.equal(restore.code, 0, restore.err);
    assert.equal(restore.json()['cassandraStarts'], 2);
    const target = await loadProfile(profilePath('bus-target', testEnv));
    const password = readFileSync(String(restore.json()['passwordFile']), 'utf8').trim();
    const cql = await connectCql({ ...target.cql, credentials: { username: 'cassandra', password } });
    const src = await cqlFor(source);
    try {
      assert.equal(await dumpKeyspaces(cql, keyspaces), await dumpKeyspaces(src, keyspaces));
    } finally {
      await cql.close();
      await src.close();
    }
    const del = await cbr(bus('backup-delete', id, '--host', 'source'), env);
    assert.equal(del.code, 0, del.err);
    assert.deepEqual((await cbr(['backup-list', '--json'], env)).json(), []);
    await removeSandbox('bus-target', testEnv);
  });

  it('a failing workflow over the bus exits non-zero with its coded error', async () => {
    const res = await cbr(bus('create', 'nowhere', '--backup', 'no-such-backup', '--host', 'source'), env);
    assert.equal(res.code, 9);
    assert.equal(res.json().error?.code, 'CBR_ERR_BACKUP_NOT_FOUND');
  });

  it('dead-letters every malformed command with its reason and keeps consuming', async () => {
    const conn = await amqplib.connect(BUS_URL);
    const ch = await conn.createChannel();
    await ch.purgeQueue(`${prefix}cbr.dead`);
    const cases = malformedCommands('source');
    for (const c of cases) await publishRaw(prefix, 'source', c.body);
    // A signed-only agent refuses an unsigned (otherwise valid) destructive command.
    const key = randomBytes(32);
    await agent('signed', sourcePath, { signingKey: key });
    await publishRaw(prefix, 'signed', validCommand('signed', { type: 'restore.create', payload: { backupId: 'b1', instanceName: 'x', force: true } }));

    const dead: GetMessage[] = [];
    const deadline = Date.now() + 30_000;
    while (dead.length < cases.length + 1 && Date.now() < deadline) {
      const m = await ch.get(`${prefix}cbr.dead`, { noAck: true });
      if (m) dead.push(m);
      else await sleep(50);
    }
    await conn.close();
    assert.equal(dead.length, cases.length + 1, 'every rejected command is in the dead-letter queue');
    const codes = dead.map((m) => String(m.properties.headers?.['x-cbr-error-code']));
    assert.equal(codes.filter((c) => c === 'CBR_ERR_COMMAND_INVALID').length, cases.length);
    assert.equal(codes.filter((c) => c === 'CBR_ERR_COMMAND_UNAUTHORIZED').length, 1);
    assert.ok(
      dead.every((m) => String(m.properties.headers?.['x-cbr-error-message']).length > 5),
      'each says why',
    );

    // The agent still works: a signed command goes through the signed agent, a plain one through the other.
    const keyFile = join(scratchDir('signing'), 'k.hex');
    writeFileSync(keyFile, key.toString('hex'), { mode: 0o600 });
    const signed = await cbr(bus('backup-create', 'signed-one', '--host', 'signed', '--signing-key-file', keyFile), env);
    assert.equal(signed.code, 0, signed.err);
    const plain = await cbr(bus('backup-create', 'after-garbage', '--host', 'source'), env);
    assert.equal(plain.code, 0, plain.err);
  });

  it('survives a RabbitMQ restart during a backup: the workflow completes and every event arrives', async () => {
    const a = await agent('rmq', sourcePath, { stepDelayMs: 1500 });
    // A durable subscriber on a recovering connection, as a monitoring system would have.
    const seen = new Map<string, BusEvent>();
    const sub = await amqplib.connect(BUS_URL, {
      recovery: {
        initialDelay: 200,
        maxDelay: 2000,
        setup: async (model: amqplib.ChannelModel) => {
          const ch = await model.createChannel();
          await ch.assertExchange(`${prefix}cbr.events`, 'topic', { durable: true });
          await ch.assertQueue(`${prefix}test.sub`, { durable: true });
          await ch.bindQueue(`${prefix}test.sub`, `${prefix}cbr.events`, 'rmq.*.*');
          await ch.consume(`${prefix}test.sub`, (m: ConsumeMessage | null) => {
            if (!m) return;
            const e = JSON.parse(m.content.toString()) as BusEvent;
            seen.set(e.eventId!, e);
            ch.ack(m);
          });
        },
      },
    });
    sub.on('error', () => {});
    const id = randomUUID();
    await publishRaw(prefix, 'rmq', validCommand('rmq', { id, payload: { name: 'through-a-restart' } }));
    const deadline = Date.now() + 60_000;
    while (a.store.get(id)?.state !== 'snapshotting') {
      assert.ok(Date.now() < deadline, 'backup reached snapshotting');
      await sleep(25);
    }
    execFileSync('rabbitmqctl', ['stop_app'], { stdio: 'ignore' });
    await sleep(3000);
    execFileSync('rabbitmqctl', ['start_app'], { stdio: 'ignore' });
    const until = Date.now() + 120_000;
    while (![...seen.values()].some((e) => e.type === 'result' && e.workflowId === id)) {
      assert.ok(Date.now() < until, 'the result arrived');
      await sleep(100);
    }
    await sub.close();
    const events = [...seen.values()].filter((e) => e.workflowId === id);
    const result = events.find((e) => e.type === 'result')!;
    assert.equal(result.state, 'completed');
    const states = events.filter((e) => e.type === 'state').map((e) => e.state);
    const transitions = a.store.transitions(id).map((t) => t.state);
    assert.deepEqual(states, transitions, 'one state event per persisted transition, none lost, in order');
    assert.equal(a.store.countEvents(), 0, 'the outbox is empty');
    assert.ok(!(await createNodetool(source).listSnapshots()).includes(id));
  });
});
