import { partId } from '../../catalog/clusterRecord.ts';
import { toErrorInfo } from '../../core/errors.ts';
import type { ClusterStepInput, HostOutcome } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, eachLimited, pauseIfAsked, withBus } from './deps.ts';

/**
 * Sends each host `backup.create` of its part (command id = part id, so a resend after a crash starts nothing new:
 * the agent dedupes command ids), held after its snapshot until released. A host whose command cannot be routed
 * (no agent queue) fails here; whether the others took it, the barrier learns from their status. The cluster
 * backup's pending marker is already there (reserveBackupId).
 */
export async function startHostBackups(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<HostOutcome[]> {
  await pauseIfAsked(deps, 'startHostBackups', signal);
  const { ctx, parts } = input;
  const outcomes: HostOutcome[] = [];
  await withBus(deps, (bus) =>
    eachLimited(
      parts.map((p, i) => ({ host: p.host, id: partId(ctx.backupId, i) })),
      32,
      async ({ host, id }) => {
        signal.throwIfAborted();
        const payload = {
          name: ctx.name,
          ...(ctx.description ? { description: ctx.description } : {}),
          strategy: ctx.strategy,
          clusterBackupId: ctx.backupId,
          hold: true,
          ...(ctx.holdTimeoutMs ? { holdTimeoutMs: ctx.holdTimeoutMs } : {}),
        };
        try {
          await bus.send(host, 'backup.create', payload, id);
          outcomes.push({ host, ok: true });
        } catch (err) {
          outcomes.push({ host, ok: false, error: toErrorInfo(err) });
        }
      },
    ),
  );
  return outcomes;
}
