import { assign, setup } from 'xstate';
import type { SettingChange } from '../cassandra/configFiles.ts';
import type { DataSettings } from '../cassandra/dataSettings.ts';
import type { ErrorInfo } from '../core/errors.ts';
import type { StorageConfig } from '../storage/port.ts';
import { type CancelEvent, type Progress, type ProgressEvent, recordingActions, step } from './common.ts';

/*
 * The restore workflow as one XState machine. Over 300 lines on purpose: its states, and the rollback each of
 * them falls into, read top to bottom in one place (docs/machines.md draws the same).
 */

/** Bumped whenever states or context change shape; stored with every persisted snapshot. */
export const RESTORE_MACHINE_VERSION = 3;

export interface RestoreInput {
  workflowId: string;
  backupId: string;
  /** The new instance's name; also its new cluster_name unless clusterName is given. */
  instanceName: string;
  clusterName: string;
  profilePath: string;
  storage: StorageConfig;
  /** A file (0600) holding the new superuser password; never the password itself. */
  passwordFile: string;
  superuser: string;
  keySource: { file?: string; env?: string } | null;
  force: boolean;
  startedAt: string;
  /**
   * Restoring a cluster backup into this one node: the cluster record's id. `backupId` is then its first host's
   * part (restored as usual: schema, system tables, users); every other part's user tables are imported.
   */
  clusterBackupId?: string | null;
}

/** The other hosts' parts of a cluster backup restored into one node (what the checkParts step learned). */
export interface PartsPlan {
  clusterBackupId: string;
  /** Every part but the first: its backup id, its host, and the keyspaces imported from it. */
  parts: { backupId: string; host: string; keyspaces: string[]; rawBytes: number; fileCount: number }[];
}

/** A keyspace's replication as the restore into one node changed it (see lowerReplication). */
export interface ReplicationChange {
  keyspace: string;
  from: Record<string, string>;
  to: Record<string, string>;
}

/** What the check step learned; plain JSON. */
export interface RestorePlan {
  sourceClusterName: string;
  keyspaces: string[];
  rawBytes: number;
  fileCount: number;
  wasRunning: boolean;
  /** The source's settings the data depends on (null for records written before they were recorded). */
  settings: DataSettings | null;
  /** Which of the target's data directories (index into the profile's dataDirs) takes each `<ks>/<table>-<id>`. */
  placement: Record<string, number>;
}

export interface RestoreContext extends RestoreInput {
  plan: RestorePlan | null;
  /** How many times this workflow started Cassandra (the blueprint's procedure needed 5). */
  starts: number;
  /** Set once the target node was stopped: before that, a rollback only discards the staging directory. */
  touched: boolean;
  progress: Progress | null;
  error: ErrorInfo | null;
  warnings: string[];
  /** Every superuser role of the restored data, so an operator sees one they did not expect. */
  superusers: string[];
  /** cassandra.yaml settings the restore changed on the target so the restored data starts. */
  settingChanges: SettingChange[];
  /** A cluster backup restored into this node: the other hosts' parts (null for an ordinary restore). */
  parts: PartsPlan | null;
  /** SSTables imported from the other parts. */
  imported: { tables: number; dirs: number };
  replicationChanges: ReplicationChange[];
}

export type RestoreStepInput = { ctx: RestoreInput; plan: RestorePlan };
/** The steps that handle a cluster backup's other parts also get what checkParts planned. */
export type PartsStepInput = RestoreStepInput & { parts: PartsPlan };

/** What a finished restore tells its caller (the CLI's output, the bus's result event, a status reply). */
export interface RestoreOutput {
  backupId: string;
  instance: string;
  clusterName: string;
  passwordFile: string;
  profilePath: string;
  superuser: string;
  /** How many times the workflow started Cassandra. */
  cassandraStarts: number;
  keyspaces: string[];
  superusers: string[];
  settingChanges: SettingChange[];
  /** A cluster backup restored into one node: its id, the parts imported besides the first, replication lowered. */
  clusterBackupId: string | null;
  partsImported: string[];
  replicationChanges: ReplicationChange[];
  warnings: string[];
  error: ErrorInfo | null;
}

/** The output of a restore context: the machine's own `output`, and the summary of a persisted one. */
export function restoreOutput(c: RestoreContext): RestoreOutput {
  return {
    backupId: c.backupId,
    instance: c.instanceName,
    clusterName: c.clusterName,
    passwordFile: c.passwordFile,
    profilePath: c.profilePath,
    superuser: c.superuser,
    cassandraStarts: c.starts,
    keyspaces: c.plan?.keyspaces ?? [],
    superusers: c.superusers,
    settingChanges: c.settingChanges,
    clusterBackupId: c.clusterBackupId ?? null,
    partsImported: c.parts?.parts.map((p) => p.backupId) ?? [],
    replicationChanges: c.replicationChanges ?? [],
    warnings: c.warnings,
    error: c.error,
  };
}

const fail = { type: 'recordError', params: ({ event }: { event: { error: unknown } }) => ({ error: event.error }) } as const;
const cancel = { type: 'recordCancel', params: ({ event }: { event: CancelEvent }) => ({ reason: event.reason }) } as const;

export const restoreMachine = setup({
  types: {
    context: {} as RestoreContext,
    input: {} as RestoreInput,
    output: {} as RestoreOutput,
    events: {} as ProgressEvent | CancelEvent,
  },
  actors: {
    checkRestore: step<RestorePlan, { ctx: RestoreInput }>('checkRestore'),
    unpackBackup: step<{ files: number; bytes: number }, RestoreStepInput>('unpackBackup'),
    stopNode: step<void, RestoreStepInput>('stopNode'),
    swapDataDirs: step<void, RestoreStepInput>('swapDataDirs'),
    chownData: step<void, RestoreStepInput>('chownData'),
    startMaintenance: step<void, RestoreStepInput>('startMaintenance'),
    resetIdentity: step<{ superusers: string[] }, RestoreStepInput>('resetIdentity'),
    writeFinalConfig: step<{ changes: SettingChange[] }, RestoreStepInput>('writeFinalConfig'),
    startNode: step<void, RestoreStepInput>('startNode'),
    verifyRestore: step<void, RestoreStepInput>('verifyRestore'),
    finalizeRestore: step<void, RestoreStepInput>('finalizeRestore'),
    restoreConfig: step<void, RestoreStepInput>('restoreConfig'),
    restoreDataDirs: step<void, RestoreStepInput>('restoreDataDirs'),
    discardStaging: step<void, RestoreStepInput>('discardStaging'),
    checkParts: step<PartsPlan, RestoreStepInput>('checkParts'),
    fetchParts: step<{ files: number; bytes: number }, PartsStepInput>('fetchParts'),
    forgetSourcePeers: step<void, RestoreStepInput>('forgetSourcePeers'),
    importParts: step<{ tables: number; dirs: number }, PartsStepInput>('importParts'),
    lowerReplication: step<{ changes: ReplicationChange[] }, RestoreStepInput>('lowerReplication'),
  },
  guards: {
    clusterRestore: ({ context }) => Boolean(context.clusterBackupId),
    touched: ({ context }) => context.touched,
    restartNeeded: ({ context }) => context.touched && context.plan?.wasRunning === true,
  },
  actions: {
    ...recordingActions<RestoreContext>(),
    countStart: assign({ starts: ({ context }) => context.starts + 1 }),
  },
}).createMachine({
  id: 'restore',
  context: ({ input }) => ({
    ...input,
    plan: null,
    starts: 0,
    touched: false,
    progress: null,
    error: null,
    warnings: [],
    superusers: [],
    settingChanges: [],
    parts: null,
    imported: { tables: 0, dirs: 0 },
    replicationChanges: [],
  }),
  output: ({ context }) => restoreOutput(context),
  initial: 'checking',
  on: {
    PROGRESS: { actions: { type: 'recordProgress', params: ({ event }) => ({ progress: event.progress }) } },
  },
  states: {
    // Read the record, check key, target and space. Nothing has been touched yet.
    checking: {
      on: { CANCEL: { target: 'failed', actions: cancel } },
      invoke: {
        src: 'checkRestore',
        input: ({ context }) => ({ ctx: context }),
        onDone: [
          { guard: 'clusterRestore', target: 'checkingParts', actions: assign({ plan: ({ event }) => event.output }) },
          { target: 'unpacking', actions: assign({ plan: ({ event }) => event.output }) },
        ],
        onError: { target: 'failed', actions: fail },
      },
    },
    // A cluster backup into one node: the cluster record, every other host's part (complete, whole, the same key),
    // and room beside the data directory for them too. Still nothing touched.
    checkingParts: {
      on: { CANCEL: { target: 'failed', actions: cancel } },
      invoke: {
        src: 'checkParts',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: { target: 'unpacking', actions: assign({ parts: ({ event }) => event.output }) },
        onError: { target: 'failed', actions: fail },
      },
    },
    // Into a staging directory beside the data directory, while the target still runs; checksum verified.
    unpacking: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'unpackBackup',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: [{ guard: 'clusterRestore', target: 'fetchingParts' }, { target: 'forgettingSourcePeers' }],
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // Every other part into its own staging directory beside the data directory (verified as the unpack is),
    // still while the target runs: a corrupt part is refused before the node is stopped.
    fetchingParts: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'fetchParts',
        input: ({ context }) => ({ ctx: context, plan: context.plan!, parts: context.parts! }),
        onDone: 'forgettingSourcePeers',
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // A backup of one node of a cluster (a cluster backup's part) holds system.peers and peers_v2 naming the source
    // cluster's other nodes: left in, the maintenance start (under the source's cluster_name) would gossip with
    // them, live or not, and own only that host's ranges. A single node's backup has none: nothing to do.
    forgettingSourcePeers: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'forgetSourcePeers',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: 'stoppingNode',
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    stoppingNode: {
      entry: assign({ touched: true }),
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'stopNode',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: 'swappingDataDirs',
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // The old data, commitlog, hints and saved caches move aside (kept until the new node is proven good).
    swappingDataDirs: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'swapDataDirs',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: 'chowning',
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    chowning: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'chownData',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: 'startingMaintenance',
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // Start 1 of 2: the source's cluster_name, AllowAll authentication, loopback only.
    startingMaintenance: {
      entry: 'countStart',
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'startMaintenance',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: [{ guard: 'clusterRestore', target: 'importingParts' }, { target: 'resettingIdentity' }],
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // nodetool import of every other part's tables, while no client can reach the node; each SSTable moves in
    // under a new id of the table's own kind, so ids the hosts share never collide.
    importingParts: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'importParts',
        input: ({ context }) => ({ ctx: context, plan: context.plan!, parts: context.parts! }),
        onDone: { target: 'loweringReplication', actions: assign({ imported: ({ event }) => event.output }) },
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // One node holds every replica: a keyspace kept at RF 3 would refuse QUORUM reads and writes.
    loweringReplication: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'lowerReplication',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: { target: 'resettingIdentity', actions: assign({ replicationChanges: ({ event }) => event.output.changes }) },
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // New cluster_name in system.local, peers cleared, superuser password set; flushed; node stopped.
    resettingIdentity: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'resetIdentity',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: { target: 'writingFinalConfig', actions: assign({ superusers: ({ event }) => event.output.superusers }) },
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    writingFinalConfig: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'writeFinalConfig',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: { target: 'startingNode', actions: assign({ settingChanges: ({ event }) => event.output.changes }) },
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // Start 2 of 2: the new cluster_name, authentication on, the normal addresses.
    startingNode: {
      entry: 'countStart',
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'startNode',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: 'verifying',
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    verifying: {
      on: { CANCEL: { target: 'rollingBack', actions: cancel } },
      invoke: {
        src: 'verifyRestore',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: 'finalizing',
        onError: { target: 'rollingBack', actions: fail },
      },
    },
    // Proven good: the old data goes, the profile's credentials take the new password.
    finalizing: {
      invoke: {
        src: 'finalizeRestore',
        input: ({ context }) => ({ ctx: context, plan: context.plan! }),
        onDone: 'completed',
        onError: { target: 'completed', actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'finalizeRestore', error: event.error }) } },
      },
    },
    // Put everything back as it was: old data and config in place, and the node running if it was.
    rollingBack: {
      initial: 'start',
      states: {
        start: {
          always: [{ guard: 'touched', target: 'stoppingNode' }, { target: 'discardingStaging' }],
        },
        stoppingNode: {
          invoke: {
            src: 'stopNode',
            input: ({ context }) => ({ ctx: context, plan: context.plan! }),
            onDone: 'restoringConfig',
            onError: { target: 'restoringConfig', actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'stopNode', error: event.error }) } },
          },
        },
        restoringConfig: {
          invoke: {
            src: 'restoreConfig',
            input: ({ context }) => ({ ctx: context, plan: context.plan! }),
            onDone: 'restoringDataDirs',
            onError: {
              target: 'restoringDataDirs',
              actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'restoreConfig', error: event.error }) },
            },
          },
        },
        restoringDataDirs: {
          invoke: {
            src: 'restoreDataDirs',
            input: ({ context }) => ({ ctx: context, plan: context.plan! }),
            onDone: 'discardingStaging',
            onError: {
              target: 'discardingStaging',
              actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'restoreDataDirs', error: event.error }) },
            },
          },
        },
        discardingStaging: {
          invoke: {
            src: 'discardStaging',
            input: ({ context }) => ({ ctx: context, plan: context.plan! }),
            onDone: 'deciding',
            onError: { target: 'deciding', actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'discardStaging', error: event.error }) } },
          },
        },
        deciding: {
          always: [{ guard: 'restartNeeded', target: 'restartingNode' }, { target: 'done' }],
        },
        restartingNode: {
          invoke: {
            src: 'startNode',
            input: ({ context }) => ({ ctx: context, plan: context.plan! }),
            onDone: 'done',
            onError: { target: 'done', actions: { type: 'recordWarning', params: ({ event }) => ({ step: 'startNode', error: event.error }) } },
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

export type RestoreMachine = typeof restoreMachine;
