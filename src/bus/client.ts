import { randomUUID } from 'node:crypto';
import amqplib, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { CbrError } from '../core/errors.ts';
import type { Command } from './schemas/commands.ts';
import { type BusEvent, parseEvent } from './schemas/events.ts';
import { parseStatusReply, STATUS_REPLY_TYPE, type StatusReply } from './schemas/status.ts';
import { signCommand } from './signing.ts';
import {
  askStatus,
  type BusNotice,
  DEFAULT_OUTAGE_DEADLINE_MS,
  outcomeUnknown,
  type ReconnectOptions,
  redactUrl,
  resyncer,
  statusEvents,
  subscribe,
} from './subscriber.ts';
import { declareTopology, type Topology, topology } from './topology.ts';

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
  /**
   * For a command that starts no persisted workflow (verify, prune, drill): ask its agent this often whether it still
   * runs it. Once seen running (a status answer says so, or a progress event), an answer that no longer knows it (the
   * agent died or restarted mid-run: it keeps no record of such a run) ends the wait with CBR_ERR_RUN_LOST.
   */
  liveness?: { everyMs: number };
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
  let seenRunning = false;
  const deliver = (e: BusEvent) => {
    if (settled || e.workflowId !== id || e.host !== host) return;
    // Progress alone does not count as seen running: an agent from before liveness answers status without its
    // verifies, prunes and drills, which would then read as lost. Only a status answer naming it active counts.
    opts.onEvent?.(e);
    if (e.type === 'result' || e.type === 'rejected') settle({ event: e });
  };
  let outage: NodeJS.Timeout | null = null;
  const liveness = livenessCheck(host, id, {
    onRunning: () => {
      seenRunning = true;
    },
    onReply: (reply) => statusEvents(reply).forEach(deliver),
    onUnknown: () => {
      if (seenRunning)
        settle({
          error: new CbrError(
            'CBR_ERR_RUN_LOST',
            `the agent of ${host} no longer runs ${id}: it was running, and the agent's status no longer knows it (the agent died or restarted mid-run); no result will come: run it again`,
            { details: { workflowId: id, host } },
          ),
        });
    },
  });
  const resync = resyncer({ t, host, workflowId: id, onReply: (reply) => statusEvents(reply).forEach(deliver), onNotice: opts.onNotice });
  const sub = await subscribe({
    url: opts.url,
    t,
    bindings: [`${host}.${id}.*`],
    reconnect: opts.reconnect ?? true,
    onMessage: (msg) => {
      if (liveness.handle(msg) || resync.handle(msg)) return;
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
    if (opts.liveness && !settled) liveness.start(() => sub.current(), t, opts.liveness.everyMs);
    return { ...(await outcome), commandId: id };
  } finally {
    liveness.stop();
    if (outage) clearTimeout(outage);
    resync.stop();
    await sub.close();
  }
}

/** Asks one agent, every `everyMs`, for one command's status on the subscriber's queue; its answers are taken off here. */
function livenessCheck(host: string, id: string, on: { onRunning: () => void; onReply: (r: StatusReply) => void; onUnknown: () => void }) {
  const asked = new Set<string>();
  let timer: NodeJS.Timeout | null = null;
  return {
    start(current: () => { ch: ConfirmChannel; queue: string } | null, t: Topology, everyMs: number): void {
      timer = setInterval(() => {
        const live = current();
        if (!live) return; // reconnecting: the resync asks then
        try {
          asked.add(askStatus(live.ch, t, live.queue, host, { workflowId: id }));
          if (asked.size > 32) asked.delete(asked.values().next().value!);
        } catch {
          /* the channel is gone: asked again at the next tick */
        }
      }, everyMs);
    },
    handle(msg: ConsumeMessage): boolean {
      if (msg.properties.type !== STATUS_REPLY_TYPE) return false;
      const reply = parseStatusReply(msg.content);
      if (!reply || !asked.delete(reply.queryId)) return false;
      if (reply.error || reply.host !== host) return true;
      const w = reply.workflows.find((x) => x.workflowId === id);
      if (!w) on.onUnknown();
      else {
        if (w.status === 'active') on.onRunning();
        on.onReply(reply);
      }
      return true;
    },
    stop(): void {
      if (timer) clearInterval(timer);
      timer = null;
    },
  };
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
