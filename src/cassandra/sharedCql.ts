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
export function sharedCql(
  connect: () => Promise<CqlSession>,
  lingerMs = 2000,
  opts: { checkOnReuse?: boolean } = {},
): { open: () => Promise<CqlSession>; dispose: () => Promise<void> } {
  let session: Promise<CqlSession> | null = null;
  let holders = 0;
  // Whether the connection was let go of by every holder since it was last checked (or made).
  let idle = false;
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
      // A connection kept idle between workflows (the agent's, see keptCql) answers one cheap query before it is
      // handed out again: one that no longer does (the node restarted with other credentials, a dead socket the
      // driver has not noticed) is closed and replaced, so reuse never fails where a new connection would not.
      if (session && idle && opts.checkOnReuse) {
        const old = session;
        idle = false;
        session = old
          .then((live) => live.execute('SELECT key FROM system.local').then(() => live))
          .catch(async () => {
            await (await old.catch(() => null))?.close();
            return connect();
          });
      }
      idle = false;
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
          idle = true;
          stopTimer();
          timer = setTimeout(() => void closeNow(), lingerMs);
        },
      };
    },
    dispose: closeNow,
  };
}

/**
 * The agent's CQL sessions, one per node and process, kept between workflows for `idleMs` after the last one let go
 * (the agent's --jmx-idle, as its JMX client): the next backup's verify does not pay a new connection (two TCP
 * connections, a handshake and an authentication each). Checked before each reuse (sharedCql's checkOnReuse).
 * `dispose` of a kept session only lets go of it; closeKeptCql() (the agent stopping) closes them all.
 */
const kept = new Map<string, ReturnType<typeof sharedCql>>();

export function keptCql(key: string, connect: () => Promise<CqlSession>, idleMs: number): { open: () => Promise<CqlSession>; dispose: () => Promise<void> } {
  let shared = kept.get(key);
  if (!shared) {
    shared = sharedCql(connect, idleMs, { checkOnReuse: true });
    kept.set(key, shared);
  }
  return { open: shared.open, dispose: async () => {} };
}

/** Closes every kept session now. */
export async function closeKeptCql(): Promise<void> {
  const all = [...kept.values()];
  kept.clear();
  await Promise.all(all.map((s) => s.dispose()));
}
