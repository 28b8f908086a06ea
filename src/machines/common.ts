import { assign, type EventObject, fromPromise, type MachineContext } from 'xstate';
import type { ErrorInfo } from '../core/errors.ts';
import { toErrorInfo } from '../core/errors.ts';

/**
 * A placeholder for a step: the machine declares each step's input and output types, the runtime provides the
 * real implementation with `machine.provide({ actors })` and tests provide fakes. Running a machine that was
 * not given its steps fails loudly rather than doing nothing.
 */
export function step<TOutput, TInput>(name: string) {
  return fromPromise<TOutput, TInput>(async () => {
    throw new Error(`step ${name} was not provided to the machine`);
  });
}

export interface Progress {
  bytes: number;
  files: number;
  totalBytes: number;
  totalFiles: number;
  storedBytes: number;
}

export type ProgressEvent = { type: 'PROGRESS'; step: string; progress: Progress };
export type CancelEvent = { type: 'CANCEL'; reason?: string };
/** A held backup (a cluster backup part) may upload now: sent by the agent on `backup.release`. */
export type ReleaseEvent = { type: 'RELEASE' };
/** Keep holding: the hold's deadline counts again from now (a cluster backup's part queued for its upload). */
export type HoldEvent = { type: 'HOLD' };

export function errorFrom(error: unknown): ErrorInfo {
  return toErrorInfo(error);
}

export function warningFrom(stepName: string, error: unknown): string {
  const info = toErrorInfo(error);
  return `${stepName}: ${info.code}: ${info.message}`;
}

/** What every workflow context records the same way: its coded error, a cancel, warnings, the latest progress. */
interface RecordingContext extends MachineContext {
  error: ErrorInfo | null;
  warnings: string[];
  progress: Progress | null;
}

type WorkflowEvents = ProgressEvent | CancelEvent;

/** The actions both machines share; each machine's `setup` spreads them into its own. */
export function recordingActions<C extends RecordingContext, E extends EventObject = WorkflowEvents>() {
  type Args = { context: C };
  // The assigners return a part of C; a generic C cannot see that `error` of RecordingContext is one.
  return {
    recordError: assign<C, E, { error: unknown }, E, never>((_: Args, p) => ({ error: errorFrom(p.error) }) as Partial<C>),
    recordCancel: assign<C, E, { reason?: string | undefined }, E, never>(
      (_: Args, p) => ({ error: { code: 'CBR_ERR_ABORTED', message: `cancelled${p.reason ? `: ${p.reason}` : ''}`, retryable: true } }) as Partial<C>,
    ),
    recordWarning: assign<C, E, { step: string; error: unknown }, E, never>(
      ({ context }: Args, p) => ({ warnings: [...context.warnings, warningFrom(p.step, p.error)] }) as Partial<C>,
    ),
    recordProgress: assign<C, E, { progress: Progress }, E, never>((_: Args, p) => ({ progress: p.progress }) as Partial<C>),
  };
}
