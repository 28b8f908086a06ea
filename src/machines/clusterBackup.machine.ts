import { assign, setup } from 'xstate';
import type { ErrorInfo } from '../core/errors.ts';
import { type CancelEvent, errorFrom, type ProgressEvent, recordingActions, step } from './common.ts';

/**
 * The coordinator of a cluster backup: one backup id across every host. Each host's agent runs its own backup
 * workflow; this machine only tells them what to do and when, so it holds no clients and no files:
 *
 *   resolve the hosts (one per ring node) -> reserve the id (no record, a create-only pending marker) -> start a
 *   backup with the same id on each (it stops after its snapshot) -> barrier: every host reports its snapshot taken
 *   -> read the ring and the schema (the instant the snapshots stand for) -> release the uploads, at most
 *   `concurrency` hosts at once, and wait for all -> write the cluster record (hosts, host ids, datacenters, racks,
 *   tokens, schema, each host's record) -> done.
 *
 * Any host failing (or a cancel) ends in `aborting`: every host is told to drop its part (stop, delete what it
 * stored, clear its snapshot), then FAILED with an error naming each host's own. Each phase is one step that
 * returns one outcome per host and is idempotent: after a crash the coordinator resumes in the same state and the
 * step runs again (asking a host to start the same backup id twice, or to release an upload already done, does
 * nothing new), so the machine never waits for an event that was sent while it was down.
 */

/** Bumped whenever states or context change shape; stored with every persisted snapshot. */
export const CLUSTER_BACKUP_MACHINE_VERSION = 2;

export interface ClusterBackupInput {
  workflowId: string;
  /** The one backup id every host's backup carries. */
  backupId: string;
  name: string;
  description: string;
  /** The cluster whose agents announce themselves; hosts are resolved from it unless named. */
  cluster: string;
  /** `--hosts a,b,c`; null = every agent announcing itself for `cluster`. */
  hosts: string[] | null;
  strategy: 'full' | 'incremental';
  /** At most this many hosts upload at once, cluster-wide. */
  concurrency: number;
  startedAt: string;
  /** How long each host holds its snapshot for the release before it fails by itself; absent: the host's default (1 h). */
  holdTimeoutMs?: number;
}

export type HostPhase = 'pending' | 'started' | 'snapshotted' | 'uploaded' | 'failed' | 'aborted';

/** One host's part, plain JSON. */
export interface HostPart {
  host: string;
  phase: HostPhase;
  error: ErrorInfo | null;
  /** The snapshot the host took (barrier). */
  snapshot?: { files: number; bytes: number };
  /** What the host stored (its own backup record's key, sizes). */
  upload?: { objectKey: string; size: number; rawBytes: number; files: number };
}

/**
 * A phase step's answer for one host: done, or that host's coded error, or `keep`: the phase stopped before this
 * host was done (another host failed first), so its part stays as it was and the abort takes care of it.
 */
export type HostOutcome =
  | { host: string; ok: true; snapshot?: HostPart['snapshot']; upload?: HostPart['upload']; keep?: true }
  | { host: string; ok: false; error: ErrorInfo };

/** One node of the ring as the coordinator's node saw it right after the barrier (plain JSON). */
export interface RingEntry {
  hostId: string;
  address: string;
  datacenter: string;
  rack: string;
  /** Sorted as numbers (Murmur3) or as strings otherwise. */
  tokens: string[];
}

/** The ring and schema read right after the barrier: what the record says, whatever happens to CQL later. */
export interface RingAtBarrier {
  clusterName: string;
  partitioner: string;
  hosts: RingEntry[];
  schema: string;
}

export interface ClusterBackupContext extends ClusterBackupInput {
  parts: HostPart[];
  ring: RingAtBarrier | null;
  /** Where the cluster record was written. */
  recordKey: string | null;
  error: ErrorInfo | null;
  warnings: string[];
  progress: null;
}

export type ClusterStepInput = { ctx: ClusterBackupInput; parts: HostPart[] };
export type RecordStepInput = ClusterStepInput & { ring: RingAtBarrier };

export interface ClusterBackupOutput {
  backupId: string;
  name: string;
  cluster: string;
  hosts: { host: string; phase: HostPhase; error: ErrorInfo | null }[];
  recordKey: string | null;
  warnings: string[];
  error: ErrorInfo | null;
}

export function clusterBackupOutput(c: ClusterBackupContext): ClusterBackupOutput {
  return {
    backupId: c.backupId,
    name: c.name,
    cluster: c.cluster,
    hosts: c.parts.map((p) => ({ host: p.host, phase: p.phase, error: p.error })),
    recordKey: c.recordKey,
    warnings: c.warnings,
    error: c.error,
  };
}

/**
 * The parts after a phase: hosts that answered ok move to `phase`, the others are failed with their error. A host
 * the step gave no answer for is failed too: the barrier never lets a host it has not heard from through.
 */
export function applyOutcomes(parts: readonly HostPart[], outcomes: readonly HostOutcome[], phase: HostPhase): HostPart[] {
  const byHost = new Map(outcomes.map((o) => [o.host, o]));
  return parts.map((p) => {
    if (p.phase === 'failed') return p;
    const o = byHost.get(p.host);
    if (!o) return { ...p, phase: 'failed', error: { code: 'CBR_ERR_INTERNAL', message: `no answer from ${p.host} on the way to ${phase}`, retryable: true } };
    if (!o.ok) return { ...p, phase: 'failed', error: o.error };
    if (o.keep) return p;
    return { ...p, phase, ...(o.snapshot ? { snapshot: o.snapshot } : {}), ...(o.upload ? { upload: o.upload } : {}) };
  });
}

/** The cluster's error: every failed host named with its own code and message. */
export function clusterError(parts: readonly HostPart[], cause: ErrorInfo | null): ErrorInfo {
  const failed = parts.filter((p) => p.error);
  if (failed.length === 0 && cause) return cause;
  const each = failed.map((p) => `${p.host}: ${p.error?.code}: ${p.error?.message}`);
  if (cause && !failed.some((p) => p.error?.code === cause.code && p.error.message === cause.message))
    each.push(`coordinator: ${cause.code}: ${cause.message}`);
  return {
    code: 'CBR_ERR_CLUSTER_BACKUP_FAILED',
    message: `${failed.length} of ${parts.length} hosts failed; ${each.join('; ')}`,
    retryable: failed.every((p) => p.error?.retryable !== false),
  };
}

const hostsFailed = ({ context }: { context: ClusterBackupContext }) => context.parts.some((p) => p.phase === 'failed');
/** The record step found the id held by another run (its record, or parts made before this run): nothing of it is ours to drop. */
const notOurs = (_: unknown, p: { error: unknown }) => errorFrom(p.error).code === 'CBR_ERR_WORKFLOW_CONFLICT';

type Events = ProgressEvent | CancelEvent;

const cancel = { target: 'aborting', actions: { type: 'recordCancel', params: ({ event }: { event: CancelEvent }) => ({ reason: event.reason }) } } as const;

export const clusterBackupMachine = setup({
  types: {
    context: {} as ClusterBackupContext,
    input: {} as ClusterBackupInput,
    output: {} as ClusterBackupOutput,
    events: {} as Events,
  },
  actors: {
    /** The hosts of the cluster: `input.hosts`, or the agents announcing themselves for it. */
    resolveHosts: step<string[], { ctx: ClusterBackupInput }>('resolveHosts'),
    /** Refuses an id already recorded or reserved by another run, then writes the pending marker create-only. */
    reserveBackupId: step<void, ClusterStepInput>('reserveBackupId'),
    /** Sends each host `backup.create` with the backup id, holding its upload until released. */
    startHostBackups: step<HostOutcome[], ClusterStepInput>('startHostBackups'),
    /** The barrier: resolves once every host has reported its snapshot taken, or failed. */
    awaitSnapshots: step<HostOutcome[], ClusterStepInput>('awaitSnapshots'),
    /** Reads the ring and the schema on the coordinator's node, right after the barrier. */
    readRing: step<RingAtBarrier, ClusterStepInput>('readRing'),
    /** Releases the uploads, `concurrency` hosts at a time, and resolves once every host uploaded or failed. */
    uploadHosts: step<HostOutcome[], ClusterStepInput>('uploadHosts'),
    /** Writes the cluster record last (create-only; the same content again is no error). */
    writeClusterRecord: step<{ recordKey: string; warnings?: string[] }, RecordStepInput>('writeClusterRecord'),
    /** Deletes the cluster record if it is there (a write that failed may have landed); none there is no error. */
    removeClusterRecord: step<void, ClusterStepInput>('removeClusterRecord'),
    /** Tells every host to drop its part of this backup id: stop, delete what it stored, clear its snapshot. */
    abortHosts: step<HostOutcome[], ClusterStepInput>('abortHosts'),
  },
  guards: {
    hostsFailed,
    notOurs,
  },
  actions: {
    ...recordingActions<ClusterBackupContext>(),
    recordOutcomes: assign(({ context }, p: { outcomes: HostOutcome[]; phase: HostPhase }) => ({ parts: applyOutcomes(context.parts, p.outcomes, p.phase) })),
    nameHostErrors: assign(({ context }) => ({ error: clusterError(context.parts, context.error) })),
  },
}).createMachine({
  id: 'clusterBackup',
  context: ({ input }) => ({ ...input, parts: [], ring: null, recordKey: null, error: null, warnings: [], progress: null }),
  output: ({ context }) => clusterBackupOutput(context),
  initial: 'resolvingHosts',
  states: {
    resolvingHosts: {
      // Nothing was asked of any host yet: a failure or a cancel ends here, with nothing to undo.
      on: { CANCEL: { target: 'failed', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } } },
      invoke: {
        src: 'resolveHosts',
        input: ({ context }) => ({ ctx: context }),
        onDone: {
          target: 'reservingId',
          actions: assign({ parts: ({ event }) => event.output.map((host) => ({ host, phase: 'pending' as const, error: null })) }),
        },
        onError: { target: 'failed', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    reservingId: {
      // Still nothing asked of any host: an id taken by another run is refused here, with nothing touched.
      on: { CANCEL: { target: 'failed', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } } },
      invoke: {
        src: 'reserveBackupId',
        input: ({ context }) => ({ ctx: context, parts: context.parts }),
        onDone: { target: 'startingHosts' },
        onError: { target: 'failed', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    startingHosts: {
      on: { CANCEL: cancel },
      invoke: {
        src: 'startHostBackups',
        input: ({ context }) => ({ ctx: context, parts: context.parts }),
        onDone: { target: 'startedHosts', actions: { type: 'recordOutcomes', params: ({ event }) => ({ outcomes: event.output, phase: 'started' }) } },
        onError: { target: 'aborting', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    startedHosts: { always: [{ guard: 'hostsFailed', target: 'aborting' }, { target: 'awaitingSnapshots' }] },
    awaitingSnapshots: {
      on: { CANCEL: cancel },
      invoke: {
        src: 'awaitSnapshots',
        input: ({ context }) => ({ ctx: context, parts: context.parts }),
        onDone: { target: 'snapshotsTaken', actions: { type: 'recordOutcomes', params: ({ event }) => ({ outcomes: event.output, phase: 'snapshotted' }) } },
        onError: { target: 'aborting', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    snapshotsTaken: { always: [{ guard: 'hostsFailed', target: 'aborting' }, { target: 'readingRing' }] },
    readingRing: {
      on: { CANCEL: cancel },
      invoke: {
        src: 'readRing',
        input: ({ context }) => ({ ctx: context, parts: context.parts }),
        onDone: { target: 'uploading', actions: assign({ ring: ({ event }) => event.output }) },
        onError: { target: 'aborting', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    uploading: {
      on: { CANCEL: cancel },
      invoke: {
        src: 'uploadHosts',
        input: ({ context }) => ({ ctx: context, parts: context.parts }),
        onDone: { target: 'uploaded', actions: { type: 'recordOutcomes', params: ({ event }) => ({ outcomes: event.output, phase: 'uploaded' }) } },
        onError: { target: 'aborting', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    uploaded: { always: [{ guard: 'hostsFailed', target: 'aborting' }, { target: 'recording' }] },
    recording: {
      // No cancel here: the record may be landing, and a cancel taken now would drop parts it names. One put; it ends.
      invoke: {
        src: 'writeClusterRecord',
        // The ring is set once readingRing is done, and recording comes after it.
        input: ({ context }) => ({ ctx: context, parts: context.parts, ring: context.ring as RingAtBarrier }),
        onDone: {
          target: 'completed',
          actions: assign({
            recordKey: ({ event }) => event.output.recordKey,
            warnings: ({ context, event }) => [...context.warnings, ...(event.output.warnings ?? [])],
          }),
        },
        onError: [
          // Another run's record or parts under this id: withdrawing or aborting would destroy that backup.
          {
            guard: { type: 'notOurs', params: ({ event }) => ({ error: event.error }) },
            target: 'failed',
            actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) },
          },
          { target: 'withdrawingRecord', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
        ],
      },
    },
    withdrawingRecord: {
      // The put may have landed before its error came: the record goes before any host drops its part, so no listed
      // cluster backup ever names parts that are gone. If it cannot go, the parts stay (it restores) and it fails.
      invoke: {
        src: 'removeClusterRecord',
        input: ({ context }) => ({ ctx: context, parts: context.parts }),
        onDone: { target: 'aborting' },
        onError: { target: 'failed', actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'removeClusterRecord', error: event.error }) } },
      },
    },
    aborting: {
      entry: 'nameHostErrors',
      invoke: {
        src: 'abortHosts',
        input: ({ context }) => ({ ctx: context, parts: context.parts }),
        onDone: {
          target: 'failed',
          actions: assign({
            // Hosts that failed keep their own error; the others are marked aborted. A host that could not drop its
            // part is a warning: the cluster backup failed either way, and the operator learns where something is left.
            parts: ({ context }) => context.parts.map((p) => (p.phase === 'failed' ? p : { ...p, phase: 'aborted' as const })),
            warnings: ({ context, event }) => [
              ...context.warnings,
              ...event.output.flatMap((o) => (o.ok ? [] : [`abortHosts: ${o.host}: ${o.error.code}: ${o.error.message}`])),
            ],
          }),
        },
        onError: { target: 'failed', actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'abortHosts', error: event.error }) } },
      },
    },
    completed: { type: 'final' },
    failed: { type: 'final' },
  },
});

export type ClusterBackupMachine = typeof clusterBackupMachine;
