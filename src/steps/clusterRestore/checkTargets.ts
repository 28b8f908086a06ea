import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Profile } from '../../cassandra/profile.ts';
import { CassandraYaml } from '../../cassandra/yaml.ts';
import type { ClusterRecordHost } from '../../catalog/clusterRecord.ts';
import { CbrError } from '../../core/errors.ts';

/**
 * The cluster restore's refusals that need every target at once, before any node is touched:
 * - two nodes on one storage address would not form one ring (stock `listen_address: localhost` on real hosts
 *   gives each node its own ring), and a loopback seed cannot be reached from another machine;
 * - Cassandra refuses to start a node whose datacenter or rack differs from the one saved in its system tables
 *   (the source host's, restored with its data), so a target in another DC or rack would fail at its start.
 */

/** What one target's own files say about where it sits in a ring. */
export interface TargetPlace {
  name: string;
  /** broadcast_address, else listen_address, else the profile's CQL host. */
  address: string;
  storagePort: number;
  /** The profile's CQL host: where cbr reaches the node (its machine). */
  cqlHost: string;
  /** From its snitch (SimpleSnitch: datacenter1/rack1; a property-file snitch: cassandra-rackdc.properties); null when not readable. */
  datacenter: string | null;
  rack: string | null;
}

export async function readTargetPlace(profile: Profile): Promise<TargetPlace> {
  const y = CassandraYaml.parse(await readFile(profile.cassandraYaml, 'utf8'));
  const address = String(y.get('broadcast_address') ?? y.get('listen_address') ?? profile.cql.host);
  const storagePort = Number(y.get('storage_port') ?? 7000);
  const snitch = String(y.get('endpoint_snitch') ?? 'SimpleSnitch').replace(/^org\.apache\.cassandra\.locator\./, '');
  let datacenter: string | null = null;
  let rack: string | null = null;
  if (snitch === 'SimpleSnitch') {
    datacenter = 'datacenter1';
    rack = 'rack1';
  } else if (snitch === 'GossipingPropertyFileSnitch') {
    const file = join(dirname(profile.cassandraYaml), 'cassandra-rackdc.properties');
    if (existsSync(file)) {
      const props = parseProperties(await readFile(file, 'utf8'));
      datacenter = (props.get('dc') ?? '') + (props.get('dc_suffix') ?? '') || null;
      rack = props.get('rack') ?? null;
    }
  }
  return { name: profile.name, address, storagePort, cqlHost: profile.cql.host, datacenter, rack };
}

function parseProperties(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([^#!=:\s][^=:\s]*)\s*[=:]\s*(.*?)\s*$/.exec(line);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

export function isLoopback(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[|\]$/g, '');
  return a === 'localhost' || a === 'ip6-localhost' || a === '::1' || a.startsWith('127.');
}

/**
 * Throws CBR_ERR_INVALID_ARGUMENT naming the nodes when the targets would not form one ring (the seed is the
 * first target), or a target sits in another datacenter or rack than the source host whose data it takes.
 */
export function checkTargetPlaces(places: TargetPlace[], hosts: Pick<ClusterRecordHost, 'host' | 'datacenter' | 'rack'>[]): void {
  const problems: string[] = [];
  const seen = new Map<string, string>();
  for (const p of places) {
    const key = `${p.address}:${p.storagePort}`;
    const other = seen.get(key);
    if (other !== undefined)
      problems.push(`${other} and ${p.name} both use storage address ${key} (set listen_address or broadcast_address to each node's own address)`);
    else seen.set(key, p.name);
  }
  const seed = places[0];
  if (seed && isLoopback(seed.address)) {
    const remote = places.filter((p) => !isLoopback(p.address) || !isLoopback(p.cqlHost));
    if (remote.length) {
      problems.push(
        `the seed ${seed.name} listens on loopback (${seed.address}) while ${remote.map((p) => p.name).join(', ')} run elsewhere: they could not reach it`,
      );
    }
  }
  for (const [i, p] of places.entries()) {
    const h = hosts[i];
    if (!h || p.datacenter === null) continue;
    if (p.datacenter !== h.datacenter || (p.rack !== null && p.rack !== h.rack)) {
      problems.push(
        `${p.name} is in datacenter ${p.datacenter}, rack ${p.rack ?? '?'} but takes ${h.host}'s data from datacenter ${h.datacenter}, rack ${h.rack} (Cassandra refuses to start a node in another datacenter or rack than its saved one)`,
      );
    }
  }
  if (problems.length) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `the target nodes cannot form the restored cluster: ${problems.join('; ')}`);
}
