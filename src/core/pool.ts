/**
 * Runs `fn` over `items`, at most `limit` at a time. The first failure stops the pool: no further item starts,
 * the signal handed to the ones in flight is aborted (so their streams end now, not after a whole file), and
 * that first error is thrown once they have settled.
 */
export async function inPool<T>(
  items: readonly T[],
  limit: number,
  signal: AbortSignal,
  fn: (item: T, index: number, signal: AbortSignal) => Promise<void>,
): Promise<void> {
  const stop = new AbortController();
  const both = AbortSignal.any([signal, stop.signal]);
  let next = 0;
  let failure: { error: unknown } | null = null;
  const worker = async () => {
    while (next < items.length && !failure) {
      both.throwIfAborted();
      const i = next++;
      try {
        await fn(items[i]!, i, both);
      } catch (error) {
        // The first error is the cause; the aborts it set off in the other workers are not.
        if (!failure) failure = { error };
        stop.abort();
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw (failure as { error: unknown }).error;
  signal.throwIfAborted();
}
