import { setTimeout as sleep } from 'node:timers/promises';
import { CbrError } from '../../core/errors.ts';
import type { ClusterBackupInput } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked, withBus } from './deps.ts';

/** Broadcasts asked before the coordinator gives up finding any host of the cluster (agents may be reading their cluster name). */
const ROUNDS = 3;

/**
 * The hosts of the cluster, sorted (a host's place in this list is its part number): the named ones, each of which
 * must answer and announce this cluster, or every agent that announces it in a status broadcast.
 */
export async function resolveHosts(deps: ClusterDeps, input: { ctx: ClusterBackupInput }, signal: AbortSignal): Promise<string[]> {
  await pauseIfAsked(deps, 'resolveHosts', signal);
  const { ctx } = input;
  return withBus(deps, async (bus) => {
    if (ctx.hosts) {
      const named = [...new Set(ctx.hosts)].sort();
      const replies = await Promise.all(named.map((h) => bus.ask(h, undefined, signal)));
      named.forEach((host, i) => {
        const r = replies[i];
        if (!r) throw new CbrError('CBR_ERR_HOST_TIMEOUT', `host ${host} did not answer a status query (is its agent running?)`);
        if (r.cluster !== undefined && r.cluster !== ctx.cluster)
          throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `host ${host} is a node of cluster ${JSON.stringify(r.cluster)}, not ${JSON.stringify(ctx.cluster)}`);
      });
      return named;
    }
    for (let round = 1; ; round++) {
      const found = (await bus.everyone(signal)).filter((r) => r.cluster === ctx.cluster).map((r) => r.host);
      if (found.length > 0) return [...new Set(found)].sort();
      if (round >= ROUNDS)
        throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `no agent on the bus announces cluster ${JSON.stringify(ctx.cluster)} (name the hosts with --hosts)`);
      await sleep(deps.pollMs, undefined, { signal });
    }
  });
}
