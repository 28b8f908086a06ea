import { setTimeout as sleep } from 'node:timers/promises';
import { fromPromise } from 'xstate';
import type { Logger } from '../core/log.ts';

/** Wraps a step function as a promise actor bound to its dependencies, with a child logger per step. */
export function bindStep<D extends { log: Logger; stepDelayMs?: number }, I, O>(
  deps: D,
  name: string,
  fn: (deps: D, input: I, signal: AbortSignal) => Promise<O>,
) {
  return fromPromise<O, I>(async ({ input, signal }) => {
    const log = deps.log.child({ step: name });
    if (deps.stepDelayMs) await sleep(deps.stepDelayMs, undefined, { signal });
    log.debug('step start');
    try {
      const out = await fn({ ...deps, log }, input, signal);
      log.debug('step done');
      return out;
    } catch (err) {
      log.warn('step failed', { code: (err as { code?: string }).code, error: (err as Error).message, stack: (err as Error).stack });
      throw err;
    }
  });
}
