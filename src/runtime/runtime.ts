import { type AnyActorRef, createActor, type InspectionEvent, type Observer } from 'xstate';
import { CbrError, type ErrorInfo } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import {
  BACKUP_MACHINE_RESUMES,
  BACKUP_MACHINE_VERSION,
  type BackupInput,
  type BackupOutput,
  backupMachine,
  backupOutput,
} from '../machines/backup.machine.ts';
import {
  CLUSTER_BACKUP_MACHINE_VERSION,
  type ClusterBackupInput,
  type ClusterBackupOutput,
  clusterBackupMachine,
  clusterBackupOutput,
} from '../machines/clusterBackup.machine.ts';
import type { Progress } from '../machines/common.ts';
import { RESTORE_MACHINE_VERSION, type RestoreInput, type RestoreOutput, restoreMachine, restoreOutput } from '../machines/restore.machine.ts';
import type { StateDb, WorkflowKind, WorkflowRow, WorkflowStatus } from '../state/stateDb.ts';
import { listJournals } from '../steps/clusterRestore/journal.ts';
import { ownerAlive, ownerToken } from './owner.ts';
import type { DepsOptions } from './wiring.ts';

const VERSIONS: Record<WorkflowKind, number> = {
  backup: BACKUP_MACHINE_VERSION,
  restore: RESTORE_MACHINE_VERSION,
  clusterBackup: CLUSTER_BACKUP_MACHINE_VERSION,
};
/** The persisted versions each machine resumes (older snapshots whose states and context it still reads). */
const RESUMES: Record<WorkflowKind, readonly number[]> = {
  backup: BACKUP_MACHINE_RESUMES,
  restore: [RESTORE_MACHINE_VERSION],
  clusterBackup: [CLUSTER_BACKUP_MACHINE_VERSION],
};
type InputOf<K extends WorkflowKind> = K extends 'backup' ? BackupInput : K extends 'restore' ? RestoreInput : ClusterBackupInput;
export type OutputOf<K extends WorkflowKind> = K extends 'backup' ? BackupOutput : K extends 'restore' ? RestoreOutput : ClusterBackupOutput;
export type AnyInput = BackupInput | RestoreInput | ClusterBackupInput;

/** The output of a persisted workflow's context (a status reply, a workflow resumed after it finished). */
export function outputOf<K extends WorkflowKind>(kind: K, context: unknown): OutputOf<K> {
  const out = kind === 'backup' ? backupOutput(context as never) : kind === 'restore' ? restoreOutput(context as never) : clusterBackupOutput(context as never);
  return out as OutputOf<K>;
}

/** What a workflow tells the world: every state change and progress. The bus publishes these; the CLI draws them. */
export type WorkflowEvent =
  | {
      type: 'state';
      workflowId: string;
      kind: WorkflowKind;
      state: string;
      status: WorkflowStatus;
      at: string;
      error: ErrorInfo | null;
      /** The machine's output, on the last event of a workflow (status 'done'); plain JSON without secrets. */
      output?: BackupOutput | RestoreOutput | ClusterBackupOutput;
    }
  | { type: 'progress'; workflowId: string; kind: WorkflowKind; step: string; progress: Progress; at: string };

export interface WorkflowOutcome<K extends WorkflowKind = WorkflowKind> {
  workflowId: string;
  kind: K;
  /** 'completed' or 'failed' (final state name). */
  state: string;
  output: OutputOf<K>;
  error: ErrorInfo | null;
}

export interface RuntimeOptions {
  stateDb: StateDb;
  env: NodeJS.ProcessEnv;
  log: Logger;
  onEvent?: (event: WorkflowEvent) => void;
  /** Fault-injection drills: wait this long before each step (default 0). */
  stepDelayMs?: number;
  /** Keep node sessions (CQL) between workflows, as a long-lived process does (the agent); default false. */
  keepNodeSessions?: boolean;
  /** Replaces the real steps (benchmarks with fake nodes, tests); default: the real steps. */
  steps?: StepsFactory;
  /** XState inspection of every workflow actor (`--inspect <ws-url>`: a Stately inspector). */
  inspect?: Observer<InspectionEvent>;
  /** The cluster backup coordinator's steps; without them a clusterBackup workflow is refused (CBR_ERR_INVALID_ARGUMENT). */
  clusterSteps?: ClusterStepsFactory;
}

/** Builds the step actors of one workflow; the machines check them against their declared logic. */
export type StepsFactory = {
  backup: (input: BackupInput) => Parameters<typeof backupMachine.provide>[0]['actors'];
  restore: (input: RestoreInput) => Parameters<typeof restoreMachine.provide>[0]['actors'];
};

/** The coordinator's steps talk to other hosts' agents: only a process on the bus (the agent) can provide them. */
export type ClusterStepsFactory = (input: ClusterBackupInput) => Parameters<typeof clusterBackupMachine.provide>[0]['actors'];

export interface Running<K extends WorkflowKind = WorkflowKind> {
  actor: AnyActorRef;
  done: Promise<WorkflowOutcome<K>>;
}

/**
 * Runs persisted workflows: creates or restores the actor, writes every snapshot to the state database before
 * reporting it, and resolves when the machine reaches a final state.
 */
export class WorkflowRuntime {
  readonly #opts: RuntimeOptions;
  readonly #running = new Map<string, Running>();

  constructor(opts: RuntimeOptions) {
    this.#opts = opts;
  }

  get stateDb(): StateDb {
    return this.#opts.stateDb;
  }

  /** Starts a backup; returns null when a workflow with this command id (or workflow id) already exists. */
  startBackup(input: BackupInput, opts: { commandId?: string } = {}): Promise<Running<'backup'> | null> {
    return this.start('backup', input, opts);
  }

  /** Starts a restore; returns null when a workflow with this command id (or workflow id) already exists. */
  startRestore(input: RestoreInput, opts: { commandId?: string } = {}): Promise<Running<'restore'> | null> {
    return this.start('restore', input, opts);
  }

  /** Starts a cluster backup's coordinator; returns null when a workflow with this command id (or workflow id) already exists. */
  startClusterBackup(input: ClusterBackupInput, opts: { commandId?: string } = {}): Promise<Running<'clusterBackup'> | null> {
    return this.start('clusterBackup', input, opts);
  }

  /** Sends an event to a running workflow (RELEASE or HOLD to a held backup); false when it does not run here. */
  send(id: string, event: { type: 'RELEASE' } | { type: 'HOLD' }): boolean {
    const r = this.#running.get(id);
    if (!r) return false;
    r.actor.send(event);
    return true;
  }

  async start<K extends WorkflowKind>(kind: K, input: InputOf<K>, opts: { commandId?: string } = {}): Promise<Running<K> | null> {
    const { stateDb: store } = this.#opts;
    // Early refusal without building anything; the binding check runs again with the insert below.
    this.#refuseConflict(kind, input, store.list({ status: 'active' }));
    this.#refuseClusterRestore(kind, input);
    const { machine, attach } = await this.#prepare(kind, input);
    const actor = createActor(machine, { input, ...this.#inspect() } as never) as AnyActorRef;
    attach(actor);
    const initial = actor.getPersistedSnapshot() as unknown as { value: unknown };
    // Check and insert in one transaction, after the last await: two commands handled at once (a double click,
    // two agents' messages) cannot both pass the check.
    const created = store.create(
      {
        id: input.workflowId,
        kind,
        machineVersion: VERSIONS[kind],
        status: 'active',
        state: stateName(initial.value),
        snapshot: initial,
        input,
        commandId: opts.commandId ?? null,
        ownerPid: process.pid,
        ownerToken: ownerToken(),
      },
      (active) => this.#refuseConflict(kind, input, active),
    );
    if (!created) return null;
    // The first persisted transition (made by create) gets its event here; #run reports the ones after it.
    this.#emit({
      type: 'state',
      workflowId: input.workflowId,
      kind,
      state: stateName(initial.value),
      status: 'active',
      at: new Date().toISOString(),
      error: null,
    });
    return this.#run(input.workflowId, kind, actor);
  }

  /**
   * One node, one restore: a restore never starts while another workflow is active on the same node (it stops the
   * node and swaps its data), and a backup never starts during a restore. Backups may run side by side.
   */
  #refuseConflict(kind: WorkflowKind, input: AnyInput, active: WorkflowRow[]): void {
    // A coordinator touches no node: it runs beside anything (its own host's part is an ordinary backup).
    if (kind === 'clusterBackup') return;
    for (const w of active) {
      if (w.kind === 'clusterBackup') continue;
      if (w.id === input.workflowId || (w.input as { profilePath?: string }).profilePath !== (input as { profilePath?: string }).profilePath) continue;
      if (kind === 'backup' && w.kind === 'backup') continue;
      throw new CbrError(
        'CBR_ERR_WORKFLOW_CONFLICT',
        `${w.kind} ${w.id} is still active on this node (${w.state}); a ${kind} waits until it ends (cancel it, or resume it with cbr resume if its process is gone)`,
      );
    }
  }

  /**
   * A cluster restore (`cbr create --backup <cluster backup>`, one process for every node) is not a row of the
   * state database: its journal names the nodes it is swapping, so no backup or restore starts on one of them
   * while it runs, nor after it died before `cbr resume` rolled it back.
   */
  #refuseClusterRestore(kind: WorkflowKind, input: InputOf<WorkflowKind>): void {
    // A coordinator touches no node of its own: only a backup or a restore is refused here.
    if (!('profilePath' in input)) return;
    for (const j of listJournals(this.#opts.env)) {
      if (!j.nodes.some((n) => n.profilePath === input.profilePath)) continue;
      throw new CbrError(
        'CBR_ERR_WORKFLOW_CONFLICT',
        `cluster restore ${j.runId} of cluster backup ${j.clusterBackupId} holds this node (${j.phase}); a ${kind} waits until it ends (if its process is gone, cbr resume rolls it back)`,
      );
    }
  }

  /** Restores a persisted workflow and lets it go on: the in-flight step re-runs (steps are idempotent). */
  async resume(id: string): Promise<Running> {
    const existing = this.#running.get(id);
    if (existing) return existing;
    const row = this.#opts.stateDb.get(id);
    if (!row) throw new CbrError('CBR_ERR_WORKFLOW_NOT_FOUND', `no workflow ${id}`);
    if (!RESUMES[row.kind].includes(row.machineVersion)) {
      throw new CbrError(
        'CBR_ERR_WORKFLOW_CONFLICT',
        `workflow ${id} was persisted by ${row.kind} machine v${row.machineVersion}, this is v${VERSIONS[row.kind]}`,
      );
    }
    const input = row.input as InputOf<typeof row.kind>;
    const { machine, attach } = await this.#prepare(row.kind, input);
    const actor = createActor(machine, { snapshot: row.snapshot, input, ...this.#inspect() } as never) as AnyActorRef;
    attach(actor);
    this.#opts.stateDb.claim(id, process.pid, ownerToken());
    return this.#run(id, row.kind, actor);
  }

  #inspect(): { inspect?: Observer<InspectionEvent> } {
    return this.#opts.inspect ? { inspect: this.#opts.inspect } : {};
  }

  /** Workflows left active by a process that is gone (crash, kill -9, reboot). */
  orphans(): WorkflowRow[] {
    return this.#opts.stateDb
      .list({ status: 'active' })
      .filter((r) => !this.#running.has(r.id) && (r.ownerPid === null || r.ownerPid === process.pid || !ownerAlive(r.ownerToken ?? null, r.ownerPid)));
  }

  cancel(id: string, reason?: string): boolean {
    const r = this.#running.get(id);
    if (!r) return false;
    r.actor.send({ type: 'CANCEL', reason });
    return true;
  }

  /** Closes the node sessions kept between workflows (keepNodeSessions), once the process stops taking work. */
  async closeNodeSessions(): Promise<void> {
    if (!this.#opts.keepNodeSessions) return;
    const { closeKeptCql } = await import('../cassandra/sharedCql.ts');
    await closeKeptCql();
  }

  /** Stops every running actor without touching its persisted state (graceful shutdown: resume later). */
  stopAll(): void {
    for (const r of this.#running.values()) r.actor.stop();
    this.#running.clear();
  }

  async #prepare(kind: WorkflowKind, input: AnyInput) {
    const log = this.#opts.log.child({ workflowId: input.workflowId, kind });
    let lastProgress = 0;
    let actorRef: AnyActorRef | null = null;
    const opts = {
      env: this.#opts.env,
      log,
      stepDelayMs: this.#opts.stepDelayMs ?? 0,
      keepSessions: this.#opts.keepNodeSessions ?? false,
      onProgress: (step: string, progress: Progress) => {
        this.#emit({ type: 'progress', workflowId: input.workflowId, kind, step, progress, at: new Date().toISOString() });
        // Persist progress at most once a second (it goes through the machine, so it lands in the snapshot).
        const now = Date.now();
        if (actorRef && now - lastProgress >= 1000) {
          lastProgress = now;
          actorRef.send({ type: 'PROGRESS', step, progress });
        }
      },
    };
    const fake = this.#opts.steps;
    // The real steps and their dependencies load with the first workflow of their kind: a process that never
    // restores does not hold the restore code (and its libraries) in memory.
    let machine: typeof backupMachine | typeof restoreMachine | typeof clusterBackupMachine;
    // What the real steps share (a backup's CQL connection) goes once the workflow has ended, however it ended.
    let dispose: (() => Promise<void>) | undefined;
    if (kind === 'backup') {
      const real = fake ? null : await realBackupSteps(input as BackupInput, opts);
      dispose = real?.dispose;
      machine = backupMachine.provide({ actors: real ? real.steps : fake!.backup(input as BackupInput) });
    } else if (kind === 'restore')
      machine = restoreMachine.provide({ actors: fake ? fake.restore(input as RestoreInput) : await realRestoreSteps(input as RestoreInput, opts) });
    else {
      const cluster = this.#opts.clusterSteps;
      if (!cluster) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'cluster backups are coordinated by an agent on the bus (cbr agent), not by this process');
      machine = clusterBackupMachine.provide({ actors: cluster(input as ClusterBackupInput) });
    }
    return {
      machine,
      attach: (a: AnyActorRef) => {
        actorRef = a;
        if (!dispose) return;
        const release = () => void dispose().catch(() => {});
        a.subscribe({ complete: release, error: release });
      },
    };
  }

  #run<K extends WorkflowKind>(id: string, kind: K, actor: AnyActorRef): Running<K> {
    const { stateDb: store } = this.#opts;
    const done = new Promise<WorkflowOutcome<K>>((resolve, reject) => {
      actor.subscribe({
        next: (snap: { status: string; value: unknown; context: { error?: ErrorInfo | null }; output?: OutputOf<K> }) => {
          const status = snap.status as WorkflowStatus;
          // A stopped actor (graceful shutdown) keeps its last persisted state, so it resumes on the next start.
          if (status === 'stopped') return;
          const state = stateName(snap.value);
          let transitioned = false;
          try {
            transitioned = store.save(id, status, state, actor.getPersistedSnapshot());
          } catch (err) {
            this.#opts.log.error('cannot persist workflow snapshot', { workflowId: id, error: (err as Error).message });
          }
          // One state event per persisted transition, and the final one with the outcome.
          if (transitioned || status === 'done') {
            this.#emit({
              type: 'state',
              workflowId: id,
              kind,
              state,
              status,
              at: new Date().toISOString(),
              error: snap.context.error ?? null,
              ...(status === 'done' ? { output: snap.output ?? outputOf(kind, snap.context) } : {}),
            });
          }
          if (status === 'done') {
            this.#running.delete(id);
            resolve({ workflowId: id, kind, state, output: snap.output ?? outputOf(kind, snap.context), error: snap.context.error ?? null });
          }
        },
        error: (err: unknown) => {
          this.#running.delete(id);
          reject(err);
        },
      });
    });
    done.catch(() => {});
    const running = { actor, done };
    this.#running.set(id, running);
    actor.start();
    return running;
  }

  #emit(event: WorkflowEvent): void {
    try {
      this.#opts.onEvent?.(event);
    } catch (err) {
      this.#opts.log.warn('event listener failed', { error: (err as Error).message });
    }
  }
}

export function stateName(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    const [k, v] = Object.entries(value)[0] ?? [];
    return k ? `${k}.${stateName(v)}` : '';
  }
  return String(value);
}

async function realBackupSteps(input: BackupInput, opts: DepsOptions) {
  const [{ createBackupSteps }, { buildBackupDeps }] = await Promise.all([import('../steps/backup/steps.ts'), import('./wiring.ts')]);
  const deps = await buildBackupDeps(input, opts);
  return { steps: createBackupSteps(deps), dispose: deps.dispose };
}

async function realRestoreSteps(input: RestoreInput, opts: DepsOptions) {
  const [{ createRestoreSteps }, { buildRestoreDeps }] = await Promise.all([import('../steps/restore/steps.ts'), import('./wiring.ts')]);
  return createRestoreSteps(await buildRestoreDeps(input, opts));
}
