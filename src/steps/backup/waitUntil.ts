import { setTimeout as sleep } from 'node:timers/promises';

/** The longest single timer Node keeps (about 24.8 days); a longer wait sleeps in turns. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Resolves at `until` (an ISO time), at once when it has passed: a held snapshot's deadline. Idempotent (a
 * restart waits only what is left) and abortable (a release or a cancel stops it).
 */
export async function waitUntil(_deps: unknown, input: { until: string }, signal: AbortSignal): Promise<void> {
  for (;;) {
    const left = Date.parse(input.until) - Date.now();
    if (!(left > 0)) return;
    await sleep(Math.min(left, MAX_TIMER_MS), undefined, { signal });
  }
}
