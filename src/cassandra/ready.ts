import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CbrError } from '../core/errors.ts';
import { type CqlTarget, connectCql } from './cql.ts';

const AUTH_FAILURE = /Authentication|password are incorrect|Username and\/or password/i;

/**
 * Waits until the node answers CQL. With `requireAuth`, the given credentials must also log in (a fresh node
 * creates its default superuser a moment after it listens); without it, a refused login counts as answering,
 * because a restored node's password is checked by the restore's own verify step.
 */
export async function waitForCql(
  target: CqlTarget,
  opts: { timeoutMs: number; requireAuth: boolean; alive: () => boolean; diagnose: () => Promise<string>; signal?: AbortSignal },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    opts.signal?.throwIfAborted();
    if (!opts.alive()) {
      throw new CbrError('CBR_ERR_SANDBOX_START_FAILED', `Cassandra exited during start. Last log lines:\n${await opts.diagnose()}`);
    }
    if (await portOpen(target.host, target.port)) {
      try {
        const s = await connectCql(target, { timeoutMs: 3000 });
        try {
          await s.execute('SELECT release_version FROM system.local');
          return;
        } finally {
          await s.close();
        }
      } catch (err) {
        last = (err as Error).message;
        if (!opts.requireAuth && AUTH_FAILURE.test(last)) return;
      }
    }
    // Polled often: a start is waited for on every restore, and a port probe costs next to nothing.
    await sleep(200);
  }
  throw new CbrError(
    'CBR_ERR_SANDBOX_START_FAILED',
    `CQL did not answer on ${target.host}:${target.port} within ${Math.round(opts.timeoutMs / 1000)} s (${last}). Last log lines:\n${await opts.diagnose()}`,
  );
}

export function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}
