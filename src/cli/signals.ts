/**
 * Runs `handler` once, on the first SIGINT or SIGTERM: a workflow is cancelled (and rolls back), a server closes.
 * Both listeners go at that moment, so a second Ctrl-C ends the process the way Node does by default (what to do
 * when a rollback hangs; `cbr resume` finishes it later). Returns a dispose that removes the listeners unfired.
 */
export function onInterrupt(handler: (signal: NodeJS.Signals) => void): () => void {
  const dispose = () => {
    process.off('SIGINT', fire);
    process.off('SIGTERM', fire);
  };
  function fire(signal: NodeJS.Signals): void {
    dispose();
    handler(signal);
  }
  process.on('SIGINT', fire);
  process.on('SIGTERM', fire);
  return dispose;
}

/** Resolves once the first SIGINT or SIGTERM has come and `stop` has finished (or failed): the end of a long-running command. */
export function untilInterrupted(stop: () => Promise<unknown>): Promise<void> {
  return new Promise((done) => {
    onInterrupt(() => {
      stop().then(
        () => done(),
        () => done(),
      );
    });
  });
}
