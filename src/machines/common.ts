import { fromPromise } from 'xstate';
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

export function errorFrom(error: unknown): ErrorInfo {
  return toErrorInfo(error);
}

export function warningFrom(stepName: string, error: unknown): string {
  const info = toErrorInfo(error);
  return `${stepName}: ${info.code}: ${info.message}`;
}
