import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import amqplib from 'amqplib';
import { Agent } from '../../../src/bus/agent.ts';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import { recordKey } from '../../../src/catalog/catalog.ts';
import { silentLogger } from '../../../src/core/log.ts';
import type { BackupInput } from '../../../src/machines/backup.machine.ts';
import { openStore } from '../../../src/storage/open.ts';
import { instantSteps } from '../../fixtures/steps.ts';
import { BUS_URL, publishRaw, removeBusTopology } from '../../helpers/bus.ts';
import { scratchDir, testEnv } from '../../helpers/env.ts';

const prefix = `s${process.pid}.`;
const HOST = 'strategy-host';

/** A COMPLETED record of an empty full backup: what the agent reads to find a parent is its id, host and time. */
function record(id: string, hostId: string, created: string) {
  return {
    format: 1,
    id,
    name: id,
    description: '',
    state: 'COMPLETED',
    datastore: 'cassandra',
    sourceInstance: hostId,
    hostId,
    clusterName: 'c',
    cassandraVersion: '5.0.6',
    created,
    finished: created,
    object: `${id}/archive.tar.zst`,
    size: 0,
    sha256: '0'.repeat(64),
    compression: 'zstd',
    encryption: null,
    rawBytes: 0,
    fileCount: 0,
    keyspaces: [],
    files: [],
  };
}

/**
 * `backup.create` over the real broker: the agent resolves the strategy (payload > profile > its
 * CBR_BACKUP_STRATEGY) and the parent from its own profile and storage before the workflow starts, and refuses a
 * parent that is missing or another host's. The steps are fakes: what is checked is the input the agent builds.
 */
describe('backup strategy over the bus (real RabbitMQ, fake steps)', () => {
  let agent: Agent;
  let conn: amqplib.ChannelModel;
  const events: BusEvent[] = [];
  const inputs = new Map<string, BackupInput>();

  before(async () => {
    const dir = scratchDir('strategy-bus');
    const storage = { driver: 'local' as const, root: join(dir, 'storage'), container: 'database_backups' };
    const store = openStore(storage);
    for (const r of [
      record('own-1', HOST, '2025-01-01T00:00:00.000Z'),
      record('own-2', HOST, '2025-01-02T00:00:00.000Z'),
      record('theirs', 'other', '2025-01-03T00:00:00.000Z'),
    ]) {
      await store.put(recordKey(r.id), Readable.from([Buffer.from(JSON.stringify(r))]), { ifAbsent: true });
    }
    // A profile of a node that is not running: the fake steps never reach it; the agent reads its host id.
    const profilePath = join(dir, 'profile.json');
    const profile = {
      version: 1,
      name: 'strategy',
      hostId: HOST,
      cassandraVersion: '5.0.6',
      cql: { host: '127.0.0.1', port: 1, localDc: 'datacenter1', credentialsFile: join(dir, 'cql.json') },
      jmx: { host: '127.0.0.1', port: 1 },
      java: { home: '/nonexistent', libDir: '/nonexistent' },
      dataDirs: [join(dir, 'data')],
      commitlogDir: join(dir, 'commitlog'),
      savedCachesDir: join(dir, 'saved_caches'),
      hintsDir: join(dir, 'hints'),
      cassandraYaml: join(dir, 'cassandra.yaml'),
      owner: { user: 'cassandra', group: 'cassandra', uid: 999, gid: 999 },
      service: { kind: 'systemd', unit: 'cassandra.service' },
    };
    writeFileSync(profilePath, JSON.stringify(profile));
    agent = new Agent({
      url: BUS_URL,
      hostId: HOST,
      profilePath,
      storage,
      stateDb: join(dir, 'state.db'),
      env: { ...testEnv, CBR_BACKUP_STRATEGY: 'incremental' },
      log: silentLogger,
      prefix,
      steps: {
        backup: (input) => {
          inputs.set(input.backupId, input);
          return instantSteps.backup(input);
        },
        restore: instantSteps.restore,
      },
    });
    await agent.start();
    await agent.waitForConnect();
    conn = await amqplib.connect(BUS_URL);
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    await ch.bindQueue(queue, `${prefix}cbr.events`, '#');
    await ch.consume(queue, (m) => m && events.push(JSON.parse(m.content.toString()) as BusEvent), { noAck: true });
  });

  after(async () => {
    await agent?.stop().catch(() => {});
    await conn?.close();
    await removeBusTopology(prefix, [HOST]);
  });

  /** Publishes a backup.create and waits for its outcome: the result of its workflow, or its refusal. */
  async function send(payload: Record<string, unknown>): Promise<{ id: string; outcome: BusEvent }> {
    const id = randomUUID();
    await publishRaw(prefix, HOST, {
      version: 1,
      id,
      type: 'backup.create',
      host: HOST,
      issuedAt: new Date().toISOString(),
      payload: { name: 'n', ...payload },
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const outcome = events.find((e) => e.workflowId === id && (e.type === 'result' || e.type === 'rejected'));
      if (outcome) return { id, outcome };
      if (Date.now() > deadline) throw new Error(`no outcome for backup.create ${JSON.stringify(payload)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const chosen = (id: string) => {
    const i = inputs.get(id);
    return i && { strategy: i.strategy, parent: i.parent, concurrency: i.concurrency };
  };

  it("incremental follows the host's latest COMPLETED backup (not another host's later one); --parent picks an earlier one", async () => {
    const latest = await send({ strategy: 'incremental', concurrency: 8 });
    assert.equal(latest.outcome.error, null, JSON.stringify(latest.outcome.error));
    assert.deepEqual(chosen(latest.id), { strategy: 'incremental', parent: 'own-2', concurrency: 8 });
    const explicit = await send({ strategy: 'incremental', parent: 'own-1' });
    assert.deepEqual(chosen(explicit.id), { strategy: 'incremental', parent: 'own-1', concurrency: 4 });
  });

  it("a payload without strategy takes the agent's CBR_BACKUP_STRATEGY; strategy full in the payload wins over it", async () => {
    const unsaid = await send({});
    assert.deepEqual(chosen(unsaid.id), { strategy: 'incremental', parent: 'own-2', concurrency: 4 });
    const full = await send({ strategy: 'full' });
    assert.deepEqual(chosen(full.id), { strategy: 'full', parent: null, concurrency: 4 });
  });

  it("a missing parent, another host's, or one with strategy full is refused with its code and starts nothing", async () => {
    const missing = await send({ strategy: 'incremental', parent: 'missing' });
    assert.equal(missing.outcome.error?.code, 'CBR_ERR_BACKUP_NOT_FOUND');
    const theirs = await send({ parent: 'theirs' });
    assert.equal(theirs.outcome.error?.code, 'CBR_ERR_INVALID_ARGUMENT');
    assert.match(theirs.outcome.error?.message ?? '', /backup of host other/);
    const contradiction = await send({ strategy: 'full', parent: 'own-1' });
    assert.equal(contradiction.outcome.type, 'rejected');
    assert.equal(contradiction.outcome.error?.code, 'CBR_ERR_COMMAND_INVALID');
    for (const r of [missing, theirs, contradiction]) assert.equal(inputs.has(r.id), false, 'no workflow started');
  });
});
