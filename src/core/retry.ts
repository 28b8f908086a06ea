import { setTimeout as sleep } from 'node:timers/promises';

export interface RetryOptions {
  /** Attempts in all, the first one included (default 3). */
  attempts?: number;
  /** Wait after the first failure, in ms; it doubles after each further one (default 200). */
  baseMs?: number;
  /** Longest wait, in ms (default 5000). */
  maxMs?: number;
  /**
   * Share of each wait that is random, 0 to 1 (default 0.5): with 0.5 a 400 ms wait lasts between 200 and 400 ms,
   * so clients that failed together do not come back together. 0 waits exactly.
   */
  jitter?: number;
  /** Whether a failure is worth another attempt (default: every one). Any other error is thrown at once. */
  retryable?: (err: unknown) => boolean;
  /** Stops the retries: no attempt starts and no wait goes on after it fires. */
  signal?: AbortSignal;
  /** Called (and awaited) before each wait: to log, or to put right what the next attempt needs. */
  onRetry?: (info: { attempt: number; error: unknown; delayMs: number }) => void | Promise<void>;
}

/**
 * Runs `fn` until it succeeds, the attempts are spent, or it fails with an error that is not retryable; the
 * last error is thrown as it is, for the caller to wrap with what it was doing. `fn` gets the attempt number
 * (from 1). A failure that comes after the signal fired is thrown as it is (it usually says what was cut
 * short); an abort during a wait throws the signal's reason, as any aborted call does.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const { attempts = 3, baseMs = 200, maxMs = 5000, jitter = 0.5, retryable = () => true, signal, onRetry } = opts;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || signal?.aborted || !retryable(err)) throw err;
      const delayMs = backoff(attempt, baseMs, maxMs, jitter);
      await onRetry?.({ attempt, error: err, delayMs });
      try {
        await sleep(delayMs, undefined, signal ? { signal } : {});
      } catch (e) {
        signal?.throwIfAborted();
        throw e;
      }
    }
  }
}

/** The wait after failed attempt `attempt` (from 1): exponential, capped, the jittered share taken off at random. */
export function backoff(attempt: number, baseMs: number, maxMs: number, jitter: number): number {
  const full = Math.min(baseMs * 2 ** (attempt - 1), maxMs);
  return Math.round(full * (1 - jitter * Math.random()));
}
