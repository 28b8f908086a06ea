import { assign, setup } from 'xstate';
import type { ErrorInfo } from '../core/errors.ts';
import { type CancelEvent, errorFrom, step } from './common.ts';

/**
 * A cluster backup restored as a new cluster: the order of the phases every target node goes through together,
 * and the rollback every node falls into from any of them. Each phase is one step that runs the phase on every
 * node at once and ends when all have (a barrier): the nodes depend on each other (the seed starts first, the ring
 * is verified only once all run), and the replaced data goes (finalize) only when every node and the ring are
 * proven good, so a failing node can still roll back the ones that had already started in the new cluster.
 * Not yet persisted by the runtime: src/steps/clusterRestore/restoreCluster.ts runs it in one process.
 */

export const CLUSTER_RESTORE_MACHINE_VERSION = 1;

/** The phases, in order; a phase's step runs it on every node (startSeed: the first node only). */
export const CLUSTER_RESTORE_PHASES = ['check', 'unpack', 'clearPeers', 'swap', 'maintenance', 'config', 'startSeed', 'startOthers', 'verify', 'ring'] as const;
export type ClusterRestorePhase = (typeof CLUSTER_RESTORE_PHASES)[number];

export interface ClusterRestoreMachineInput {
  clusterBackupId: string;
  /** How many target nodes. */
  nodes: number;
}

export interface ClusterRestoreMachineContext extends ClusterRestoreMachineInput {
  /** The phase that failed (null while none has). */
  failedPhase: ClusterRestorePhase | null;
  error: ErrorInfo | null;
  /** Rollback and finalize steps that failed on some node; the run goes on. */
  warnings: string[];
}

export interface ClusterRestoreMachineOutput {
  failedPhase: ClusterRestorePhase | null;
  error: ErrorInfo | null;
  warnings: string[];
}

const phaseState = (phase: ClusterRestorePhase, next: string) => ({
  on: { CANCEL: { target: '#clusterRestore.rollingBack', actions: { type: 'recordCancel' as const, params: { phase } } } },
  invoke: {
    src: 'runPhase' as const,
    input: { phase },
    onDone: next,
    onError: {
      target: '#clusterRestore.rollingBack',
      actions: { type: 'recordFailure' as const, params: ({ event }: { event: { error: unknown } }) => ({ phase, error: event.error }) },
    },
  },
});

export const clusterRestoreMachine = setup({
  types: {
    context: {} as ClusterRestoreMachineContext,
    input: {} as ClusterRestoreMachineInput,
    output: {} as ClusterRestoreMachineOutput,
    events: {} as CancelEvent,
  },
  actors: {
    runPhase: step<void, { phase: ClusterRestorePhase }>('runPhase'),
    rollBackNodes: step<{ warnings: string[] }, void>('rollBackNodes'),
    finalizeNodes: step<{ warnings: string[] }, void>('finalizeNodes'),
  },
  actions: {
    recordFailure: assign((_, p: { phase: ClusterRestorePhase; error: unknown }) => ({ failedPhase: p.phase, error: errorFrom(p.error) })),
    recordCancel: assign(({ event }, p: { phase: ClusterRestorePhase }) => ({
      failedPhase: p.phase,
      error: { code: 'CBR_ERR_ABORTED' as const, message: `cancelled${event.reason ? `: ${event.reason}` : ''}`, retryable: true },
    })),
  },
}).createMachine({
  id: 'clusterRestore',
  context: ({ input }) => ({ ...input, failedPhase: null, error: null, warnings: [] }),
  output: ({ context }) => ({ failedPhase: context.failedPhase, error: context.error, warnings: context.warnings }),
  initial: 'check',
  states: {
    check: phaseState('check', 'unpack'),
    unpack: phaseState('unpack', 'clearPeers'),
    // The source's peers out of every staged system keyspace, before any node starts on it.
    clearPeers: phaseState('clearPeers', 'swap'),
    swap: phaseState('swap', 'maintenance'),
    // Each node alone on loopback: the new cluster_name and the new password into its own system tables.
    maintenance: phaseState('maintenance', 'config'),
    // The final yaml: the new name, the source host's tokens, the new seeds.
    config: phaseState('config', 'startSeed'),
    startSeed: phaseState('startSeed', 'startOthers'),
    startOthers: phaseState('startOthers', 'verify'),
    verify: phaseState('verify', 'ring'),
    ring: phaseState('ring', 'finalizing'),
    // Proven good on every node: the replaced data goes. A node failing here leaves leftovers, a warning.
    finalizing: {
      invoke: {
        src: 'finalizeNodes',
        onDone: { target: 'completed', actions: assign({ warnings: ({ context, event }) => [...context.warnings, ...event.output.warnings] }) },
        onError: { target: 'completed', actions: assign({ warnings: ({ context, event }) => [...context.warnings, errorFrom(event.error).message] }) },
      },
    },
    // Every node's own restore rollback, nodes already started in the new cluster included.
    rollingBack: {
      invoke: {
        src: 'rollBackNodes',
        onDone: { target: 'failed', actions: assign({ warnings: ({ context, event }) => [...context.warnings, ...event.output.warnings] }) },
        onError: { target: 'failed', actions: assign({ warnings: ({ context, event }) => [...context.warnings, errorFrom(event.error).message] }) },
      },
    },
    completed: { type: 'final' },
    failed: { type: 'final' },
  },
});

export type ClusterRestoreMachine = typeof clusterRestoreMachine;
