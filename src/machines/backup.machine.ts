import { assign, setup } from 'xstate';
import type { Compression } from '../archive/format.ts';
import type { DataSettings } from '../cassandra/dataSettings.ts';
import type { TableCount } from '../cassandra/rowCounts.ts';
import type { ErrorInfo } from '../core/errors.ts';
import type { StorageConfig } from '../storage/port.ts';
import { type CancelEvent, type HoldEvent, type Progress, type ProgressEvent, type ReleaseEvent, recordingActions, step } from './common.ts';

/** Bumped whenever states or context change shape; stored with every persisted snapshot. */
export const BACKUP_MACHINE_VERSION = 2;
/**
 * Persisted versions this machine resumes: v1 snapshots (before `holding`) name only states v2 still has, and lack
 * only optional context fields; any other version is refused (CBR_ERR_WORKFLOW_CONFLICT, naming both versions).
 */
export const BACKUP_MACHINE_RESUMES = [1, 2] as const;
/** How long a held snapshot waits for its release by default (a coordinator that never comes back leaves none). */
export const DEFAULT_HOLD_TIMEOUT_MS = 60 * 60 * 1000;

export interface BackupInput {
  workflowId: string;
  backupId: string;
  name: string;
  description: string;
  profilePath: string;
  storage: StorageConfig;
  compression: Compression;
  /** Where the encryption key comes from (a file path or an env var name), never the key. */
  keySource: { file?: string; env?: string } | null;
  startedAt: string;
  /** Bytes per second of archive output, or null for no limit. */
  rateLimit: number | null;
  /** Refuse to snapshot when less than this share of the data filesystem is free. */
  minFreePercent: number;
  /** How the files are stored; absent (inputs persisted before strategies existed) = 'full'. */
  strategy?: 'full' | 'incremental';
  /** The backup this one follows (informational, for listing: dedup works against every earlier backup of the host). */
  parent?: string | null;
  /** Files in flight at once (incremental); default 4. */
  concurrency?: number;
  /** The cluster backup this backup is a part of (its coordinator's id); absent for a host's own backup. */
  clusterBackupId?: string;
  /** Wait in `holding` after the snapshot until RELEASE (a cluster backup's barrier); absent = false. */
  hold?: boolean;
  /** How long `holding` waits for RELEASE before the backup fails (CBR_ERR_HOLD_EXPIRED); default 1 h. */
  holdTimeoutMs?: number;
}

/** One file of an incremental backup and the blob holding it; plain JSON (it travels in the workflow context). */
export interface ManifestFile {
  path: string;
  size: number;
  /** Absent when encrypted: the blob's keyed name stands for it (catalog/blobs.ts). */
  sha256?: string;
  blob: string;
  stored: number;
  shared: boolean;
}

export interface BackupResult {
  /** The archive, or an incremental backup's blob prefix. */
  objectKey: string;
  size: number;
  sha256: string;
  rawBytes: number;
  files: number;
  strategy?: 'full' | 'incremental';
  /** Incremental: raw bytes stored by this backup, raw bytes already stored, stored bytes added, files each. */
  newBytes?: number;
  sharedBytes?: number;
  newStoredBytes?: number;
  newFiles?: number;
  sharedFiles?: number;
  /** Incremental: every file and its blob, for the record (left out of the workflow's output). */
  manifest?: ManifestFile[];
  /**
   * Incremental: when the last successful write of the backup's lease began (a stamp of the process and its
   * monotonic clock, see holdBackupLease), when it had been held without a break since before the first blob was
   * looked at; every blob of the manifest was seen or stored under it.
   */
  leaseWrittenAt?: string;
}

/** What the verify step learned of the source node. */
export interface NodeFacts {
  clusterName: string;
  cassandraVersion: string;
  /** Absent in workflows persisted before settings were recorded. */
  settings?: DataSettings;
}

export interface BackupContext extends BackupInput {
  node: NodeFacts | null;
  /** Row counts of the snapshot's user tables (takeSnapshot); absent in workflows persisted before counts, null when not counted. */
  tables?: TableCount[] | null;
  progress: Progress | null;
  result: BackupResult | null;
  error: ErrorInfo | null;
  warnings: string[];
  /** When the snapshot started being held (ISO): the hold's deadline counts from here, across restarts. */
  heldSince?: string | null;
  /** A RELEASE came (perhaps before the snapshot was taken): the backup does not hold, or stops holding. */
  released?: boolean;
}

/** When a held snapshot's wait ends (ISO); null when the backup does not hold. */
export function holdDeadline(c: Pick<BackupContext, 'heldSince' | 'holdTimeoutMs'>): string | null {
  if (!c.heldSince) return null;
  return new Date(Date.parse(c.heldSince) + (c.holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS)).toISOString();
}

export type StepInput = { ctx: BackupInput };

/** What writeRecord is given: the request, what verifyNode learned, the stored result and the row counts. */
export type WriteRecordInput = StepInput & { node: BackupContext['node']; result: BackupResult; tables?: TableCount[] | null };

/** What a finished backup tells its caller (the CLI's output, the bus's result event, a status reply). */
export interface BackupOutput {
  backupId: string;
  name: string;
  /** The stored archive; null when the backup failed. */
  result: BackupResult | null;
  warnings: string[];
  error: ErrorInfo | null;
}

/** The output of a backup context: the machine's own `output`, and the summary of a persisted one. */
export function backupOutput(c: BackupContext): BackupOutput {
  // The manifest is for the record (one line per file): callers get the counts, never a node's file list; the
  // lease time is for the record step alone.
  const result = c.result ? (({ manifest: _, leaseWrittenAt: _l, ...rest }) => rest)(c.result) : null;
  return { backupId: c.backupId, name: c.name, result, warnings: c.warnings, error: c.error };
}

export const backupMachine = setup({
  types: {
    context: {} as BackupContext,
    input: {} as BackupInput,
    output: {} as BackupOutput,
    events: {} as ProgressEvent | CancelEvent | ReleaseEvent | HoldEvent,
  },
  actors: {
    verifyNode: step<NodeFacts, StepInput>('verifyNode'),
    checkFreeSpace: step<{ freeBytes: number; freePercent: number }, StepInput>('checkFreeSpace'),
    clearSnapshot: step<void, StepInput>('clearSnapshot'),
    takeSnapshot: step<{ files: number; bytes: number; tables?: TableCount[] | null }, StepInput>('takeSnapshot'),
    streamArchive: step<BackupResult, StepInput>('streamArchive'),
    writeRecord: step<void, WriteRecordInput>('writeRecord'),
    deleteBackupObjects: step<void, StepInput>('deleteBackupObjects'),
    /** Resolves at `until` (ISO), and no sooner: the held snapshot's deadline. Abortable; a restart waits the rest. */
    waitUntil: step<void, { until: string }>('waitUntil'),
  },
  guards: {
    holds: ({ context }: { context: BackupContext }) => context.hold === true && context.released !== true,
  },
  actions: {
    ...recordingActions<BackupContext, ProgressEvent | CancelEvent | ReleaseEvent | HoldEvent>(),
    recordHoldExpired: assign(({ context }: { context: BackupContext }) => ({
      error: {
        code: 'CBR_ERR_HOLD_EXPIRED' as const,
        message: `the snapshot of ${context.backupId} was held ${Math.round((context.holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS) / 1000)} s without a release${context.clusterBackupId ? ` (cluster backup ${context.clusterBackupId})` : ''}; it is cleared`,
        retryable: true,
      },
    })),
  },
}).createMachine({
  id: 'backup',
  context: ({ input }) => ({ ...input, node: null, progress: null, result: null, error: null, warnings: [] }),
  output: ({ context }) => backupOutput(context),
  initial: 'verifyingNode',
  on: {
    PROGRESS: { actions: { type: 'recordProgress', params: ({ event }) => ({ progress: event.progress }) } },
    // A release that comes before the snapshot (or after the upload began) is remembered; it never moves a state by itself.
    RELEASE: { actions: assign({ released: true }) },
  },
  states: {
    verifyingNode: {
      on: { CANCEL: { target: 'failed', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } } },
      invoke: {
        src: 'verifyNode',
        input: ({ context }) => ({ ctx: context }),
        onDone: { target: 'checkingFreeSpace', actions: assign({ node: ({ event }) => event.output }) },
        onError: { target: 'failed', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    checkingFreeSpace: {
      on: { CANCEL: { target: 'failed', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } } },
      invoke: {
        src: 'checkFreeSpace',
        input: ({ context }) => ({ ctx: context }),
        onDone: 'clearingStaleSnapshot',
        onError: { target: 'failed', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    clearingStaleSnapshot: {
      on: { CANCEL: { target: 'failed', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } } },
      invoke: {
        src: 'clearSnapshot',
        input: ({ context }) => ({ ctx: context }),
        onDone: 'snapshotting',
        onError: { target: 'failed', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    snapshotting: {
      on: { CANCEL: { target: 'compensating', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } } },
      invoke: {
        src: 'takeSnapshot',
        input: ({ context }) => ({ ctx: context }),
        onDone: [
          {
            guard: 'holds',
            target: 'holding',
            actions: assign({ tables: ({ event }) => event.output.tables ?? null, heldSince: () => new Date().toISOString() }),
          },
          { target: 'streaming', actions: assign({ tables: ({ event }) => event.output.tables ?? null }) },
        ],
        onError: { target: 'compensating', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    holding: {
      // A cluster backup's barrier: the snapshot is taken and waits for the coordinator's release (or cancel). The
      // deadline lives in context (heldSince): a restarted agent keeps holding for what is left of it, then fails.
      on: {
        RELEASE: { target: 'streaming', actions: assign({ released: true }) },
        // The coordinator's keepalive while this part waits for an upload slot: the wait starts again from now.
        HOLD: { target: 'holding', reenter: true, actions: assign({ heldSince: () => new Date().toISOString() }) },
        CANCEL: { target: 'compensating', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } },
      },
      invoke: {
        src: 'waitUntil',
        input: ({ context }) => ({ until: holdDeadline(context) ?? new Date(0).toISOString() }),
        onDone: { target: 'compensating', actions: 'recordHoldExpired' },
        onError: { target: 'compensating', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    streaming: {
      on: { CANCEL: { target: 'compensating', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } } },
      invoke: {
        src: 'streamArchive',
        input: ({ context }) => ({ ctx: context }),
        onDone: { target: 'recording', actions: assign({ result: ({ event }) => event.output }) },
        onError: { target: 'compensating', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    recording: {
      on: { CANCEL: { target: 'compensating', actions: { type: 'recordCancel', params: ({ event }) => ({ reason: event.reason }) } } },
      invoke: {
        src: 'writeRecord',
        input: ({ context }) => ({ ctx: context, node: context.node, result: context.result!, tables: context.tables ?? null }),
        onDone: 'clearingSnapshot',
        onError: { target: 'compensating', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
    },
    clearingSnapshot: {
      invoke: {
        src: 'clearSnapshot',
        input: ({ context }) => ({ ctx: context }),
        onDone: 'completed',
        // The backup is complete and usable; a snapshot that could not be cleared is reported, not hidden.
        onError: {
          target: 'completed',
          actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'clearSnapshot', error: event.error }) },
        },
      },
    },
    compensating: {
      initial: 'deletingObjects',
      states: {
        deletingObjects: {
          invoke: {
            src: 'deleteBackupObjects',
            input: ({ context }) => ({ ctx: context }),
            onDone: 'clearingSnapshot',
            onError: {
              target: 'clearingSnapshot',
              actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'deleteBackupObjects', error: event.error }) },
            },
          },
        },
        clearingSnapshot: {
          invoke: {
            src: 'clearSnapshot',
            input: ({ context }) => ({ ctx: context }),
            onDone: 'done',
            onError: {
              target: 'done',
              actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'clearSnapshot', error: event.error }) },
            },
          },
        },
        done: { type: 'final' },
      },
      onDone: 'failed',
    },
    completed: { type: 'final' },
    failed: { type: 'final' },
  },
});

export type BackupMachine = typeof backupMachine;
