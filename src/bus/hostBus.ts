import { randomUUID } from 'node:crypto';
import type { ConfirmChannel, ConsumeMessage, Message } from 'amqplib';
import { CbrError, type ErrorInfo, isErrorCode } from '../core/errors.ts';
import type { HostBus, HostReply } from '../runtime/clusterWiring.ts';
import { connectBus } from './client.ts';
import type { Command } from './schemas/commands.ts';
import { parseStatusReply, STATUS_REPLY_TYPE, type StatusReply } from './schemas/status.ts';
import { signCommand } from './signing.ts';
import { askStatus } from './subscriber.ts';
import { declareTopology, topology } from './topology.ts';

export interface HostBusOptions {
  url: string;
  prefix?: string;
  signingKey?: Buffer | null;
  /** How long one host's status answer is waited for (default 5 s). */
  askTimeoutMs?: number;
  /** How long a broadcast collects answers (default 2 s). */
  broadcastMs?: number;
}

/**
 * The coordinator's bus (src/steps/cluster/deps.ts HostBus) over AMQP: one connection, a confirm channel and a
 * private reply queue. Commands are published as a CLI publishes them (persistent, `mandatory`, signed when the
 * agent has a key); status queries go to one host or to every agent and are matched to their answers by
 * correlation id. A query no agent queue takes (the agent is away) comes back at once as no answer.
 */
/**
 * Whether a status reply is the asked host's own. Replies are not signed and a query id can be seen by any agent on
 * the bus: one naming another host (a misrouted or forged answer) is dropped, never taken as the asked host's state
 * or node address (the record would give one host's part another node's id and tokens).
 */
export function replyFrom(host: string, r: Pick<StatusReply, 'host'>): boolean {
  return r.host === host;
}

export async function openHostBus(o: HostBusOptions): Promise<HostBus> {
  const t = topology(o.prefix);
  const conn = await connectBus(o.url);
  conn.on('error', () => {});
  const ch: ConfirmChannel = await conn.createConfirmChannel();
  ch.on('error', () => {});
  await declareTopology(ch, t);
  const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
  /** Queries to one host, by query id: the host asked, and who takes its answer. */
  const waiting = new Map<string, { host: string; finish: (r: StatusReply | null) => void }>();
  const collecting = new Map<string, StatusReply[]>();
  const returned = new Set<string>();
  ch.on('return', (msg: Message) => {
    const id = String(msg.properties.messageId ?? '');
    if (msg.fields.exchange === t.status) waiting.get(id)?.finish(null);
    else returned.add(id);
  });
  await ch.consume(
    queue,
    (msg: ConsumeMessage | null) => {
      if (!msg || msg.properties.type !== STATUS_REPLY_TYPE) return;
      const r = parseStatusReply(msg.content);
      if (!r) return;
      const asked = waiting.get(r.queryId);
      if (asked && replyFrom(asked.host, r)) asked.finish(r);
      collecting.get(r.queryId)?.push(r);
    },
    { noAck: true },
  );
  // A code this version does not know (a newer agent's) travels as an internal error with its message kept.
  const coded = (e: StatusReply['workflows'][number]['error']): ErrorInfo | null =>
    e ? { code: isErrorCode(e.code) ? e.code : 'CBR_ERR_INTERNAL', message: e.message, retryable: e.retryable } : null;
  const toReply = (r: StatusReply): HostReply => ({
    host: r.host,
    ...(r.cluster ? { cluster: r.cluster } : {}),
    ...(r.address ? { address: r.address } : {}),
    workflows: r.workflows.map((w) => ({ ...w, error: coded(w.error) })),
  });
  return {
    async send(host, type, payload, id) {
      const base = { version: 1 as const, id: id ?? randomUUID(), type, host, issuedAt: new Date().toISOString(), payload } as Command;
      const command = o.signingKey ? signCommand(base, o.signingKey, o.prefix ?? '') : base;
      ch.publish(t.commands, host, Buffer.from(JSON.stringify(command)), {
        persistent: true,
        mandatory: true,
        contentType: 'application/json',
        messageId: command.id,
      });
      await ch.waitForConfirms();
      if (returned.delete(command.id)) throw new CbrError('CBR_ERR_BUS_UNAVAILABLE', `no agent queue for host ${host} (is its agent running?)`);
      return command.id;
    },
    async ask(host, workflowId, signal) {
      signal.throwIfAborted();
      return new Promise<HostReply | null>((resolve, reject) => {
        let id = '';
        const finish = (r: StatusReply | null) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          waiting.delete(id);
          resolve(r && !r.error ? toReply(r) : null);
        };
        const onAbort = () => {
          clearTimeout(timer);
          waiting.delete(id);
          reject(signal.reason);
        };
        const timer = setTimeout(() => finish(null), o.askTimeoutMs ?? 5000);
        signal.addEventListener('abort', onAbort, { once: true });
        id = askStatus(ch, t, queue, host, workflowId ? { workflowId } : {});
        waiting.set(id, { host, finish });
      });
    },
    async everyone(signal) {
      const id = askStatus(ch, t, queue, undefined, { limit: 1 });
      collecting.set(id, []);
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(resolve, o.broadcastMs ?? 2000);
          signal.addEventListener(
            'abort',
            () => {
              clearTimeout(timer);
              reject(signal.reason);
            },
            { once: true },
          );
        });
        const seen = new Map<string, HostReply>();
        for (const r of collecting.get(id) ?? []) if (!r.error) seen.set(r.host, toReply(r));
        return [...seen.values()];
      } finally {
        collecting.delete(id);
      }
    },
    async close() {
      await conn.close().catch(() => {});
    },
  };
}
