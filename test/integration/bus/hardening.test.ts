import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import amqplib from 'amqplib';
import { Agent } from '../../../src/bus/agent.ts';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import { silentLogger } from '../../../src/core/log.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { BUS_URL, publishRaw, removeBusTopology } from '../../helpers/bus.ts';
import { scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';

const prefix = `h${process.pid}.`;

/** Security-review findings (issue 11) that need the real broker and a real node. */
describe('hardening over the bus (real RabbitMQ, real node)', () => {
  let agent: Agent;
  let stateDb: string;
  let events: BusEvent[];
  let conn: amqplib.ChannelModel;

  before(async () => {
    await sharedNode('target');
    stateDb = join(scratchDir('state-hardening'), 'state.db');
    const storage = { driver: 'local' as const, root: scratchDir('hardening-storage'), container: 'database_backups' };
    // Each step waits 3 s first, so a workflow is still active when the next command arrives.
    agent = new Agent({
      url: BUS_URL,
      hostId: 'hardened',
      profilePath: profilePath('target', testEnv),
      storage,
      stateDb,
      env: { ...testEnv, CBR_STORAGE_ROOT: storage.root },
      log: silentLogger,
      prefix,
      stepDelayMs: 3000,
    });
    await agent.start();
    await agent.waitForConnect();
    events = [];
    conn = await amqplib.connect(BUS_URL);
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    await ch.bindQueue(queue, `${prefix}cbr.events`, '#');
    await ch.consume(queue, (m) => m && events.push(JSON.parse(m.content.toString()) as BusEvent), { noAck: true });
  });

  after(async () => {
    await agent?.stop().catch(() => {});
    await conn.close();
    await removeBusTopology(prefix, ['hardened']);
  });

  it('two restore.create commands published at once: one runs, the other is refused with CBR_ERR_WORKFLOW_CONFLICT', async () => {
    const ids = [randomUUID(), randomUUID()];
    const command = (id: string) => ({
      version: 1,
      id,
      type: 'restore.create',
      host: 'hardened',
      issuedAt: new Date().toISOString(),
      // No such backup: the admitted restore fails in its check (after the drill delay) and touches nothing.
      payload: { backupId: `missing-${id.slice(0, 8)}`, instanceName: 'target' },
    });
    await Promise.all(ids.map((id) => publishRaw(prefix, 'hardened', command(id))));
    const deadline = Date.now() + 30_000;
    const outcome = (id: string) => events.find((e) => e.workflowId === id && (e.status === 'done' || e.type === 'result'));
    while (Date.now() < deadline && !ids.every(outcome)) await new Promise((r) => setTimeout(r, 100));
    const db = new StateDb(stateDb, { readOnly: true });
    const started = ids.filter((id) => db.get(id));
    db.close();
    assert.equal(started.length, 1, `exactly one of the two restores was admitted (admitted: ${started.length})`);
    const refused = ids.find((id) => !started.includes(id))!;
    assert.equal(outcome(refused)?.error?.code, 'CBR_ERR_WORKFLOW_CONFLICT', 'the other is refused as a conflict');
    assert.equal(outcome(started[0]!)?.error?.code, 'CBR_ERR_BACKUP_NOT_FOUND', 'the admitted one ran its check');
  });
});
