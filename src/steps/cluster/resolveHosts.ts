import { setTimeout as sleep } from 'node:timers/promises';
import { type ClusterTopology, readTopology } from '../../cassandra/topology.ts';
import { CbrError } from '../../core/errors.ts';
import type { ClusterBackupInput } from '../../machines/clusterBackup.machine.ts';
import { type ClusterDeps, pauseIfAsked, withBus } from './deps.ts';

/** The ring as the coordinator's own node sees it; that node must be of the cluster asked for. */
async function ringOf(deps: ClusterDeps, cluster: string): Promise<ClusterTopology> {
  const cql = await deps.cql();
  try {
    const ring = await readTopology(cql);
    if (ring.clusterName !== cluster)
      throw new CbrError(
        'CBR_ERR_INVALID_ARGUMENT',
        `the coordinator's node is of cluster ${JSON.stringify(ring.clusterName)}, not ${JSON.stringify(cluster)}`,
      );
    return ring;
  } finally {
    await cql.close();
  }
}

/**
 * One host per ring node, or refused (CBR_ERR_CLUSTER_INCOMPLETE) before any host backs up: a cluster backup missing
 * a node restores into a smaller ring, and the rows only that node held are gone. Hosts whose agent announces its
 * node's address are matched by it (an address outside the ring, or two hosts on one node, are refused too).
 */
function checkCoversRing(ring: ClusterTopology, hosts: readonly { host: string; address?: string | undefined }[]): void {
  const all = ring.hosts.map((h) => h.address).join(', ');
  if (hosts.length !== ring.hosts.length)
    throw new CbrError(
      'CBR_ERR_CLUSTER_INCOMPLETE',
      `${hosts.length} host(s) (${hosts.map((h) => h.host).join(', ')}) for the ${ring.hosts.length} nodes of cluster ${JSON.stringify(ring.clusterName)} (${all}): a cluster backup takes one host per ring node`,
    );
  const taken = new Map<string, string>();
  for (const { host, address } of hosts) {
    if (address === undefined) continue;
    if (!ring.hosts.some((h) => h.address === address))
      throw new CbrError('CBR_ERR_CLUSTER_INCOMPLETE', `host ${host} announces node address ${address}, which is not a node of the ring (${all})`);
    const other = taken.get(address);
    if (other) throw new CbrError('CBR_ERR_CLUSTER_INCOMPLETE', `hosts ${other} and ${host} both announce node ${address}: some ring node has no host`);
    taken.set(address, host);
  }
}

/** Broadcasts asked before the coordinator gives up finding every node's agent (agents may still be reading their cluster name). */
const ROUNDS = 10;

/**
 * The hosts of the cluster, sorted (a host's place in this list is its part number): the named ones, each of which
 * must answer and announce this cluster, or every agent that announces it in a status broadcast, as many as the ring
 * (read on the coordinator's own node) has nodes: an agent that has not announced itself yet (just restarted) is
 * waited for, never silently left out of the cluster backup. Either way the hosts must cover every ring node.
 */
export async function resolveHosts(deps: ClusterDeps, input: { ctx: ClusterBackupInput }, signal: AbortSignal): Promise<string[]> {
  await pauseIfAsked(deps, 'resolveHosts', signal);
  const { ctx } = input;
  return withBus(deps, async (bus) => {
    const ring = await ringOf(deps, ctx.cluster);
    const nodes = ring.hosts.length;
    if (ctx.hosts) {
      const named = [...new Set(ctx.hosts)].sort();
      const replies = await Promise.all(named.map((h) => bus.ask(h, undefined, signal)));
      named.forEach((host, i) => {
        const r = replies[i];
        if (!r) throw new CbrError('CBR_ERR_HOST_TIMEOUT', `host ${host} did not answer a status query (is its agent running?)`);
        if (r.cluster !== undefined && r.cluster !== ctx.cluster)
          throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `host ${host} is a node of cluster ${JSON.stringify(r.cluster)}, not ${JSON.stringify(ctx.cluster)}`);
      });
      checkCoversRing(
        ring,
        named.map((host, i) => ({ host, address: replies[i]?.address })),
      );
      return named;
    }
    for (let round = 1; ; round++) {
      const announced = new Map((await bus.everyone(signal)).filter((r) => r.cluster === ctx.cluster).map((r) => [r.host, r.address]));
      const found = [...announced.keys()].sort();
      if (found.length === nodes) {
        checkCoversRing(
          ring,
          found.map((host) => ({ host, address: announced.get(host) })),
        );
        return found;
      }
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
