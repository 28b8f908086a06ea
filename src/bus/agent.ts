import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import amqplib, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type RecoveringChannelModel } from 'amqplib';
import type { InspectionEvent, Observer } from 'xstate';
import type { BackupContext } from '../../machines/backup.machine.ts';
import type { RestoreContext } from '../../machines/restore.machine.ts';
import { deleteBackup, readRecord } from '../catalog.ts';
import { CbrError, toErrorInfo } from '../errors.ts';
import { writeFileAtomic } from '../fsutil.ts';
import { cbrHome } from '../home.ts';
import type { Logger } from '../log.ts';
import { type StepsFactory, type WorkflowEvent, WorkflowRuntime } from '../runtime/runtime.ts';
import { StateStore } from '../state/store.ts';
import { openStore } from '../storage/index.ts';
import type { StorageConfig } from '../storage/types.ts';
import { type Command, parseCommand } from './commands.ts';
import { type BusEvent, declareTopology, routingKey, type Topology, topology } from './topology.ts';

export interface AgentOptions {
  url: string;
  hostId: string;
  profilePath: string;
  storage: StorageConfig;
  stateDb: string;
  env: NodeJS.ProcessEnv;
  log: Logger;
  /** Namespaces exchanges and queues (default ''). */
  prefix?: string;
  /** When set, only commands with a valid HMAC-SHA256 signature are accepted. */
  signingKey?: Buffer | null;
  /** Fault-injection drills: wait this long before each step. */
  stepDelayMs?: number;
  /** Fake steps (benchmarks); default: the real ones. */
  steps?: StepsFactory;
  /** XState inspection of every workflow actor (see src/inspect.ts). */
  inspect?: Observer<InspectionEvent>;
}

/**
 * The per-host agent. A command is acknowledged only once the workflow it starts is persisted in the host's
 * database, so a crash between the two redelivers it and the command id keeps it from starting twice. Because
 * the ack comes right after that (not when an hours-long backup ends), RabbitMQ's delivery-ack timeout
 * (`consumer_timeout`, global in 3.10) is never reached. Events go through an outbox table in the same database
 * and are deleted only once the broker confirmed them, so a broker outage loses none.
 */
export class Agent {
  readonly #o: AgentOptions;
  readonly #t: Topology;
  readonly #store: StateStore;
  readonly #runtime: WorkflowRuntime;
  #conn: RecoveringChannelModel | null = null;
  #consumeCh: Channel | null = null;
  #consumerTag: string | null = null;
  #pubCh: ConfirmChannel | null = null;
  #publishing = false;
  #publishAgain = false;
  #stopping = false;
  readonly #watching = new Set<Promise<unknown>>();

  constructor(opts: AgentOptions) {
    this.#o = opts;
    this.#t = topology(opts.prefix);
    this.#store = new StateStore(opts.stateDb);
    this.#runtime = new WorkflowRuntime({
      store: this.#store,
      env: opts.env,
      log: opts.log,
      stepDelayMs: opts.stepDelayMs ?? 0,
      ...(opts.steps ? { steps: opts.steps } : {}),
      ...(opts.inspect ? { inspect: opts.inspect } : {}),
      onEvent: (e) => this.#onWorkflowEvent(e),
    });
  }

  get store(): StateStore {
    return this.#store;
  }

  /** Resumes unfinished workflows at once (the broker may be down), then connects and consumes. */
  async start(): Promise<void> {
    for (const w of this.#runtime.orphans()) {
      this.#o.log.info('resuming workflow', { workflowId: w.id, kind: w.kind, state: w.state });
      try {
        this.#watch((await this.#runtime.resume(w.id)).done);
      } catch (err) {
        this.#o.log.error('cannot resume workflow', { workflowId: w.id, error: (err as Error).message });
      }
    }
    this.#conn = await amqplib.connect(this.#o.url, {
      recovery: {
        initialDelay: 200,
        maxDelay: 5000,
        maxRetries: Number.POSITIVE_INFINITY,
        waitForConnect: false,
        setup: async (model: ChannelModel) => {
          const ch = await model.createChannel();
          ch.on('error', (err: Error) => this.#o.log.warn('command channel error', { error: err.message }));
          await declareTopology(ch, this.#t, this.#o.hostId);
          await ch.prefetch(8);
          const pub = await model.createConfirmChannel();
          pub.on('error', (err: Error) => this.#o.log.warn('event channel error', { error: err.message }));
          this.#consumeCh = ch;
          this.#pubCh = pub;
          if (!this.#stopping) {
            const { consumerTag } = await ch.consume(this.#t.hostQueue(this.#o.hostId), (msg: ConsumeMessage | null) => {
              if (msg) void this.#onMessage(ch, msg);
            });
            this.#consumerTag = consumerTag;
          }
          this.#o.log.info('connected to the bus', { queue: this.#t.hostQueue(this.#o.hostId) });
          void this.#drainOutbox();
        },
      },
    });
    this.#conn.on('disconnect', (err: Error) => {
      this.#pubCh = null;
      this.#consumeCh = null;
      this.#o.log.warn('bus disconnected; events wait in the outbox', { error: err?.message });
    });
    this.#conn.on('error', (err: Error) => this.#o.log.warn('bus error', { error: err.message }));
  }

  async waitForConnect(): Promise<void> {
    await this.#conn?.waitForConnect();
  }

  /** Graceful stop: take no more commands, stop the actors (their state stays persisted), flush events, close. */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#consumeCh && this.#consumerTag) await this.#consumeCh.cancel(this.#consumerTag).catch(() => {});
    this.#runtime.stopAll();
    const deadline = Date.now() + 5000;
    while (this.#store.countEvents() > 0 && this.#pubCh && Date.now() < deadline) {
      await this.#drainOutbox();
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.#conn?.close().catch(() => {});
    this.#store.close();
  }

  /** Resolves when every workflow this agent runs has ended (tests and graceful drains). */
  async idle(): Promise<void> {
    while (this.#watching.size) await Promise.allSettled([...this.#watching]);
  }

  #watch(p: Promise<unknown>): void {
    const tracked = p.catch(() => {}).finally(() => this.#watching.delete(tracked));
    this.#watching.add(tracked);
  }

  async #onMessage(ch: Channel, msg: ConsumeMessage): Promise<void> {
    let command: Command;
    try {
      command = parseCommand(msg.content, { hostId: this.#o.hostId, signingKey: this.#o.signingKey ?? null });
    } catch (err) {
      await this.#reject(ch, msg, toErrorInfo(err, 'CBR_ERR_COMMAND_INVALID'));
      return;
    }
    try {
      await this.#handle(command);
      ch.ack(msg);
    } catch (err) {
      // Nothing was persisted: report the failure as the command's result and consume it.
      const error = toErrorInfo(err);
      this.#o.log.warn('command failed to start', { commandId: command.id, type: command.type, code: error.code });
      this.#publish({ type: 'result', host: this.#o.hostId, workflowId: command.id, kind: command.type, at: now(), state: 'failed', status: 'done', error });
      ch.ack(msg);
    }
  }

  /** Dead-letters a command with its reason in headers, reports it, and keeps consuming. */
  async #reject(ch: Channel, msg: ConsumeMessage, error: ReturnType<typeof toErrorInfo>): Promise<void> {
    this.#o.log.warn('command rejected', { code: error.code, reason: error.message });
    const id = safeId(msg);
    try {
      if (!this.#pubCh) throw new Error('no event channel');
      this.#pubCh.publish(this.#t.deadLetter, '', msg.content, {
        persistent: true,
        headers: { 'x-cbr-error-code': error.code, 'x-cbr-error-message': error.message, 'x-cbr-host': this.#o.hostId, 'x-cbr-command-id': id },
        ...(msg.properties.messageId ? { messageId: msg.properties.messageId } : {}),
      });
      await this.#pubCh.waitForConfirms();
      ch.ack(msg);
    } catch {
      // Cannot write the reasoned copy: let the broker dead-letter it (x-death says 'rejected').
      ch.nack(msg, false, false);
    }
    this.#publish({ type: 'rejected', host: this.#o.hostId, workflowId: id, kind: 'command', at: now(), error });
  }

  async #handle(c: Command): Promise<void> {
    if (this.#store.byCommandId(c.id) || this.#store.get(c.id)) {
      this.#o.log.info('duplicate command ignored', { commandId: c.id });
      return;
    }
    switch (c.type) {
      case 'backup.create': {
        const p = c.payload;
        const running = await this.#runtime.startBackup(
          {
            workflowId: c.id,
            backupId: c.id,
            name: p.name,
            description: p.description ?? '',
            profilePath: this.#o.profilePath,
            storage: this.#o.storage,
            compression: p.compression ?? 'zstd',
            keySource: p.encryptKeyFile ? { file: p.encryptKeyFile } : p.encryptKeyEnv ? { env: p.encryptKeyEnv } : null,
            minFreePercent: p.minFreePercent ?? 10,
            rateLimit: p.rateLimit ?? null,
            startedAt: now(),
          },
          { commandId: c.id },
        );
        if (running) this.#watch(running.done);
        return;
      }
      case 'restore.create': {
        const p = c.payload;
        let passwordFile = p.passwordFile;
        if (!passwordFile) {
          const dir = join(cbrHome(this.#o.env), 'secrets');
          await mkdir(dir, { recursive: true, mode: 0o700 });
          passwordFile = join(dir, `${p.instanceName}-${p.superuser ?? 'cassandra'}-${c.id}.password`);
          await writeFileAtomic(passwordFile, `${randomBytes(18).toString('base64url')}\n`, 0o600);
        }
        const running = await this.#runtime.startRestore(
          {
            workflowId: c.id,
            backupId: p.backupId,
            instanceName: p.instanceName,
            clusterName: p.clusterName ?? p.instanceName,
            profilePath: this.#o.profilePath,
            storage: this.#o.storage,
            passwordFile,
            superuser: p.superuser ?? 'cassandra',
            keySource: p.decryptKeyFile ? { file: p.decryptKeyFile } : p.decryptKeyEnv ? { env: p.decryptKeyEnv } : null,
            force: p.force ?? false,
            startedAt: now(),
          },
          { commandId: c.id },
        );
        if (running) this.#watch(running.done);
        return;
      }
      case 'backup.delete': {
        const store = openStore(this.#o.storage);
        const active = this.#store.get(c.payload.backupId);
        if (active?.status === 'active') throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `backup ${c.payload.backupId} is still running`);
        const had = await readRecord(store, c.payload.backupId).then(() => true, () => false);
        const removed = await deleteBackup(store, c.payload.backupId);
        if (!had && removed === 0) throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `no backup ${c.payload.backupId}`);
        this.#publish({
          type: 'result', host: this.#o.hostId, workflowId: c.id, kind: c.type, at: now(), state: 'completed', status: 'done', error: null,
          result: { backupId: c.payload.backupId, deleted: true },
        });
        return;
      }
      case 'workflow.cancel': {
        const cancelled = this.#runtime.cancel(c.payload.workflowId, `cancelled by command ${c.id}`);
        if (!cancelled) throw new CbrError('CBR_ERR_WORKFLOW_NOT_FOUND', `no running workflow ${c.payload.workflowId} on ${this.#o.hostId}`);
        this.#publish({
          type: 'result', host: this.#o.hostId, workflowId: c.id, kind: c.type, at: now(), state: 'completed', status: 'done', error: null,
          result: { workflowId: c.payload.workflowId, cancelled: true },
        });
        return;
      }
    }
  }

  #onWorkflowEvent(e: WorkflowEvent): void {
    const host = this.#o.hostId;
    if (e.type === 'progress') {
      this.#publish({ type: 'progress', host, workflowId: e.workflowId, kind: e.kind, at: e.at, step: e.step, progress: e.progress });
      return;
    }
    this.#publish({ type: 'state', host, workflowId: e.workflowId, kind: e.kind, at: e.at, state: e.state, status: e.status, error: e.error });
    if (e.status === 'done') {
      this.#publish({
        type: 'result', host, workflowId: e.workflowId, kind: e.kind, at: e.at, state: e.state, status: 'done', error: e.error,
        result: summarize(e.kind, e.context ?? {}),
      });
    }
  }

  /** Into the outbox (same database as the workflows), then out to the broker when it is there. */
  #publish(event: BusEvent): void {
    this.#store.addEvent(routingKey(event), JSON.stringify(event));
    void this.#drainOutbox();
  }

  async #drainOutbox(): Promise<void> {
    if (this.#publishing) {
      this.#publishAgain = true;
      return;
    }
    this.#publishing = true;
    try {
      do {
        this.#publishAgain = false;
        for (;;) {
          const ch = this.#pubCh;
          if (!ch) return;
          const batch = this.#store.pendingEvents(200);
          if (batch.length === 0) break;
          for (const e of batch) {
            const body = JSON.parse(e.body) as BusEvent;
            body.eventId = `${this.#o.hostId}:${e.seq}`;
            ch.publish(this.#t.events, e.routingKey, Buffer.from(JSON.stringify(body)), {
              persistent: true,
              contentType: 'application/json',
              messageId: body.eventId,
            });
          }
          await ch.waitForConfirms();
          this.#store.deleteEvents(batch.map((e) => e.seq));
        }
      } while (this.#publishAgain);
    } catch (err) {
      this.#o.log.debug('outbox drain interrupted', { error: (err as Error).message });
    } finally {
      this.#publishing = false;
    }
  }
}

function summarize(kind: string, ctx: Record<string, unknown>): Record<string, unknown> {
  if (kind === 'backup') {
    const c = ctx as unknown as BackupContext;
    return { backupId: c.backupId, name: c.name, ...(c.result ?? {}), warnings: c.warnings };
  }
  const c = ctx as unknown as RestoreContext;
  return {
    backupId: c.backupId,
    instance: c.instanceName,
    clusterName: c.clusterName,
    passwordFile: c.passwordFile,
    profilePath: c.profilePath,
    cassandraStarts: c.starts,
    superusers: c.superusers,
    settingChanges: c.settingChanges,
    warnings: c.warnings,
  };
}

function now(): string {
  return new Date().toISOString();
}

/** The command id of a rejected message when it has a usable one, for routing its 'rejected' event. */
function safeId(msg: ConsumeMessage): string {
  try {
    const id = (JSON.parse(msg.content.toString('utf8')) as { id?: unknown }).id;
    if (typeof id === 'string' && /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(id)) return id;
  } catch {
    /* not JSON */
  }
  const mid = msg.properties.messageId;
  return typeof mid === 'string' && /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(mid) ? mid : `unknown-${randomUUID()}`;
}
