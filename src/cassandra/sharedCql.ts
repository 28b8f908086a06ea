import type { CqlSession } from './cql.ts';

/**
 * One CQL connection for the steps of one workflow, instead of one per step. A backup's verifyNode and
 * takeSnapshot both query the node a moment apart; each connect costs two TCP connections, a handshake and an
 * authentication each (0.3-0.9 s on a loaded 2-core machine, as much as the rest of an incremental's step).
 *
 * `open()` hands out a session whose `close()` only lets go of it; once nothing holds it, the connection stays up
 * for `lingerMs` (the next step opens it again at once) and then closes. `dispose()` (the workflow ended) closes
 * it now: a finished CLI run does not wait for the linger. A connection that failed is not kept: the next `open()`
 * connects again.
 */
export function sharedCql(connect: () => Promise<CqlSession>, lingerMs = 2000): { open: () => Promise<CqlSession>; dispose: () => Promise<void> } {
  let session: Promise<CqlSession> | null = null;
  let holders = 0;
  let timer: NodeJS.Timeout | null = null;
  const stopTimer = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  const closeNow = async () => {
    stopTimer();
    const s = session;
    session = null;
    await (await s?.catch(() => null))?.close();
  };
  return {
    async open() {
      stopTimer();
      holders++;
      session ??= connect();
      const s = session;
      let live: CqlSession;
      try {
        live = await s;
      } catch (err) {
        holders--;
        if (session === s) session = null;
        throw err;
      }
      let released = false;
      return {
        execute: (query, params) => live.execute(query, params),
        async close() {
          if (released) return;
          released = true;
          holders--;
          if (holders > 0 || session !== s) return;
          stopTimer();
          timer = setTimeout(() => void closeNow(), lingerMs);
        },
      };
    },
    dispose: closeNow,
  };
}
