import { setTimeout as sleep } from 'node:timers/promises';
import { partId } from '../../catalog/clusterRecord.ts';
import type { ClusterStepInput, HostOutcome } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked, viewOf, withBus } from './deps.ts';

/**
 * The barrier: asks each host about its part until every one holds its snapshot (or is already past it), or one
 * fails: then it stops at once (the other hosts are kept as they are, for the abort). A host that has not held its
 * snapshot by the deadline (counted from the cluster backup's start, so a coordinator down meanwhile does not wait
 * twice) fails with CBR_ERR_HOST_TIMEOUT. State comes from status answers only, never from events that may have
 * gone by while the coordinator was down.
 */
export async function awaitSnapshots(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<HostOutcome[]> {
  await pauseIfAsked(deps, 'awaitSnapshots', signal);
  const { ctx, parts } = input;
  const deadline = Date.parse(ctx.startedAt) + deps.barrierTimeoutMs;
  const done = new Map<string, HostOutcome>();
  const waiting = new Map<string, string>();
  for (const [i, p] of parts.entries()) if (p.phase !== 'failed') waiting.set(p.host, partId(ctx.backupId, i));
  return withBus(deps, async (bus) => {
    for (;;) {
      const seen = new Map<string, string>();
      await Promise.all(
        [...waiting].map(async ([host, id]) => {
          const v = viewOf(await bus.ask(host, id, signal), id);
          seen.set(host, v.at);
          if (v.at === 'holding' || v.at === 'uploading' || v.at === 'completed') done.set(host, { host, ok: true });
          else if (v.at === 'failed') done.set(host, { host, ok: false, error: v.error });
        }),
      );
      for (const h of done.keys()) waiting.delete(h);
      const failed = [...done.values()].some((o) => !o.ok);
      if (waiting.size === 0 || failed) {
        for (const h of waiting.keys()) done.set(h, { host: h, ok: true, keep: true });
        return [...done.values()];
      }
      if (Date.now() > deadline) {
        for (const h of waiting.keys()) {
          const why = seen.get(h) === 'noAnswer' ? 'did not answer' : seen.get(h) === 'none' ? 'has not started its part' : 'has not taken its snapshot';
          done.set(h, {
            host: h,
            ok: false,
            error: { code: 'CBR_ERR_HOST_TIMEOUT', message: `${h} ${why} within ${Math.round(deps.barrierTimeoutMs / 1000)} s of the start`, retryable: true },
          });
        }
        return [...done.values()];
      }
      deps.log.debug('barrier: waiting for snapshots', { waiting: [...waiting.keys()] });
      await sleep(deps.pollMs, undefined, { signal });
    }
  });
}
