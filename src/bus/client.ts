import { randomUUID } from 'node:crypto';
import amqplib, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { CbrError } from '../errors.ts';
import { type Command, signCommand } from './commands.ts';
import { type BusEvent, declareTopology, type Topology, topology } from './topology.ts';

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

/** The envelope of a draft: id (unless given), version, issue time, and the signature when there is a key. */
function buildCommand(draft: CommandDraft, key?: Buffer | null): Command {
  const base = { ...draft, version: 1 as const, id: draft.id ?? randomUUID(), issuedAt: new Date().toISOString() } as Command;
  return key ? signCommand(base, key) : base;
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
 * not a silent drop), then calls onEvent for each event.
 */
export async function runCommand(opts: {
  url: string;
  prefix?: string;
  draft: CommandDraft;
  signingKey?: Buffer | null;
  onEvent?: (e: BusEvent) => void;
}): Promise<BusEvent & { commandId: string }> {
  const t = topology(opts.prefix);
  const conn = await connectBus(opts.url);
  try {
    const ch = await conn.createConfirmChannel();
    await declareTopology(ch, t);
    const command = buildCommand(opts.draft, opts.signingKey);
    const { id } = command;
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    await ch.bindQueue(queue, t.events, `${command.host}.${id}.*`);
    const result = new Promise<BusEvent>((resolve, reject) => {
      ch.on('return', () => reject(new CbrError('CBR_ERR_BUS_UNAVAILABLE', `no agent queue for host ${command.host} (is its agent running?)`)));
      conn.on('close', () => reject(new CbrError('CBR_ERR_BUS_UNAVAILABLE', 'the broker closed the connection')));
      void ch.consume(
        queue,
        (msg: ConsumeMessage | null) => {
          if (!msg) return;
          let e: BusEvent;
          try {
            e = JSON.parse(msg.content.toString('utf8')) as BusEvent;
          } catch {
            return;
          }
          opts.onEvent?.(e);
          if (e.type === 'result' || e.type === 'rejected') resolve(e);
        },
        { noAck: true },
      );
    });
    publish(ch, t, command);
    await ch.waitForConfirms();
    return { ...(await result), commandId: id };
  } finally {
    await conn.close().catch(() => {});
  }
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
    const command = buildCommand(opts.draft, opts.signingKey);
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

/** Subscribes to events (all, or one host's, or one workflow's) until the returned function is called. */
export async function watchEvents(opts: {
  url: string;
  prefix?: string;
  host?: string | undefined;
  workflow?: string | undefined;
  onEvent: (e: BusEvent) => void;
}): Promise<{ close: () => Promise<void>; closed: Promise<void> }> {
  const t = topology(opts.prefix);
  const conn = await connectBus(opts.url);
  const ch = await conn.createChannel();
  await declareTopology(ch, t);
  const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
  await ch.bindQueue(queue, t.events, `${opts.host ?? '*'}.${opts.workflow ?? '*'}.*`);
  const closed = new Promise<void>((resolve) => conn.on('close', () => resolve()));
  await ch.consume(
    queue,
    (msg: ConsumeMessage | null) => {
      if (!msg) return;
      try {
        opts.onEvent(JSON.parse(msg.content.toString('utf8')) as BusEvent);
      } catch {
        /* not an event */
      }
    },
    { noAck: true },
  );
  return { close: () => conn.close().catch(() => {}), closed };
}
