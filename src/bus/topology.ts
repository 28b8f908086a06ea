import type { Channel } from 'amqplib';
import type { BusEvent } from './schemas/events.ts';

/**
 * The AMQP topology, declared by this one function on every (re)connect of the agent and the CLI. A prefix
 * namespaces everything (tests use one per run). deploy/rabbitmq/definitions.json declares the same for the
 * default prefix.
 *
 *   <p>cbr.commands     direct exchange; routing key = host id
 *   <p>cbr.host.<host>  quorum queue per host, dead-lettering to <p>cbr.dead-letter, delivery limit 20
 *   <p>cbr.events       topic exchange; routing key = <host>.<workflow id>.<state|progress|result|rejected>
 *                       (the events: src/bus/schemas/events.ts)
 *   <p>cbr.dead-letter  fanout exchange -> <p>cbr.dead (rejected commands, with the reason in headers)
 *   <p>cbr.status       direct exchange for read-only status queries; each agent binds a private queue with its
 *                       host id and with '' (a query for every agent); replies go to the asker's replyTo queue
 */
export interface Topology {
  commands: string;
  events: string;
  deadLetter: string;
  deadQueue: string;
  status: string;
  hostQueue(host: string): string;
}

export function topology(prefix = ''): Topology {
  return {
    commands: `${prefix}cbr.commands`,
    events: `${prefix}cbr.events`,
    deadLetter: `${prefix}cbr.dead-letter`,
    deadQueue: `${prefix}cbr.dead`,
    status: `${prefix}cbr.status`,
    hostQueue: (host) => `${prefix}cbr.host.${host}`,
  };
}

export async function declareTopology(ch: Channel, t: Topology, hostId?: string): Promise<void> {
  await ch.assertExchange(t.commands, 'direct', { durable: true });
  await ch.assertExchange(t.events, 'topic', { durable: true });
  await ch.assertExchange(t.deadLetter, 'fanout', { durable: true });
  await ch.assertExchange(t.status, 'direct', { durable: true });
  await ch.assertQueue(t.deadQueue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  await ch.bindQueue(t.deadQueue, t.deadLetter, '');
  if (hostId) {
    const q = t.hostQueue(hostId);
    await ch.assertQueue(q, {
      durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-dead-letter-exchange': t.deadLetter, 'x-delivery-limit': 20 },
    });
    await ch.bindQueue(q, t.commands, hostId);
  }
}

export function routingKey(e: Pick<BusEvent, 'host' | 'workflowId' | 'type'>): string {
  return `${e.host}.${e.workflowId}.${e.type}`;
}
