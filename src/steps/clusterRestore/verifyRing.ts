import { setTimeout as sleep } from 'node:timers/promises';
import { readTopology } from '../../cassandra/topology.ts';
import { CbrError } from '../../core/errors.ts';
import type { RestoreDeps } from '../restore/restoreDeps.ts';

export interface RingNode {
  /** The target node's restore dependencies (its profile, CQL and JMX). */
  deps: RestoreDeps;
  /** The source host whose part it took: its host id and tokens, as the cluster record has them. */
  hostId: string;
  tokens: string[];
}

/** How long the new ring may take to form after the last start: gossip spreads in seconds. */
const SETTLE_MS = 90_000;

/**
 * The restored nodes form one ring, as the cluster record describes it: every node is up and Normal, knows
 * every other one, carries its source host's id and exactly its recorded tokens; and each node sees the same
 * ring. Read-only, so a re-run only asks again; retried until the ring settles, then fails naming what differs.
 */
export async function verifyRing(nodes: RingNode[], credentials: { username: string; password: string }, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    signal.throwIfAborted();
    const problems = await ringProblems(nodes, credentials, signal);
    if (problems.length === 0) return;
    if (Date.now() > deadline) {
      throw new CbrError('CBR_ERR_RESTORE_VERIFY_FAILED', `the restored nodes do not form the recorded ring: ${problems.slice(0, 6).join('; ')}`);
    }
    await sleep(2000, undefined, { signal });
  }
}

function tokenKey(tokens: readonly string[]): string {
  return [...tokens].sort().join(',');
}

async function ringProblems(nodes: RingNode[], credentials: { username: string; password: string }, signal: AbortSignal): Promise<string[]> {
  const problems: string[] = [];
  const want = new Map(nodes.map((n) => [n.hostId, tokenKey(n.tokens)]));
  for (const n of nodes) {
    const name = n.deps.profile.name;
    try {
      const status = await n.deps.nodetool.status(signal);
      if (!status.live || status.state !== 'Normal') problems.push(`${name} is ${status.live ? 'U' : 'D'}${status.state[0]}`);
      const cql = await n.deps.cql(credentials);
      try {
        const ring = await readTopology(cql);
        const self = ring.hosts.find((h) => h.hostId === ring.seenFrom);
        if (self?.hostId !== n.hostId) problems.push(`${name} has host id ${self?.hostId}, its part's source had ${n.hostId}`);
        if (self && tokenKey(self.tokens) !== tokenKey(n.tokens))
          problems.push(`${name} owns ${self.tokens.length} tokens other than the recorded ${n.tokens.length}`);
        const seen = new Map(ring.hosts.map((h) => [h.hostId, tokenKey(h.tokens)]));
        for (const [hostId, tokens] of want) {
          if (!seen.has(hostId)) problems.push(`${name} does not know ${hostId} yet`);
          else if (seen.get(hostId) !== tokens) problems.push(`${name} sees other tokens for ${hostId}`);
        }
        for (const hostId of seen.keys()) if (!want.has(hostId)) problems.push(`${name} knows a node outside the new cluster (${hostId})`);
      } finally {
        await cql.close();
      }
    } catch (err) {
      signal.throwIfAborted();
      problems.push(`${name}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return problems;
}
