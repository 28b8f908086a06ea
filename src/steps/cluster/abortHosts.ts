import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { deletePendingMarker, partId } from '../../catalog/clusterRecord.ts';
import { type ErrorInfo, toErrorInfo } from '../../core/errors.ts';
import type { ClusterStepInput, HostOutcome } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, eachLimited, type HostBus, pauseIfAsked, viewOf } from './deps.ts';

/** A cancel not yet seen to act is sent again this often. */
const RESEND_MS = 5000;

/**
 * Every host drops its part: a running one is cancelled (`workflow.cancel`: its backup machine compensates, deleting
 * what it stored and clearing its snapshot) and waited for; a completed one is deleted (`backup.delete`); a failed
 * one or none at all needs nothing. Idempotent: a resumed abort asks again and finds what is left. A host that does
 * not drop its part in time is this step's warning (a held part still clears itself at its hold timeout).
 */
export async function abortHosts(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<HostOutcome[]> {
  await pauseIfAsked(deps, 'abortHosts', signal);
  const { ctx, parts } = input;
  // The pending marker goes first: a host's backup.delete refuses a part a marker still protects. A part a host
  // cannot drop is then an ordinary host backup, which retention removes in its turn.
  await deletePendingMarker(deps.store, ctx.backupId, signal);
  const outcomes: HostOutcome[] = [];
  const bus = await deps.bus();
  try {
    await eachLimited(
      parts.map((p, i) => ({ host: p.host, id: partId(ctx.backupId, i) })),
      32,
      async ({ host, id }) => {
        try {
          const error = await dropPart(deps, bus, host, id, signal);
          outcomes.push(error ? { host, ok: false, error } : { host, ok: true });
        } catch (err) {
          if (signal.aborted) throw err;
          outcomes.push({ host, ok: false, error: toErrorInfo(err) });
        }
      },
    );
  } finally {
    await bus.close().catch(() => {});
  }
  return outcomes;
}

/** Null once the host holds nothing of the part; its error when it could not be made to drop it in time. */
async function dropPart(deps: ClusterDeps, bus: HostBus, host: string, id: string, signal: AbortSignal): Promise<ErrorInfo | null> {
  const deadline = Date.now() + deps.abortTimeoutMs;
  let cancelledAt = 0;
  let deleteId: string | null = null;
  for (;;) {
    const v = viewOf(await bus.ask(host, id, signal), id);
    if (v.at === 'none' || v.at === 'failed') return null;
    if (v.at === 'completed') {
      if (!deleteId) {
        deleteId = randomUUID();
        await bus.send(host, 'backup.delete', { backupId: id }, deleteId);
      }
      const d = (await bus.ask(host, deleteId, signal))?.workflows.find((w) => w.workflowId === deleteId);
      if (d && d.status === 'done') {
        if (d.state === 'completed' || d.error?.code === 'CBR_ERR_BACKUP_NOT_FOUND') return null;
        return d.error ?? { code: 'CBR_ERR_INTERNAL', message: `backup.delete of ${id} ended ${d.state}`, retryable: true };
      }
    } else if (v.at !== 'noAnswer' && v.at !== 'failing' && Date.now() - cancelledAt > RESEND_MS) {
      await bus.send(host, 'workflow.cancel', { workflowId: id });
      cancelledAt = Date.now();
    }
    if (Date.now() > deadline) {
      const why = v.at === 'noAnswer' ? 'did not answer' : `still has its part (${v.at})`;
      return {
        code: 'CBR_ERR_HOST_TIMEOUT',
        message: `${host} ${why} after ${Math.round(deps.abortTimeoutMs / 1000)} s of the abort; a held snapshot clears itself at its hold timeout`,
        retryable: true,
      };
    }
    await sleep(deps.pollMs, undefined, { signal });
  }
}
