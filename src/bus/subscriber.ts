import { randomUUID } from 'node:crypto';
import amqplib, { type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Message } from 'amqplib';
import { CbrError } from '../core/errors.ts';
import type { BusEvent } from './schemas/events.ts';
import { parseStatusReply, STATUS_QUERY_TYPE, STATUS_REPLY_TYPE, type StatusQuery, type StatusReply } from './schemas/status.ts';
import { declareTopology, type Topology } from './topology.ts';

/*
 * A subscriber that survives broker outages: its own queue on the events exchange, reconnects, and after each
 * reconnect asks the agents (status queries) for what it may have missed, turning their answers into events.
 */

/** How long a CLI following its command waits for a broker that went away before it reports the outcome unknown. */
/** amqp://user:password@host → amqp://user:***@host, for any message that names the broker. */
export function redactUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]+:)[^@]*@/, '$1***@');
}

export { DEFAULT_OUTAGE_DEADLINE_MS } from './outage.ts';

/** A status query nobody answered (no agent listening yet, an answer lost) is asked again this often. */
const STATUS_RETRY_MS = 5000;

/** How subscribers reconnect: amqplib's recovery, doubling from initialDelayMs up to maxDelayMs, ±20 % jitter. */
export interface ReconnectOptions {
  initialDelayMs?: number;
  maxDelayMs?: number;
}

/** What a subscriber tells about its connection (the CLI prints these on stderr). */
export type BusNotice =
  | { type: 'disconnected'; error: string }
  | { type: 'reconnected'; downMs: number }
  | { type: 'resynchronised'; host: string; workflows: number; afterReconnectMs: number | null }
  | { type: 'no-agent'; host: string };

interface Subscriber {
  /** The channel and private queue of the live connection; null while the broker is away. */
  current(): { ch: ConfirmChannel; queue: string } | null;
  /** Resolves once the subscription ended: close(), or a loss it does not recover from. */
  closed: Promise<void>;
  close(): Promise<void>;
}

/**
 * A private (exclusive, auto-delete) queue bound to the events exchange, declared again with its bindings and its
 * consumer on every reconnect; `onReady` ends every (re)connect, the place to resynchronise. The first connection
 * is not retried (an unreachable broker at start is CBR_ERR_BUS_UNAVAILABLE at once); later losses are, with
 * capped, jittered backoff, when `reconnect` is set; without it the first loss ends the subscription.
 */
export async function subscribe(o: {
  url: string;
  t: Topology;
  bindings: string[];
  reconnect: boolean | ReconnectOptions;
  onMessage: (msg: ConsumeMessage) => void;
  onReturn: (msg: Message) => void;
  onReady: (ch: ConfirmChannel, queue: string, reconnected: boolean) => void;
  onNotice?: ((n: BusNotice) => void) | undefined;
}): Promise<Subscriber> {
  const r = typeof o.reconnect === 'object' ? o.reconnect : {};
  let current: { ch: ConfirmChannel; queue: string } | null = null;
  let connectedOnce = false;
  let downSince: number | null = null;
  let closing = false;
  let end!: () => void;
  const closed = new Promise<void>((resolve) => {
    end = resolve;
  });
  const conn = await amqplib.connect(o.url, {
    recovery: {
      initialDelay: r.initialDelayMs ?? 250,
      maxDelay: r.maxDelayMs ?? 5000,
      factor: 2,
      jitter: 0.2,
      initialMaxRetries: 0,
      maxRetries: o.reconnect ? Number.POSITIVE_INFINITY : 0,
      waitForConnect: false,
      setup: async (model: ChannelModel) => {
        const ch = await model.createConfirmChannel();
        ch.on('error', () => {});
        // A channel closed under a live connection would leave the subscriber deaf: drop the connection, so it
        // recovers as a whole (when the connection itself closed, this close finds it closed already).
        ch.on('close', () => {
          if (!closing && current?.ch === ch) model.close().catch(() => {});
        });
        ch.on('return', o.onReturn);
        await declareTopology(ch, o.t);
        const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
        for (const key of o.bindings) await ch.bindQueue(queue, o.t.events, key);
        await ch.consume(
          queue,
          (msg: ConsumeMessage | null) => {
            if (msg) o.onMessage(msg);
          },
          { noAck: true },
        );
        current = { ch, queue };
        const reconnected = connectedOnce;
        connectedOnce = true;
        if (reconnected) o.onNotice?.({ type: 'reconnected', downMs: downSince === null ? 0 : Date.now() - downSince });
        downSince = null;
        o.onReady(ch, queue, reconnected);
      },
    },
  });
  conn.on('error', () => {});
  conn.on('disconnect', (err: Error) => {
    current = null;
    downSince ??= Date.now();
    o.onNotice?.({ type: 'disconnected', error: (err?.message ?? 'connection closed').replaceAll(o.url, redactUrl(o.url)) });
  });
  conn.on('reconnect-failed', () => {
    current = null;
    end();
  });
  try {
    await conn.waitForConnect();
  } catch (err) {
    end();
    throw new CbrError('CBR_ERR_BUS_UNAVAILABLE', `cannot connect to ${redactUrl(o.url)}: ${(err as Error).message.replaceAll(o.url, redactUrl(o.url))}`);
  }
  return {
    current: () => current,
    closed,
    close: async () => {
      closing = true;
      current = null;
      await conn.close().catch(() => {});
      end();
    },
  };
}

/** Publishes one status query (see src/bus/schemas/status.ts): to one host's agent, or to every agent (host '*'). */
export function askStatus(ch: ConfirmChannel, t: Topology, replyTo: string, host: string | undefined, payload: StatusQuery['payload']): string {
  const query: StatusQuery = { version: 1, id: randomUUID(), type: STATUS_QUERY_TYPE, host: host ?? '*', issuedAt: new Date().toISOString(), payload };
  ch.publish(t.status, host ?? '', Buffer.from(JSON.stringify(query)), {
    mandatory: true,
    replyTo,
    correlationId: query.id,
    messageId: query.id,
    contentType: 'application/json',
    expiration: '60000',
  });
  return query.id;
}

/**
 * Resynchronisation of one subscriber: `ask` sends a status query (again every STATUS_RETRY_MS until an agent
 * answers), `handle` takes the answers off the subscriber's queue (they arrive there beside the events).
 */
export function resyncer(o: {
  t: Topology;
  host?: string | undefined;
  workflowId?: string | undefined;
  onReply: (r: StatusReply) => void;
  onNotice?: ((n: BusNotice) => void) | undefined;
}) {
  const asked: string[] = [];
  let timer: NodeJS.Timeout | null = null;
  let answered = true;
  let readyAt: number | null = null;
  const stop = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  return {
    ask(ch: ConfirmChannel, queue: string, reconnected: boolean): void {
      stop();
      answered = false;
      readyAt = reconnected ? Date.now() : null;
      const send = () => {
        if (answered) return;
        try {
          asked.push(askStatus(ch, o.t, queue, o.host, o.workflowId ? { workflowId: o.workflowId } : {}));
          if (asked.length > 32) asked.shift();
        } catch {
          return; // the channel is gone: the next reconnect asks again
        }
        timer = setTimeout(send, STATUS_RETRY_MS);
      };
      send();
    },
    /** True when the message was a status reply (consumed here), false for anything else. */
    handle(msg: ConsumeMessage): boolean {
      if (msg.properties.type !== STATUS_REPLY_TYPE) return false;
      const reply = parseStatusReply(msg.content);
      if (!reply || !asked.includes(reply.queryId)) return true;
      answered = true;
      stop();
      o.onNotice?.({
        type: 'resynchronised',
        host: reply.host,
        workflows: reply.workflows.length,
        afterReconnectMs: readyAt === null ? null : Date.now() - readyAt,
      });
      if (!reply.error) o.onReply(reply);
      return true;
    },
    /** A returned query: no agent (for that host) listens on the bus right now; the retry asks again. */
    onReturn(msg: Message, t: Topology): void {
      if (msg.fields.exchange === t.status) o.onNotice?.({ type: 'no-agent', host: o.host ?? '*' });
    },
    stop,
  };
}

/**
 * What a subscriber missed, from a status answer: the present state of each workflow as `resync` events — its
 * state, its progress while active, and once done the `result` its final event carried (or the `rejected`).
 */
export function statusEvents(reply: StatusReply): BusEvent[] {
  const out: BusEvent[] = [];
  for (const w of reply.workflows) {
    const base = { host: reply.host, workflowId: w.workflowId, kind: w.kind, resync: true as const };
    const error = w.error ?? null;
    if (w.state === 'rejected') {
      out.push({ ...base, type: 'rejected', at: w.updatedAt, error });
      continue;
    }
    // Commands that start no workflow only ever have a result event.
    if (w.kind === 'backup' || w.kind === 'restore' || w.kind === 'clusterBackup')
      out.push({ ...base, type: 'state', at: w.updatedAt, state: w.state, status: w.status, error });
    if (w.status === 'active' && w.progress) out.push({ ...base, type: 'progress', at: reply.at, step: w.step ?? w.state, progress: w.progress });
    if (w.status === 'done') out.push({ ...base, type: 'result', at: w.updatedAt, state: w.state, status: 'done', error, result: w.result ?? {} });
  }
  return out;
}

export function outcomeUnknown(host: string, id: string, prefix: string, why: string): CbrError {
  const p = prefix ? ` --prefix ${prefix}` : '';
  return new CbrError(
    'CBR_ERR_OUTCOME_UNKNOWN',
    `outcome unknown: ${why}. Workflow ${id} on host ${host} may still be running, or may have completed or failed; ` +
      `ask its agent again (same --bus): cbr status --host ${host} --workflow ${id}${p}, or follow it: cbr watch --host ${host} --workflow ${id}${p}`,
    { details: { workflowId: id, host } },
  );
}
