import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { topology } from '../../../src/bus/topology.ts';
import { REPO } from '../../helpers/paths.ts';

describe('deploy/rabbitmq/definitions.json', () => {
  it('declares the same exchanges, queues and arguments as declareTopology for the default prefix', async () => {
    const defs = JSON.parse(await readFile(join(REPO, 'deploy', 'rabbitmq', 'definitions.json'), 'utf8'));
    const t = topology();
    const ex = Object.fromEntries(defs.exchanges.map((e: { name: string; type: string }) => [e.name, e.type]));
    assert.deepEqual(ex, { [t.commands]: 'direct', [t.events]: 'topic', [t.deadLetter]: 'fanout', [t.status]: 'direct' });
    const host = defs.queues.find((q: { name: string }) => q.name === t.hostQueue('node-1'));
    assert.deepEqual(host.arguments, { 'x-queue-type': 'quorum', 'x-dead-letter-exchange': t.deadLetter, 'x-delivery-limit': 20 });
    assert.ok(defs.queues.some((q: { name: string }) => q.name === t.deadQueue));
  });
});
