import { randomUUID } from 'node:crypto';
import amqplib, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type RecoveringChannelModel } from 'amqplib';
import type { InspectionEvent, Observer } from 'xstate';
import { deleteBackup, latestBackupId, readRecord } from '../catalog/catalog.ts';
import { checkClusterBackupId, deleteClusterBackup, intoOneNode, isClusterBackup, refuseClusterPart } from '../catalog/clusterRecord.ts';
import { prune } from '../catalog/prune.ts';
import { parsePolicy, type RetentionPolicy } from '../catalog/retention.ts';
import { type VerifyResult, verdictCode, verdictMessage } from '../catalog/verify.ts';
import { CbrError, toErrorInfo } from '../core/errors.ts';
import { ID_RE } from '../core/ids.ts';
import type { Logger } from '../core/log.ts';
import { clusterSteps, readClusterName } from '../runtime/clusterWiring.ts';
import { type ClusterStepsFactory, type StepsFactory, type WorkflowEvent, WorkflowRuntime } from '../runtime/runtime.ts';
import { DrillLog } from '../state/drillLog.ts';
import { StateDb } from '../state/stateDb.ts';
import { openStore } from '../storage/open.ts';
import type { StorageConfig } from '../storage/port.ts';
import { backupInput } from '../workflows/backupRequest.ts';
import { type DrillResult, type DrillSandboxes, runDrill } from '../workflows/drill.ts';
import { restoreInput } from '../workflows/restoreRequest.ts';
import { runVerify } from '../workflows/verifyRequest.ts';
import { openHostBus } from './hostBus.ts';
import type { ScheduleJob } from './schedule/config.ts';
import { Scheduler } from './schedule/scheduler.ts';
import { type Command, parseCommand } from './schemas/commands.ts';
import type { BusEvent } from './schemas/events.ts';
import { STATUS_REPLY_TYPE, type StatusQuery, statusReplyTo, type WorkflowStatus } from './schemas/status.ts';
import { SIGNATURE_WINDOW_MS } from './signing.ts';
import { busResult, StatusBook } from './statusBook.ts';
import { declareTopology, routingKey, type Topology, topology } from './topology.ts';

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
  /**
   * When set, only commands with a valid HMAC-SHA256 signature (over the command and this agent's prefix), issued
   * within the signing window, and never seen before (ids are remembered in the state database) are accepted.
   */
  signingKey?: Buffer | null;
  /** Fault-injection drills: wait this long before each step. */
  stepDelayMs?: number;
  /** Fake steps (benchmarks); default: the real ones. */
  steps?: StepsFactory;
  /** XState inspection of every workflow actor (see src/inspect.ts). */
  inspect?: Observer<InspectionEvent>;
  /** Sees every workflow event before it is published (metrics). */
  onWorkflowEvent?: (event: WorkflowEvent) => void;
  /** Sees the outcome of each verify the agent ran (metrics: last successful verify). */
  onVerified?: (result: VerifyResult, code: string) => void;
  /** How `backup.drill` makes its throwaway sandboxes, and who sees each drill's result (metrics); default: no drills. */
  drill?: { sandboxes: DrillSandboxes; onDrilled?: (result: DrillResult) => void };
  /** Schedule jobs (src/bus/schedule): commands the agent issues itself at cron instants; default none. */
  schedule?: ScheduleJob[];
  /**
   * The Cassandra cluster_name its status replies announce (fake hosts); default: read once from its node over CQL
   * (retried until the node answers).
   */
  cluster?: string;
  /** The cluster backup coordinator's steps (fakes for benchmarks); default: the real ones over this agent's bus. */
  clusterSteps?: ClusterStepsFactory;
}

/**
 * The per-host agent. (Over 300 lines on purpose: how a command is received, remembered, handled, acked or
 * dead-lettered is one sequence whose order is the guarantee; status answers live in statusBook.ts.)
 * A command is acknowledged only once the workflow it starts is persisted in the host's
 * database, so a crash between the two redelivers it and the command id keeps it from starting twice. Because
 * the ack comes right after that (not when an hours-long backup ends), RabbitMQ's delivery-ack timeout
 * (`consumer_timeout`, global in 3.10) is never reached. Events go through an outbox table in the same database
 * and are deleted only once the broker confirmed them, so a broker outage loses none.
 */
export class Agent {
  readonly #o: AgentOptions;
  readonly #t: Topology;
  readonly #stateDb: StateDb;
  readonly #runtime: WorkflowRuntime;
  #conn: RecoveringChannelModel | null = null;
  #consumeCh: Channel | null = null;
  #consumerTag: string | null = null;
  #pubCh: ConfirmChannel | null = null;
  #publishing = false;
  #publishAgain = false;
  #stopping = false;
  readonly #watching = new Set<Promise<unknown>>();
  readonly #status: StatusBook;
  /** Signed commands being handled now, by id: a redelivery of one waits for it instead of running it twice. */
  readonly #handling = new Map<string, Promise<void>>();
  /** Verifies, prunes and drills running now, by command id (they start no workflow of their id: a restart forgets them). */
  readonly #verifies = new Map<string, AbortController>();
  /** The drill running now (its command id): a second one is refused. */
  #drilling: string | null = null;
  /** The prune running now (its command id): a second one is refused. */
  #pruning: string | null = null;
  #scheduler: Scheduler | null = null;
  /** Stops the background read of the node's cluster name. */
  readonly #clusterRead = new AbortController();

  constructor(opts: AgentOptions) {
    this.#o = opts;
    this.#t = topology(opts.prefix);
    this.#stateDb = new StateDb(opts.stateDb);
    this.#status = new StatusBook(this.#stateDb, opts.hostId);
    this.#runtime = new WorkflowRuntime({
      stateDb: this.#stateDb,
      env: opts.env,
      log: opts.log,
      stepDelayMs: opts.stepDelayMs ?? 0,
      // Its node's CQL session outlives a workflow, as its JMX client does (closed in stop()).
      keepNodeSessions: true,
      ...(opts.steps ? { steps: opts.steps } : {}),
      ...(opts.inspect ? { inspect: opts.inspect } : {}),
      clusterSteps:
        opts.clusterSteps ??
        clusterSteps({
          bus: () => openHostBus({ url: opts.url, prefix: opts.prefix ?? '', signingKey: opts.signingKey ?? null }),
          storage: opts.storage,
          profilePath: opts.profilePath,
          env: opts.env,
          log: opts.log,
          stepDelayMs: opts.stepDelayMs ?? 0,
        }),
      onEvent: (e) => this.#onWorkflowEvent(e),
    });
    if (opts.cluster) this.#status.cluster = opts.cluster;
  }

  get store(): StateDb {
    return this.#stateDb;
  }

  /** Whether the agent has a channel to publish on now (metrics); false while it waits for the broker. */
  get busConnected(): boolean {
    return this.#pubCh !== null;
  }

  /** Resumes unfinished workflows at once (the broker may be down), then connects and consumes. */
  async start(): Promise<void> {
    if (!this.#o.cluster) {
      // In the background: the agent answers (without a cluster) while its node is still starting.
      readClusterName(this.#o.profilePath, this.#clusterRead.signal).then(
        (node) => {
          this.#status.address = node.address || null;
          this.#status.cluster = node.cluster;
          this.#o.log.info('node cluster name read', { cluster: node.cluster, address: node.address });
        },
        () => {},
      );
    }
    this.#endLostRuns();
    for (const w of this.#runtime.orphans()) {
      this.#o.log.info('resuming workflow', { workflowId: w.id, kind: w.kind, state: w.state });
      try {
        this.#watch((await this.#runtime.resume(w.id)).done);
      } catch (err) {
        this.#o.log.error('cannot resume workflow', { workflowId: w.id, error: (err as Error).message });
      }
    }
    // Before the broker: a scheduled run needs none (its events wait in the outbox).
    if (this.#o.schedule?.length) {
      this.#scheduler = new Scheduler({
        jobs: this.#o.schedule,
        hostId: this.#o.hostId,
        store: this.#stateDb,
        log: this.#o.log,
        feed: (body) => this.#runScheduled(body),
        // A verify or drill runs after its command is handled: it is active while it is in #verifies.
        isActive: (id) => this.#verifies.has(id) || this.#stateDb.get(id)?.status === 'active',
      });
      this.#scheduler.start();
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
          // Status queries (read-only): a private queue bound with this host id and with '' (asked of every agent).
          // Bound before the outbox drains, so a subscriber whose query finds no agent will still get the events.
          const st = await model.createChannel();
          st.on('error', (err: Error) => this.#o.log.warn('status channel error', { error: err.message }));
          const { queue: statusQueue } = await st.assertQueue('', { exclusive: true, autoDelete: true });
          await st.bindQueue(statusQueue, this.#t.status, this.#o.hostId);
          await st.bindQueue(statusQueue, this.#t.status, '');
          await st.consume(
            statusQueue,
            (msg: ConsumeMessage | null) => {
              if (msg) this.#onStatusQuery(st, msg);
            },
            { noAck: true },
          );
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
    this.#clusterRead.abort();
    for (const v of this.#verifies.values()) v.abort();
    this.#scheduler?.stop();
    if (this.#consumeCh && this.#consumerTag) await this.#consumeCh.cancel(this.#consumerTag).catch(() => {});
    this.#runtime.stopAll();
    // Verifies, prunes and drills end on their abort: their results reach the outbox (leaving side_runs) before the
    // database closes, so the next start does not report a graceful stop as a lost run.
    const settled = Date.now() + 5000;
    while (this.#verifies.size > 0 && Date.now() < settled) await new Promise((r) => setTimeout(r, 50));
    const deadline = Date.now() + 5000;
    while (this.#stateDb.countEvents() > 0 && this.#pubCh && Date.now() < deadline) {
      await this.#drainOutbox();
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.#conn?.close().catch(() => {});
    await this.#runtime.closeNodeSessions();
    this.#stateDb.close();
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
      command = parseCommand(msg.content, { hostId: this.#o.hostId, signingKey: this.#o.signingKey ?? null, prefix: this.#o.prefix ?? '' });
    } catch (err) {
      await this.#reject(ch, msg, toErrorInfo(err, 'CBR_ERR_COMMAND_INVALID'));
      return;
    }
    const signed = Boolean(this.#o.signingKey);
    if (signed) {
      // The signature is good and fresh: remember its id past the end of its window (twice the window after its
      // issue time, slack for clock steps), before anything runs. A second message with it is a replay.
      const seen = this.#stateDb.recordCommand(command.id, command.type, Date.parse(command.issuedAt) + 2 * SIGNATURE_WINDOW_MS);
      if (seen) {
        // The broker sets `redelivered`, a publisher cannot: only a redelivery of a message this queue already
        // delivered (the agent died or the channel closed before the ack) is handled or dropped quietly.
        const inFlight = this.#handling.get(command.id);
        if (msg.fields.redelivered && inFlight) {
          await inFlight;
          this.#ack(ch, msg);
          return;
        }
        if (!(msg.fields.redelivered && seen.outcome === 'pending')) {
          if (msg.fields.redelivered) {
            this.#o.log.info('redelivery of a handled command dropped', { commandId: command.id, type: command.type });
            this.#ack(ch, msg);
          } else {
            const why = `command ${command.id} replayed: this agent already received it at ${seen.seenAt} (${seen.outcome}); a signed command is taken once`;
            await this.#reject(ch, msg, toErrorInfo(new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', why)));
          }
          return;
        }
        // Recorded but never settled: the previous handling was cut short (a crash); handle it again below.
      }
    }
    const handling = (async () => {
      try {
        await this.#handle(command);
        if (signed) this.#stateDb.settleCommand(command.id, 'accepted');
      } catch (err) {
        // Nothing was persisted: report the failure as the command's result and consume it.
        const error = toErrorInfo(err);
        this.#o.log.warn('command failed to start', { commandId: command.id, type: command.type, code: error.code });
        this.#publish({ type: 'result', host: this.#o.hostId, workflowId: command.id, kind: command.type, at: now(), state: 'failed', status: 'done', error });
        if (signed) this.#stateDb.settleCommand(command.id, 'failed');
      }
    })();
    if (signed) this.#handling.set(command.id, handling);
    try {
      await handling;
      this.#ack(ch, msg);
    } finally {
      if (this.#handling.get(command.id) === handling) this.#handling.delete(command.id);
    }
  }

  /** An ack on a channel that closed meanwhile throws; the broker then redelivers the message, which is handled above. */
  #ack(ch: Channel, msg: ConsumeMessage): void {
    try {
      ch.ack(msg);
    } catch (err) {
      this.#o.log.warn('cannot ack a command (its channel closed); the broker will redeliver it', { error: (err as Error).message });
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
    if (this.#stateDb.byCommandId(c.id) || this.#stateDb.get(c.id)) {
      this.#o.log.info('duplicate command ignored', { commandId: c.id });
      return;
    }
    switch (c.type) {
      case 'backup.create': {
        const input = await backupInput(c.payload, { id: c.id, profilePath: this.#o.profilePath, storage: this.#o.storage }, this.#o.env);
        const running = await this.#runtime.startBackup(input, { commandId: c.id });
        if (running) this.#watch(running.done);
        return;
      }
      case 'restore.create': {
        // A cluster backup's id restores every host's data into this node, as `cbr create` does.
        const intoOne = await intoOneNode(openStore(this.#o.storage), c.payload.backupId);
        const payload = intoOne ? { ...c.payload, backupId: intoOne.backupId } : c.payload;
        const { input } = await restoreInput(payload, { id: c.id, profilePath: this.#o.profilePath, storage: this.#o.storage }, this.#o.env);
        if (intoOne) input.clusterBackupId = intoOne.clusterBackupId;
        const running = await this.#runtime.startRestore(input, { commandId: c.id });
        if (running) this.#watch(running.done);
        return;
      }
      case 'backup.release': {
        const row = this.#stateDb.get(c.payload.backupId);
        if (row?.kind !== 'backup') throw new CbrError('CBR_ERR_WORKFLOW_NOT_FOUND', `no backup ${c.payload.backupId} on ${this.#o.hostId}`);
        // A held backup goes on; one not yet holding remembers the release; one past it (or done) is left as it is.
        if (row.status === 'active' && !this.#runtime.send(row.id, { type: 'RELEASE' }))
          throw new CbrError('CBR_ERR_WORKFLOW_NOT_FOUND', `backup ${row.id} is not running in the agent of ${this.#o.hostId}`);
        this.#publishDone(c, { backupId: row.id, released: true, state: row.state });
        return;
      }
      case 'backup.hold': {
        const row = this.#stateDb.get(c.payload.backupId);
        if (row?.kind !== 'backup') throw new CbrError('CBR_ERR_WORKFLOW_NOT_FOUND', `no backup ${c.payload.backupId} on ${this.#o.hostId}`);
        // Only a part that holds waits again; any other state ignores it (it is answered with that state).
        const held = row.status === 'active' && row.state === 'holding' && this.#runtime.send(row.id, { type: 'HOLD' });
        this.#publishDone(c, { backupId: row.id, held, state: row.state });
        return;
      }
      case 'cluster.backup': {
        const p = c.payload;
        const input = {
          workflowId: c.id,
          backupId: checkClusterBackupId(c.id),
          name: p.name,
          description: p.description ?? '',
          cluster: p.cluster,
          hosts: p.hosts ?? null,
          strategy: p.strategy ?? 'full',
          concurrency: p.concurrency ?? 2,
          startedAt: now(),
          ...(p.holdTimeoutMs ? { holdTimeoutMs: p.holdTimeoutMs } : {}),
        };
        const running = await this.#runtime.startClusterBackup(input, { commandId: c.id });
        if (running) this.#watch(running.done);
        return;
      }
      case 'backup.delete': {
        const store = openStore(this.#o.storage);
        const active = this.#stateDb.get(c.payload.backupId);
        if (active?.status === 'active') throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `backup ${c.payload.backupId} is still running`);
        if (await isClusterBackup(store, c.payload.backupId)) {
          // A cluster backup id: its record, then every host's part (as `cbr backup-delete <cluster id>` does).
          const { parts } = await deleteClusterBackup(store, c.payload.backupId, { log: this.#o.log });
          this.#publishDone(c, {
            backupId: c.payload.backupId,
            deleted: true,
            cluster: true,
            parts: parts.map((p) => p.id),
            freedBytes: parts.reduce((n, p) => n + (p.gc?.freedBytes ?? 0), 0),
            deletedBlobs: parts.reduce((n, p) => n + (p.gc?.deleted ?? 0), 0),
          });
          return;
        }
        await refuseClusterPart(store, c.payload.backupId);
        const { removed, record, gc } = await deleteBackup(store, c.payload.backupId, undefined, this.#o.log);
        if (!record && removed === 0) throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `no backup ${c.payload.backupId}`);
        const freed = { incremental: gc !== null, freedBytes: gc?.freedBytes ?? 0, deletedBlobs: gc?.deleted ?? 0, gcSkipped: gc?.skipped ?? null };
        this.#publishDone(c, { backupId: c.payload.backupId, deleted: true, ...freed });
        return;
      }
      case 'backup.prune': {
        // The same command again while its prune runs (a second copy published): one prune.
        if (this.#verifies.has(c.id)) return;
        const p = c.payload;
        const policy = parsePolicy({
          last: p.keepLast?.toString(),
          hourly: p.keepHourly?.toString(),
          daily: p.keepDaily?.toString(),
          weekly: p.keepWeekly?.toString(),
          monthly: p.keepMonthly?.toString(),
          yearly: p.keepYearly?.toString(),
          within: p.keepWithin,
        });
        // One prune of this agent at a time: a second one would plan against the store the first is changing (its
        // deletions are idempotent and journalled, but its report would count backups twice).
        if (this.#pruning) throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `prune ${this.#pruning} is running on ${this.#o.hostId}; one prune at a time`);
        // Like a verify, after the ack: a prune of a large store can outlast the broker's delivery-ack timeout (a
        // redelivery would start a second prune). A stop or workflow.cancel ends it between deletions; its journal
        // lets the next prune finish what it started.
        const abort = new AbortController();
        this.#verifies.set(c.id, abort);
        this.#status.started(c.id, c.type);
        this.#stateDb.startSideRun(c.id, c.type);
        this.#pruning = c.id;
        this.#watch(
          this.#prune(c, policy, abort.signal).finally(() => {
            this.#verifies.delete(c.id);
            this.#status.stopped(c.id);
            if (this.#pruning === c.id) this.#pruning = null;
          }),
        );
        return;
      }
      case 'backup.verify': {
        if (this.#verifies.has(c.id)) return;
        // Runs after the command is acked: a deep verify can outlast the broker's delivery-ack timeout.
        const abort = new AbortController();
        this.#verifies.set(c.id, abort);
        this.#status.started(c.id, c.type);
        this.#stateDb.startSideRun(c.id, c.type);
        this.#watch(this.#verify(c, abort.signal).finally(() => this.#ran(c.id)));
        return;
      }
      case 'backup.drill': {
        if (this.#verifies.has(c.id)) return;
        const drill = this.#o.drill;
        if (!drill) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `the agent of ${this.#o.hostId} runs no drills`);
        // Like a verify, after the ack: a drill restores a whole backup and lasts minutes.
        const abort = new AbortController();
        this.#verifies.set(c.id, abort);
        this.#status.started(c.id, c.type);
        this.#stateDb.startSideRun(c.id, c.type);
        this.#watch(this.#drill(c, drill, abort.signal).finally(() => this.#ran(c.id)));
        return;
      }
      case 'workflow.cancel': {
        const verify = this.#verifies.get(c.payload.workflowId);
        if (verify) {
          verify.abort(new CbrError('CBR_ERR_ABORTED', `cancelled by command ${c.id}`));
          this.#publishDone(c, { workflowId: c.payload.workflowId, cancelled: true });
          return;
        }
        const cancelled = this.#runtime.cancel(c.payload.workflowId, `cancelled by command ${c.id}`);
        if (!cancelled) throw new CbrError('CBR_ERR_WORKFLOW_NOT_FOUND', `no running workflow ${c.payload.workflowId} on ${this.#o.hostId}`);
        this.#publishDone(c, { workflowId: c.payload.workflowId, cancelled: true });
        return;
      }
    }
  }

  /**
   * Verifies, prunes and drills this agent was running when it died: none resumes (a prune's journal lets the next
   * prune finish its work), so each ends now with a failed result, which a CLI still waiting for it receives (or
   * finds in a status answer) instead of waiting forever, whether or not it had seen it running.
   */
  #endLostRuns(): void {
    for (const run of this.#stateDb.sideRuns()) {
      const then = run.kind === 'backup.prune' ? 'the next prune finishes what it started' : 'run it again';
      const error = toErrorInfo(
        new CbrError(
          'CBR_ERR_RUN_LOST',
          `the agent of ${this.#o.hostId} no longer runs ${run.id}: it stopped (died or was killed) during this ${run.kind} started at ${run.startedAt}; no other result will come: ${then}`,
          { details: { workflowId: run.id, host: this.#o.hostId } },
        ),
      );
      this.#o.log.warn('a run cut short by the agent ended', { commandId: run.id, kind: run.kind });
      this.#publish({ type: 'result', host: this.#o.hostId, workflowId: run.id, kind: run.kind, at: now(), state: 'failed', status: 'done', error });
    }
  }

  /** A verify or drill ended: its result is published (and remembered by the status book) before it leaves. */
  #ran(commandId: string): void {
    this.#verifies.delete(commandId);
    this.#status.stopped(commandId);
  }

  /**
   * A `backup.prune` (src/catalog/prune.ts): a progress event per backup removed (step `pruning`, files: backups
   * removed of those to remove), then a result event: `completed` with the prune result, or `failed` with the coded
   * error (CBR_ERR_ABORTED when cancelled or stopped: the backups it removed are gone, the rest stay, and its
   * journal makes the next prune finish what it started).
   */
  async #prune(c: Extract<Command, { type: 'backup.prune' }>, policy: RetentionPolicy, signal: AbortSignal): Promise<void> {
    const host = this.#o.hostId;
    const p = c.payload;
    try {
      const result = await prune(openStore(this.#o.storage), policy, {
        groupBy: p.groupBy ?? 'host',
        dryRun: p.dryRun ?? false,
        ...(p.instance ? { instance: p.instance } : {}),
        log: this.#o.log,
        signal,
        // Fault-injection drills widen the window between deletions, as for `cbr backup-prune`.
        delayMs: Number(this.#o.env['CBR_DRILL_PRUNE_DELAY_MS'] ?? 0) || 0,
        onRemoved: (_id, done, total) => {
          const progress = { bytes: 0, files: done, totalBytes: 0, totalFiles: total, storedBytes: 0 };
          this.#publish({ type: 'progress', host, workflowId: c.id, kind: c.type, at: now(), step: 'pruning', progress });
        },
      });
      this.#publishDone(c, { ...result });
    } catch (err) {
      // Cancelled (the reason names the command) or stopped: the journal's backups are finished by the next prune.
      const why = signal.aborted ? (signal.reason instanceof CbrError ? signal.reason.message : "the agent's stop") : '';
      const error = signal.aborted
        ? toErrorInfo(new CbrError('CBR_ERR_ABORTED', `prune ${c.id} ended early (${why}); the next prune finishes what it started`))
        : toErrorInfo(err);
      this.#o.log.warn('backup prune failed', { commandId: c.id, code: error.code });
      this.#publish({ type: 'result', host, workflowId: c.id, kind: c.type, at: now(), state: 'failed', status: 'done', error });
    }
  }

  /**
   * A `backup.verify`: progress events about once a second, then a result event carrying the report: `completed`
   * when the backup is whole, `failed` with CBR_ERR_VERIFY_MISSING or CBR_ERR_VERIFY_CORRUPT (and the report) when
   * not, `failed` with the coded error when it could not run (no such backup, wrong key, storage down).
   */
  async #verify(c: Extract<Command, { type: 'backup.verify' }>, signal: AbortSignal): Promise<void> {
    const host = this.#o.hostId;
    let last = 0;
    try {
      const result = await runVerify(openStore(this.#o.storage), c.payload, {
        env: this.#o.env,
        signal,
        onProgress: (progress) => {
          const t = Date.now();
          if (t - last < 1000 && progress.bytes < progress.totalBytes) return;
          last = t;
          this.#status.progressed(c.id, 'verifying', progress);
          this.#publish({ type: 'progress', host, workflowId: c.id, kind: c.type, at: now(), step: 'verifying', progress });
        },
      });
      const code = verdictCode(result);
      this.#o.onVerified?.(result, code ?? '');
      const report = { backupId: result.id, ...result };
      if (!code) this.#publishDone(c, report);
      else {
        const error = { code, message: verdictMessage(result), retryable: false };
        this.#publish({ type: 'result', host, workflowId: c.id, kind: c.type, at: now(), state: 'failed', status: 'done', error, result: report });
      }
    } catch (err) {
      const error = toErrorInfo(err);
      this.#o.log.warn('backup verify failed', { commandId: c.id, code: error.code });
      this.#publish({ type: 'result', host, workflowId: c.id, kind: c.type, at: now(), state: 'failed', status: 'done', error });
    }
  }

  /**
   * A `backup.drill` (src/workflows/drill.ts): the backup restored by a restore workflow of this agent's runtime (its
   * own id, events and metrics) into a throwaway sandbox, checked, the sandbox removed. The outcome is kept in the
   * state database (table `drills`, as `cbr drill` keeps it) and published as the command's result: `completed`
   * with the drill result, or `failed` with its coded error (CBR_ERR_DRILL_FAILED, the restore's own) and the result.
   */
  async #drill(c: Extract<Command, { type: 'backup.drill' }>, drill: NonNullable<AgentOptions['drill']>, signal: AbortSignal): Promise<void> {
    const host = this.#o.hostId;
    const p = c.payload;
    try {
      const store = openStore(this.#o.storage);
      const backupId = p.latest ? await latestBackupId(store, p.host) : (p.backupId ?? '');
      const record = await readRecord(store, backupId);
      // One at a time (each starts a Cassandra node beside the host's own); a request that cannot run says so first.
      if (this.#drilling) throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `drill ${this.#drilling} is running on ${host}; one drill at a time`);
      this.#drilling = c.id;
      const request = {
        backupId,
        record,
        userChecks: p.checks ?? [],
        storage: this.#o.storage,
        decryptKeyFile: p.decryptKeyFile,
        decryptKeyEnv: p.decryptKeyEnv,
        env: this.#o.env,
        signal,
        warn: (m: string) => this.#o.log.warn(m, { commandId: c.id }),
      };
      const result = await runDrill(request, {
        sandboxes: drill.sandboxes,
        restore: async (input, sig) => {
          const running = await this.#runtime.startRestore(input);
          if (!running) throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `a workflow with id ${input.workflowId} already exists`);
          this.#watch(running.done);
          const cancel = () => this.#runtime.cancel(input.workflowId, `drill ${c.id} cancelled`);
          sig.addEventListener('abort', cancel, { once: true });
          return running.done.finally(() => sig.removeEventListener('abort', cancel));
        },
      });
      new DrillLog(this.#stateDb.db).record(result);
      drill.onDrilled?.(result);
      if (result.ok) this.#publishDone(c, { ...result });
      else
        this.#publish({
          type: 'result',
          host,
          workflowId: c.id,
          kind: c.type,
          at: now(),
          state: 'failed',
          status: 'done',
          error: result.error,
          result: { ...result },
        });
    } catch (err) {
      const error = toErrorInfo(err);
      this.#o.log.warn('backup drill failed', { commandId: c.id, code: error.code });
      this.#publish({ type: 'result', host, workflowId: c.id, kind: c.type, at: now(), state: 'failed', status: 'done', error });
    } finally {
      if (this.#drilling === c.id) this.#drilling = null;
    }
  }

  /**
   * A schedule's run: the command a publisher would send, down the same path as one from the bus (the same schema,
   * the same dedupe by id in #handle), but unsigned: the agent issued it itself. A refusal is published as its result.
   */
  async #runScheduled(body: Record<string, unknown>): Promise<boolean> {
    try {
      await this.#handle(parseCommand(Buffer.from(JSON.stringify(body)), { hostId: this.#o.hostId }));
      return true;
    } catch (err) {
      const error = toErrorInfo(err);
      this.#o.log.warn('scheduled command failed to start', { commandId: body['id'], type: body['type'], code: error.code });
      this.#publish({
        type: 'result',
        host: this.#o.hostId,
        workflowId: String(body['id']),
        kind: String(body['type']),
        at: now(),
        state: 'failed',
        status: 'done',
        error,
      });
      return false;
    }
  }

  /** The result of a command that starts no workflow: it is done as soon as it is handled. */
  #publishDone(c: Command, result: Record<string, unknown>): void {
    this.#publish({ type: 'result', host: this.#o.hostId, workflowId: c.id, kind: c.type, at: now(), state: 'completed', status: 'done', error: null, result });
  }

  #onWorkflowEvent(e: WorkflowEvent): void {
    const host = this.#o.hostId;
    this.#o.onWorkflowEvent?.(e);
    if (e.type === 'progress') {
      this.#status.progressed(e.workflowId, e.step, e.progress);
      this.#publish({ type: 'progress', host, workflowId: e.workflowId, kind: e.kind, at: e.at, step: e.step, progress: e.progress });
      return;
    }
    if (e.status !== 'active') this.#status.ended(e.workflowId);
    this.#publish({ type: 'state', host, workflowId: e.workflowId, kind: e.kind, at: e.at, state: e.state, status: e.status, error: e.error });
    if (e.status === 'done') {
      this.#publish({
        type: 'result',
        host,
        workflowId: e.workflowId,
        kind: e.kind,
        at: e.at,
        state: e.state,
        status: 'done',
        error: e.error,
        result: e.output ? busResult(e.output) : {},
      });
    }
  }

  /** Into the outbox (same database as the workflows), then out to the broker when it is there. */
  #publish(event: BusEvent): void {
    this.#status.remember(event);
    this.#stateDb.addEvent(routingKey(event), JSON.stringify(event), event.type === 'result' ? event.workflowId : undefined);
    void this.#drainOutbox();
  }

  /**
   * Answers a status query (see src/bus/schemas/status.ts) into the asker's server-named queue; a query without one is
   * dropped, a malformed one is answered with its coded error. Read-only, so not signed even where commands are.
   */
  #onStatusQuery(ch: Channel, msg: ConsumeMessage): void {
    const replyTo = statusReplyTo(msg.properties.replyTo);
    if (!replyTo) {
      this.#o.log.warn('status query without a server-named replyTo queue dropped');
      return;
    }
    const reply = this.#status.reply(msg.content, safeId(msg), this.#o.log);
    try {
      ch.publish('', replyTo, Buffer.from(JSON.stringify(reply)), {
        type: STATUS_REPLY_TYPE,
        correlationId: reply.queryId,
        contentType: 'application/json',
        // Nobody reads an answer a minute old: the asker is gone or has asked again.
        expiration: '60000',
      });
    } catch (err) {
      this.#o.log.debug('status reply not sent', { error: (err as Error).message });
    }
  }

  /** What this host knows now (see StatusBook.statusOf). */
  statusOf(q: StatusQuery['payload']): { workflows: WorkflowStatus[]; truncated: boolean } {
    return this.#status.statusOf(q);
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
          const batch = this.#stateDb.pendingEvents(200);
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
          this.#stateDb.deleteEvents(batch.map((e) => e.seq));
        }
      } while (this.#publishAgain);
    } catch (err) {
      this.#o.log.debug('outbox drain interrupted', { error: (err as Error).message });
    } finally {
      this.#publishing = false;
    }
  }
}

function now(): string {
  return new Date().toISOString();
}

/** The command id of a rejected message when it has a usable one, for routing its 'rejected' event. */
function safeId(msg: ConsumeMessage): string {
  try {
    const id = (JSON.parse(msg.content.toString('utf8')) as { id?: unknown }).id;
    if (typeof id === 'string' && ID_RE.test(id)) return id;
  } catch {
    /* not JSON */
  }
  const mid = msg.properties.messageId;
  return typeof mid === 'string' && ID_RE.test(mid) ? mid : `unknown-${randomUUID()}`;
}
