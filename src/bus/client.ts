import { randomUUID } from 'node:crypto';
import amqplib, { type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Message } from 'amqplib';
import { CbrError } from '../core/errors.ts';
import type { Command } from './schemas/commands.ts';
import { type BusEvent, parseEvent } from './schemas/events.ts';
import { parseStatusReply, STATUS_QUERY_TYPE, STATUS_REPLY_TYPE, type StatusQuery, type StatusReply } from './schemas/status.ts';
import { signCommand } from './signing.ts';
import { declareTopology, type Topology, topology } from './topology.ts';

/** amqp://user:password@host → amqp://user:***@host, for any message that names the broker. */
export function redactUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]+:)[^@]*@/, '$1***@');
}

export async function connectBus(url: string): Promise<ChannelModel> {
  try {
    return await amqplib.connect(url);
  } catch (err) {
    throw new CbrError('CBR_ERR_BUS_UNAVAILABLE', `cannot connect to ${redactUrl(url)}: ${(err as Error).message.replaceAll(url, redactUrl(url))}`);
  }
}

export type CommandDraft = Omit<Command, 'version' | 'id' | 'issuedAt' | 'signature'> & { id?: string };

/**
 * The envelope of a draft: id (unless given), version, issue time, and the signature when there is a key. The
 * signature covers the bus prefix the command is published under, so it is refused under any other.
 */
function buildCommand(draft: CommandDraft, prefix: string, key?: Buffer | null): Command {
  const base = { ...draft, version: 1 as const, id: draft.id ?? randomUUID(), issuedAt: new Date().toISOString() } as Command;
  return key ? signCommand(base, key, prefix) : base;
}

/** Persistent and `mandatory`: a command no agent queue takes comes back as a return, never silently dropped. */
function publish(ch: ConfirmChannel, t: Topology, command: Command): void {
  ch.publish(t.commands, command.host, Buffer.from(JSON.stringify(command)), {
    persistent: true,
    mandatory: true,
    contentType: 'application/json',
    messageId: command.id,
  });
}

/** How long a CLI following its command waits for a broker that went away before it reports the outcome unknown. */
export const DEFAULT_OUTAGE_DEADLINE_MS = 5 * 60 * 1000;
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
async function subscribe(o: {
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
function askStatus(ch: ConfirmChannel, t: Topology, replyTo: string, host: string | undefined, payload: StatusQuery['payload']): string {
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
function resyncer(o: {
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
    if (w.kind === 'backup' || w.kind === 'restore') out.push({ ...base, type: 'state', at: w.updatedAt, state: w.state, status: w.status, error });
    if (w.status === 'active' && w.progress) out.push({ ...base, type: 'progress', at: reply.at, step: w.step ?? w.state, progress: w.progress });
    if (w.status === 'done') out.push({ ...base, type: 'result', at: w.updatedAt, state: w.state, status: 'done', error, result: w.result ?? {} });
  }
  return out;
}

function outcomeUnknown(host: string, id: string, prefix: string, why: string): CbrError {
  const p = prefix ? ` --prefix ${prefix}` : '';
  return new CbrError(
    'CBR_ERR_OUTCOME_UNKNOWN',
    `outcome unknown: ${why}. Workflow ${id} on host ${host} may still be running, or may have completed or failed; ` +
      `ask its agent again (same --bus): cbr status --host ${host} --workflow ${id}${p}, or follow it: cbr watch --host ${host} --workflow ${id}${p}`,
    { details: { workflowId: id, host } },
  );
}

/**
 * Publishes one command and follows its events until its result: binds a private queue to the command's events
 * before publishing (so none is missed), publishes with confirms and `mandatory` (an unknown host is an error,
 * not a silent drop), then calls onEvent for each event. When the broker goes away it reconnects (capped,
 * jittered backoff), binds again and asks the agent for the workflow's status, so events it missed meanwhile
 * (the final one included) come back as `resync` events. A broker away longer than `outageDeadlineMs` (default
 * 5 min) ends it with CBR_ERR_OUTCOME_UNKNOWN, never a failure: the workflow goes on without us.
 */
export async function runCommand(opts: {
  url: string;
  prefix?: string;
  draft: CommandDraft;
  signingKey?: Buffer | null;
  onEvent?: (e: BusEvent) => void;
  outageDeadlineMs?: number;
  reconnect?: ReconnectOptions;
  onNotice?: (n: BusNotice) => void;
}): Promise<BusEvent & { commandId: string }> {
  const t = topology(opts.prefix);
  const prefix = opts.prefix ?? '';
  const command = buildCommand(opts.draft, prefix, opts.signingKey);
  const { id, host } = command;
  const deadlineMs = opts.outageDeadlineMs ?? DEFAULT_OUTAGE_DEADLINE_MS;
  let settled = false;
  let settle!: (r: { event: BusEvent } | { error: Error }) => void;
  const outcome = new Promise<BusEvent>((resolve, reject) => {
    settle = (r) => {
      if (settled) return;
      settled = true;
      if ('event' in r) resolve(r.event);
      else reject(r.error);
    };
  });
  const deliver = (e: BusEvent) => {
    if (settled || e.workflowId !== id || e.host !== host) return;
    opts.onEvent?.(e);
    if (e.type === 'result' || e.type === 'rejected') settle({ event: e });
  };
  let outage: NodeJS.Timeout | null = null;
  const resync = resyncer({ t, host, workflowId: id, onReply: (reply) => statusEvents(reply).forEach(deliver), onNotice: opts.onNotice });
  const sub = await subscribe({
    url: opts.url,
    t,
    bindings: [`${host}.${id}.*`],
    reconnect: opts.reconnect ?? true,
    onMessage: (msg) => {
      if (resync.handle(msg)) return;
      const e = parseEvent(msg.content);
      if (e) deliver(e);
    },
    onReturn: (msg) => {
      if (msg.fields.exchange === t.commands && msg.properties.messageId === id) {
        settle({ error: new CbrError('CBR_ERR_BUS_UNAVAILABLE', `no agent queue for host ${host} (is its agent running?)`) });
      } else resync.onReturn(msg, t);
    },
    onReady: (ch, queue, reconnected) => {
      if (outage) clearTimeout(outage);
      outage = null;
      if (reconnected && !settled) resync.ask(ch, queue, true);
    },
    onNotice: (n) => {
      if (n.type === 'disconnected' && !outage && !settled) {
        outage = setTimeout(
          () => settle({ error: outcomeUnknown(host, id, prefix, `the broker has been unreachable for ${formatMs(deadlineMs)} (the deadline)`) }),
          deadlineMs,
        );
      }
      opts.onNotice?.(n);
    },
  });
  try {
    const live = sub.current();
    if (!live) throw new CbrError('CBR_ERR_BUS_UNAVAILABLE', `lost ${redactUrl(opts.url)} before the command was sent`);
    publish(live.ch, t, command);
    // The broker sends basic.return before the confirm of an unroutable message.
    await live.ch.waitForConfirms().catch(() => {
      // Sent, not confirmed: it may or may not be in the host's queue. Sending it again would be a replay.
      settle({ error: outcomeUnknown(host, id, prefix, 'the broker connection was lost before it confirmed the command') });
    });
    return { ...(await outcome), commandId: id };
  } finally {
    if (outage) clearTimeout(outage);
    resync.stop();
    await sub.close();
  }
}

function formatMs(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000} min` : `${Math.round(ms / 100) / 10} s`;
}

/**
 * Publishes one command without waiting for its workflow (the live view follows it through its events). Resolves
 * once the broker confirmed it; an unroutable command (no agent queue for that host) is an error.
 */
export async function publishCommand(opts: { url: string; prefix?: string; draft: CommandDraft; signingKey?: Buffer | null }): Promise<Command> {
  const t = topology(opts.prefix);
  const conn = await connectBus(opts.url);
  try {
    const ch = await conn.createConfirmChannel();
    await declareTopology(ch, t);
    const command = buildCommand(opts.draft, opts.prefix ?? '', opts.signingKey);
    let returned = false;
    ch.on('return', () => {
      returned = true;
    });
    publish(ch, t, command);
    // The broker sends basic.return before the confirm of an unroutable message.
    await ch.waitForConfirms();
    if (returned) throw new CbrError('CBR_ERR_BUS_UNAVAILABLE', `no agent queue for host ${command.host} (is its agent running?)`);
    return command;
  } finally {
    await conn.close().catch(() => {});
  }
}

/**
 * Subscribes to events (all, or one host's, or one workflow's) until the returned function is called. At every
 * (re)connect it first asks the agents (the one host, or all) for the present state and replays it as `resync`
 * events, so a live view starts from what is, not from an empty page, and nothing missed while away stays
 * missed. With `reconnect` it reconnects with capped, jittered backoff after a loss (`cbr watch`); without it,
 * `closed` resolves at the first loss and the caller reconnects (the ui server, which shows the bus as down).
 */
export async function watchEvents(opts: {
  url: string;
  prefix?: string;
  host?: string | undefined;
  workflow?: string | undefined;
  onEvent: (e: BusEvent) => void;
  reconnect?: boolean | ReconnectOptions;
  /** Ask the agents for the present state at every (re)connect (default true). */
  resync?: boolean;
  onNotice?: (n: BusNotice) => void;
}): Promise<{ close: () => Promise<void>; closed: Promise<void> }> {
  const t = topology(opts.prefix);
  const emit = (e: BusEvent) => {
    try {
      opts.onEvent(e);
    } catch {
      /* a listener's failure is not the subscription's */
    }
  };
  const resync = resyncer({ t, host: opts.host, workflowId: opts.workflow, onReply: (reply) => statusEvents(reply).forEach(emit), onNotice: opts.onNotice });
  const sub = await subscribe({
    url: opts.url,
    t,
    bindings: [`${opts.host ?? '*'}.${opts.workflow ?? '*'}.*`],
    reconnect: opts.reconnect ?? false,
    onMessage: (msg) => {
      if (resync.handle(msg)) return;
      const e = parseEvent(msg.content);
      if (e) emit(e);
    },
    onReturn: (msg) => resync.onReturn(msg, t),
    onReady: (ch, queue, reconnected) => {
      if (opts.resync !== false) resync.ask(ch, queue, reconnected);
    },
    onNotice: opts.onNotice,
  });
  const closed = sub.closed.then(() => resync.stop());
  return {
    close: async () => {
      resync.stop();
      await sub.close();
    },
    closed,
  };
}

/**
 * Asks agents for their status: one host's agent (resolves with its answer, or none within timeoutMs), or every
 * agent (collects the answers that come within timeoutMs, one per host). A query no agent takes (returned: the
 * agent is away or still reconnecting) is asked again every 500 ms until the time is up. `cbr status` uses it.
 */
export async function queryStatus(opts: {
  url: string;
  prefix?: string;
  host?: string | undefined;
  workflowId?: string | undefined;
  limit?: number | undefined;
  timeoutMs?: number;
}): Promise<StatusReply[]> {
  const t = topology(opts.prefix);
  const conn = await connectBus(opts.url);
  try {
    const ch = await conn.createConfirmChannel();
    await declareTopology(ch, t);
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    const replies: StatusReply[] = [];
    const payload = { ...(opts.workflowId ? { workflowId: opts.workflowId } : {}), ...(opts.limit ? { limit: opts.limit } : {}) };
    const asked: string[] = [];
    let again: NodeJS.Timeout | null = null;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(done, opts.timeoutMs ?? (opts.host ? 10_000 : 2000));
      function done() {
        clearTimeout(timer);
        if (again) clearTimeout(again);
        resolve();
      }
      // Returned: no agent (for that host) listens on the bus now, perhaps still reconnecting: ask again soon.
      ch.on('return', () => {
        if (again) clearTimeout(again);
        again = setTimeout(() => asked.push(askStatus(ch, t, queue, opts.host, payload)), 500);
      });
      ch.consume(
        queue,
        (msg: ConsumeMessage | null) => {
          if (!msg || msg.properties.type !== STATUS_REPLY_TYPE) return;
          const r = parseStatusReply(msg.content);
          if (!r || !asked.includes(r.queryId) || replies.some((x) => x.host === r.host)) return;
          replies.push(r);
          if (opts.host) done();
        },
        { noAck: true },
      ).then(() => {
        asked.push(askStatus(ch, t, queue, opts.host, payload));
      }, reject);
    });
    return replies;
  } finally {
    await conn.close().catch(() => {});
  }
}
