import { toErrorInfo } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { BackupOutput } from '../machines/backup.machine.ts';
import type { ClusterBackupOutput } from '../machines/clusterBackup.machine.ts';
import type { Progress } from '../machines/common.ts';
import type { RestoreOutput } from '../machines/restore.machine.ts';
import { outputOf } from '../runtime/runtime.ts';
import type { StateDb, WorkflowRow } from '../state/stateDb.ts';
import type { BusEvent } from './schemas/events.ts';
import { parseStatusQuery, STATUS_MAX_WORKFLOWS, STATUS_RECENT_MS, type StatusQuery, type StatusReply, type WorkflowStatus } from './schemas/status.ts';

/**
 * What an agent answers to status queries: its persisted workflows, the live progress of the running ones (the
 * snapshot keeps one a second), and the outcomes of recent commands that start no workflow (or could not start
 * one), kept in memory only: they are answered in an instant, not over hours, and an agent restart forgets them.
 */
export class StatusBook {
  readonly #stateDb: StateDb;
  readonly #hostId: string;
  readonly #progress = new Map<string, { step: string; progress: Progress }>();
  readonly #outcomes = new Map<string, BusEvent>();
  /** Commands run beside the workflows (verify, prune, drill) that run now: not persisted, so a restart forgets them. */
  readonly #running = new Map<string, { kind: string; at: string }>();
  /** The Cassandra cluster_name of this host's node, once known: every reply carries it (hosts of a cluster are found by it). */
  cluster: string | null = null;
  /** The node's broadcast address, read with its cluster name: a coordinator maps the agent onto the ring by it. */
  address: string | null = null;

  constructor(stateDb: StateDb, hostId: string) {
    this.#stateDb = stateDb;
    this.#hostId = hostId;
  }

  progressed(workflowId: string, step: string, progress: Progress): void {
    this.#progress.set(workflowId, { step, progress });
  }

  ended(workflowId: string): void {
    this.#progress.delete(workflowId);
  }

  /** A verify, prune or drill started: its status is `running`/`active` until `ended`. */
  started(commandId: string, kind: string): void {
    this.#running.set(commandId, { kind, at: new Date().toISOString() });
  }

  /** It ended (its result is remembered first, so a status query never finds it in neither). */
  stopped(commandId: string): void {
    this.#running.delete(commandId);
    this.#progress.delete(commandId);
  }

  #runningEntry(id: string): WorkflowStatus | null {
    const r = this.#running.get(id);
    if (!r) return null;
    const live = this.#progress.get(id);
    return {
      workflowId: id,
      kind: r.kind,
      state: 'running',
      status: 'active',
      error: null,
      ...(live ? { step: live.step, progress: live.progress } : {}),
      createdAt: r.at,
      updatedAt: r.at,
    };
  }

  /** Keeps the outcome of a command that starts no workflow. A later rejection of the same id (a replay) does not hide what the command itself came to. */
  remember(event: BusEvent): void {
    const firstWord = event.type === 'result' || !this.#outcomes.has(event.workflowId);
    if (
      (event.type === 'result' || event.type === 'rejected') &&
      event.kind !== 'backup' &&
      event.kind !== 'restore' &&
      event.kind !== 'clusterBackup' &&
      firstWord
    ) {
      this.#outcomes.delete(event.workflowId);
      this.#outcomes.set(event.workflowId, event);
      if (this.#outcomes.size > STATUS_MAX_WORKFLOWS) this.#outcomes.delete(this.#outcomes.keys().next().value!);
    }
  }

  /** The reply to one query body; a malformed query gets its coded error (`fallbackId` names it when it has no usable id). */
  reply(body: Buffer, fallbackId: string, log: Logger): StatusReply {
    const host = this.#hostId;
    const at = new Date().toISOString();
    try {
      const query = parseStatusQuery(body, { hostId: host });
      return {
        version: 1,
        type: 'status.reply',
        queryId: query.id,
        host,
        at,
        ...(this.cluster ? { cluster: this.cluster } : {}),
        ...(this.address ? { address: this.address } : {}),
        ...this.statusOf(query.payload),
      };
    } catch (err) {
      const error = toErrorInfo(err, 'CBR_ERR_COMMAND_INVALID');
      log.warn('status query refused', { code: error.code, reason: error.message });
      return { version: 1, type: 'status.reply', queryId: fallbackId, host, at, workflows: [], truncated: false, error };
    }
  }

  /**
   * What this host knows now: one workflow (or the outcome of a recent command that starts none), or its recent
   * workflows (active, or changed in the last 24 h; newest first; at most 200).
   */
  statusOf(q: StatusQuery['payload']): { workflows: WorkflowStatus[]; truncated: boolean } {
    if (q.workflowId) {
      const row = this.#stateDb.get(q.workflowId) ?? this.#stateDb.byCommandId(q.workflowId);
      if (row) return { workflows: [this.#entry(row)], truncated: false };
      const e = this.#outcomes.get(q.workflowId);
      const running = e ? null : this.#runningEntry(q.workflowId);
      if (running) return { workflows: [running], truncated: false };
      if (!e) return { workflows: [], truncated: false };
      const entry: WorkflowStatus = {
        workflowId: e.workflowId,
        kind: e.kind,
        state: e.type === 'rejected' ? 'rejected' : (e.state ?? 'failed'),
        status: 'done',
        error: e.error ?? null,
        ...(e.result ? { result: e.result } : {}),
        createdAt: e.at,
        updatedAt: e.at,
      };
      return { workflows: [entry], truncated: false };
    }
    const limit = Math.min(q.limit ?? STATUS_MAX_WORKFLOWS, STATUS_MAX_WORKFLOWS);
    const { rows, more } = this.#stateDb.recent(limit, new Date(Date.now() - STATUS_RECENT_MS).toISOString());
    const running = [...this.#running.keys()].flatMap((id) => this.#runningEntry(id) ?? []).reverse();
    const all = [...running, ...rows.map((r) => this.#entry(r))];
    return { workflows: all.slice(0, limit), truncated: more || all.length > limit };
  }

  /** A persisted workflow as its events would have told it: state, status, error, progress, and the result. */
  #entry(row: WorkflowRow): WorkflowStatus {
    const ctx = ((row.snapshot as { context?: Record<string, unknown> } | null)?.context ?? {}) as Record<string, unknown>;
    const active = row.status === 'active';
    const live = active ? this.#progress.get(row.id) : undefined;
    const saved = active ? (ctx['progress'] as WorkflowStatus['progress'] | null | undefined) : undefined;
    return {
      workflowId: row.id,
      kind: row.kind,
      state: row.state,
      status: row.status,
      error: (ctx['error'] as WorkflowStatus['error'] | undefined) ?? null,
      ...(live ? { step: live.step, progress: live.progress } : saved ? { progress: saved } : {}),
      ...(row.status === 'done' ? { result: busResult(outputOf(row.kind, ctx)) } : {}),
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
    };
  }
}

/** A workflow's output as the bus's result event carries it: a backup's archive fields at the top level, no error (the event has its own). */
export function busResult(output: BackupOutput | RestoreOutput | ClusterBackupOutput): Record<string, unknown> {
  const { error: _error, ...rest } = output;
  if ('instance' in rest || 'cluster' in rest) return rest;
  const { result, ...backup } = rest;
  return { ...backup, ...(result ?? {}) };
}
