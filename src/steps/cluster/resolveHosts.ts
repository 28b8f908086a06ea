import { setTimeout as sleep } from 'node:timers/promises';
import { readTopology } from '../../cassandra/topology.ts';
import { CbrError } from '../../core/errors.ts';
import type { ClusterBackupInput } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked, withBus } from './deps.ts';

/** How many nodes the ring has, as the coordinator's own node sees it; that node must be of the cluster asked for. */
async function ringSize(deps: ClusterDeps, cluster: string): Promise<number> {
  const cql = await deps.cql();
  try {
    const ring = await readTopology(cql);
    if (ring.clusterName !== cluster)
      throw new CbrError(
        'CBR_ERR_INVALID_ARGUMENT',
        `the coordinator's node is of cluster ${JSON.stringify(ring.clusterName)}, not ${JSON.stringify(cluster)}`,
      );
    return ring.hosts.length;
  } finally {
    await cql.close();
  }
}

/** Broadcasts asked before the coordinator gives up finding every node's agent (agents may still be reading their cluster name). */
const ROUNDS = 10;

/**
 * The hosts of the cluster, sorted (a host's place in this list is its part number): the named ones, each of which
 * must answer and announce this cluster, or every agent that announces it in a status broadcast, as many as the ring
 * (read on the coordinator's own node) has nodes: an agent that has not announced itself yet (just restarted) is
 * waited for, never silently left out of the cluster backup.
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
    const nodes = await ringSize(deps, ctx.cluster);
    for (let round = 1; ; round++) {
      const found = [...new Set((await bus.everyone(signal)).filter((r) => r.cluster === ctx.cluster).map((r) => r.host))].sort();
      if (found.length === nodes) return found;
      if (found.length > nodes)
        throw new CbrError(
          'CBR_ERR_INVALID_ARGUMENT',
          `${found.length} agents announce cluster ${JSON.stringify(ctx.cluster)} (${found.join(', ')}), its ring has ${nodes} nodes: name the hosts with --hosts`,
        );
      if (round >= ROUNDS)
        throw new CbrError(
          'CBR_ERR_HOST_TIMEOUT',
          `${found.length} of the ${nodes} nodes of cluster ${JSON.stringify(ctx.cluster)} have an agent announcing it${found.length ? ` (${found.join(', ')})` : ''}; start the others' agents or name the hosts with --hosts`,
        );
      await sleep(deps.pollMs, undefined, { signal });
    }
  });
}
