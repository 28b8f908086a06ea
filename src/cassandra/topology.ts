import type { CqlSession } from './cql.ts';

/**
 * The ring as one node knows it: itself (system.local) and its peers (system.peers_v2), with each host's id,
 * datacenter, rack and tokens, plus the cluster's schema. What a cluster backup records so that a restore can give
 * each new node one source node's tokens, and what maps the agents' host names onto Cassandra's host ids.
 */

export interface RingHost {
  hostId: string;
  /** The broadcast (storage) address, as peers_v2 names it. */
  address: string;
  /** Where clients reach it (rpc/native address and port). */
  nativeAddress: string;
  nativePort: number | null;
  datacenter: string;
  rack: string;
  /** Its tokens, sorted as numbers (Murmur3) or as strings otherwise. */
  tokens: string[];
}

export interface ClusterTopology {
  clusterName: string;
  partitioner: string;
  /** The node asked (its host id). */
  seenFrom: string;
  /** Every host, sorted by address. */
  hosts: RingHost[];
}

export function sortTokens(tokens: unknown): string[] {
  const list = [...((tokens as Iterable<unknown> | null | undefined) ?? [])].map(String);
  return list.every((t) => /^-?\d+$/.test(t)) ? list.sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0)) : list.sort();
}

function addressOf(value: unknown): string {
  return String(value ?? '').replace(/^\//, '');
}

export async function readTopology(cql: CqlSession): Promise<ClusterTopology> {
  // system.local names the CQL port rpc_port (peers_v2: native_port); `*` keeps this readable across 4.x and 5.0.
  const [local] = await cql.execute('SELECT * FROM system.local');
  if (!local) throw new Error('system.local is empty');
  const self: RingHost = {
    hostId: String(local['host_id']),
    address: addressOf(local['broadcast_address']),
    nativeAddress: addressOf(local['rpc_address']),
    nativePort: local['rpc_port'] == null ? null : Number(local['rpc_port']),
    datacenter: String(local['data_center']),
    rack: String(local['rack']),
    tokens: sortTokens(local['tokens']),
  };
  const peers = (await cql.execute('SELECT peer, host_id, native_address, native_port, data_center, rack, tokens FROM system.peers_v2')).map(
    (p): RingHost => ({
      hostId: String(p['host_id']),
      address: addressOf(p['peer']),
      nativeAddress: addressOf(p['native_address']),
      nativePort: p['native_port'] == null ? null : Number(p['native_port']),
      datacenter: String(p['data_center']),
      rack: String(p['rack']),
      tokens: sortTokens(p['tokens']),
    }),
  );
  const hosts = [self, ...peers].sort((a, b) => compareAddresses(a.address, b.address));
  return { clusterName: String(local['cluster_name']), partitioner: String(local['partitioner']), seenFrom: self.hostId, hosts };
}

/** The non-system schema as CREATE statements, in the order Cassandra's own DESCRIBE SCHEMA gives them (4.0+ server side). */
export async function readSchema(cql: CqlSession): Promise<string> {
  const rows = await cql.execute('DESCRIBE SCHEMA');
  return rows.map((r) => String(r['create_statement'])).join('\n\n');
}

function compareAddresses(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  if (pa.length === 4 && pb.length === 4 && [...pa, ...pb].every(Number.isInteger)) {
    for (let i = 0; i < 4; i++) if (pa[i] !== pb[i]) return (pa[i] as number) - (pb[i] as number);
    return 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}
