import { setTimeout as sleep } from 'node:timers/promises';
import { partId } from '../../catalog/clusterRecord.ts';
import { toErrorInfo } from '../../core/errors.ts';
import { DEFAULT_HOLD_TIMEOUT_MS } from '../../machines/backup.machine.ts';
import type { ClusterStepInput, HostOutcome, HostPart } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, type HostBus, pauseIfAsked, viewOf } from './deps.ts';

/** Status answers still `holding` after a release before it is sent again (a release is idempotent; one may be lost). */
export const RELEASE_RESEND_POLLS = 5;

/** A third of the hold timeout: a part queued for its upload slot gets two more keepalives before its hold could end. */
export function holdKeepaliveMs(holdTimeoutMs: number | undefined): number {
  return Math.max(1000, Math.floor((holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS) / 3));
}

/**
 * Releases the held uploads, at most `concurrency` hosts at once, and waits for each to complete. Resumable: a part
 * already uploading or completed is waited for or taken as it is, a held one is released (again; a release of a
 * part that already goes on changes nothing). The first host that fails stops the phase: no other host is released,
 * the ones in flight and the held ones are kept as they are for the abort.
 */
export async function uploadHosts(deps: ClusterDeps, input: ClusterStepInput, signal: AbortSignal): Promise<HostOutcome[]> {
  await pauseIfAsked(deps, 'uploadHosts', signal);
  const { ctx, parts } = input;
  const stop = new AbortController();
  const both = AbortSignal.any([signal, stop.signal]);
  const outcomes = new Map<string, HostOutcome>();
  const queue = parts.map((p, i) => ({ part: p, id: partId(ctx.backupId, i) })).filter(({ part }) => part.phase !== 'failed');
  const bus = await deps.bus();
  try {
    // Parts already past their hold take their slots first (a resumed coordinator finds them uploading).
    const first = await Promise.all(queue.map(async (q) => ({ ...q, view: viewOf(await bus.ask(q.part.host, q.id, both), q.id) })));
    first.sort((a, b) => rank(a.view.at) - rank(b.view.at));
    let next = 0;
    const worker = async () => {
      while (next < first.length && !stop.signal.aborted) {
        const q = first[next++]!;
        try {
          outcomes.set(q.part.host, await uploadOne(deps, bus, q.part, q.id, both));
        } catch (err) {
          if (signal.aborted) throw err;
          if (stop.signal.aborted) break;
          outcomes.set(q.part.host, { host: q.part.host, ok: false, error: toErrorInfo(err) });
        }
        if (outcomes.get(q.part.host)?.ok === false) stop.abort();
      }
    };
    // Parts waiting for a slot hold on: `backup.hold` restarts their hold timeout, so a cluster of many hosts whose
    // uploads outlast one hold is not failed by its own queue (CBR_ERR_HOLD_EXPIRED). A coordinator that dies stops
    // sending them, and the parts' own timeouts clear their snapshots as before.
    const keep = new AbortController();
    const every = deps.holdKeepaliveMs ?? holdKeepaliveMs(ctx.holdTimeoutMs);
    const keepalive = (async () => {
      const until = AbortSignal.any([both, keep.signal]);
      while (!until.aborted) {
        try {
          await sleep(every, undefined, { signal: until });
        } catch {
          return;
        }
        for (const q of first.slice(next)) await bus.send(q.part.host, 'backup.hold', { backupId: q.id }).catch(() => {});
      }
    })();
    try {
      await Promise.all(Array.from({ length: Math.max(1, Math.min(ctx.concurrency, first.length)) }, worker));
    } finally {
      keep.abort();
      await keepalive;
    }
    signal.throwIfAborted();
  } finally {
    await bus.close().catch(() => {});
  }
  return queue.map(({ part }) => outcomes.get(part.host) ?? { host: part.host, ok: true, keep: true });
}

function rank(at: string): number {
  return at === 'completed' ? 0 : at === 'uploading' ? 1 : 2;
}

/**
 * One host: release its held part if it holds, then wait until it completes or fails. A part still holding
 * RELEASE_RESEND_POLLS answers after its release is released again (the first may have been lost, e.g. an agent
 * restarting between the broker's confirm and its handling).
 */
async function uploadOne(deps: ClusterDeps, bus: HostBus, part: HostPart, id: string, signal: AbortSignal): Promise<HostOutcome> {
  let holdingSince = 0;
  let silentSince: number | null = null;
  for (;;) {
    const v = viewOf(await bus.ask(part.host, id, signal), id);
    if (v.at === 'completed') return { host: part.host, ok: true, upload: uploadOf(v.result) };
    if (v.at === 'failed') return { host: part.host, ok: false, error: v.error };
    if (v.at === 'holding') {
      if (holdingSince % RELEASE_RESEND_POLLS === 0) await bus.send(part.host, 'backup.release', { backupId: id });
      holdingSince++;
    }
    if (v.at === 'none')
      return { host: part.host, ok: false, error: { code: 'CBR_ERR_WORKFLOW_NOT_FOUND', message: `${part.host} has no part ${id}`, retryable: false } };
    // An agent that stays silent past the barrier's timeout is taken as failed (its part is left to its hold timeout).
    if (v.at === 'noAnswer') {
      silentSince ??= Date.now();
      if (Date.now() - silentSince > deps.barrierTimeoutMs)
        return {
          host: part.host,
          ok: false,
          error: {
            code: 'CBR_ERR_HOST_TIMEOUT',
            message: `${part.host} did not answer for ${Math.round(deps.barrierTimeoutMs / 1000)} s while uploading`,
            retryable: true,
          },
        };
    } else silentSince = null;
    await sleep(deps.pollMs, undefined, { signal });
  }
}

function uploadOf(r: Record<string, unknown>): NonNullable<HostPart['upload']> {
  const n = (k: string) => (typeof r[k] === 'number' ? (r[k] as number) : 0);
  return { objectKey: typeof r['objectKey'] === 'string' ? r['objectKey'] : '', size: n('size'), rawBytes: n('rawBytes'), files: n('files') };
}
