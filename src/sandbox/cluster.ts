import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { connectCql } from '../cassandra/cql.ts';
import { createNodetool } from '../cassandra/nodetool.ts';
import { loadCredentials, loadProfile, type Profile } from '../cassandra/profile.ts';
import { checkClusterName } from '../cassandra/yaml.ts';
import { CbrError } from '../core/errors.ts';
import { INSTANCE_NAME_RE } from '../core/ids.ts';
import {
  createSandbox,
  freeSlot,
  instanceDir,
  MAX_SLOT_NODES,
  profilePath,
  releaseSlots,
  runningPid,
  type SandboxOptions,
  sandboxesDir,
  slotStoragePort,
  startInstance,
  stopInstance,
} from './sandbox.ts';

/**
 * A sandbox cluster: N sandbox nodes `<name>-1..N` (each an ordinary sandbox with its own folder and profile, so
 * every command takes a node's profile with --config), on loopback addresses 127.0.0.1, .2, .3... with the same
 * storage and CQL ports (one port slot for the whole cluster) and one JMX port each (JMX binds 127.0.0.1 only).
 * The first node is the seed; the others bootstrap one at a time, as Cassandra requires.
 * `$CBR_HOME/sandboxes/<name>/cluster.json` names the nodes and holds the slot.
 */

export const DEFAULT_CLUSTER_HEAP = '512M';

const clusterFileSchema = z.object({
  version: z.literal(1),
  name: z.string(),
  clusterName: z.string(),
  nodes: z.array(z.object({ name: z.string(), address: z.string() })).min(1),
  heap: z.string(),
});
export type ClusterFile = z.infer<typeof clusterFileSchema>;

export interface ClusterNodeStatus {
  name: string;
  address: string;
  running: boolean;
  pid: number | null;
  /** As `nodetool status` abbreviates it: U/D (up in gossip) then N/J/L/M; `DN` when the process is not running, `?` when it runs but was not (or could not be) asked. */
  state: string;
  hostId?: string;
  tokens?: number;
  datacenter?: string;
  rack?: string;
  /** How many other nodes this node knows in system.peers_v2. */
  peers?: number;
  cqlPort: number;
  jmxPort: number;
  profilePath: string;
  logFile: string;
  error?: string;
}

export interface ClusterStatus {
  name: string;
  cluster: true;
  clusterName: string;
  running: boolean;
  releaseVersion?: string;
  nodes: ClusterNodeStatus[];
}

export function clusterFilePath(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(instanceDir(name, env), 'cluster.json');
}

export function isCluster(name: string, env: NodeJS.ProcessEnv = process.env): boolean {
  return INSTANCE_NAME_RE.test(name) && existsSync(clusterFilePath(name, env));
}

export async function loadCluster(name: string, env: NodeJS.ProcessEnv = process.env): Promise<ClusterFile> {
  const path = clusterFilePath(name, env);
  if (!existsSync(path)) throw new CbrError('CBR_ERR_SANDBOX_NOT_FOUND', `no sandbox cluster named ${name}`);
  return clusterFileSchema.parse(JSON.parse(await readFile(path, 'utf8')));
}

export async function listClusters(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const root = sandboxesDir(env);
  if (!existsSync(root)) return [];
  return (await readdir(root)).filter((n) => existsSync(join(root, n, 'cluster.json'))).sort();
}

/** The profiles of a cluster's nodes, in node order. */
export async function clusterProfiles(name: string, env: NodeJS.ProcessEnv = process.env): Promise<Profile[]> {
  const c = await loadCluster(name, env);
  return Promise.all(c.nodes.map((n) => loadProfile(profilePath(n.name, env))));
}

/**
 * Starts a cluster of `nodes` nodes, creating it first if needed, one node at a time: each waits until CQL
 * answers with the superuser's credentials (a joining node opens CQL only once it is NORMAL) before the next starts.
 */
export async function startCluster(name: string, nodes: number | undefined, opts: SandboxOptions = {}): Promise<ClusterStatus> {
  const env = opts.env ?? process.env;
  let cluster: ClusterFile;
  const existed = isCluster(name, env);
  if (existed) {
    cluster = await loadCluster(name, env);
    if (
      (nodes !== undefined && nodes !== cluster.nodes.length) ||
      opts.yamlFile !== undefined ||
      opts.settings?.length ||
      opts.dataDirs !== undefined ||
      opts.address !== undefined
    ) {
      throw new CbrError(
        'CBR_ERR_SANDBOX_EXISTS',
        `sandbox cluster ${name} exists with ${cluster.nodes.length} nodes; --nodes, --yaml, --set, --data-dirs and --address shape a new cluster (rm it first)`,
      );
    }
  } else {
    cluster = await createCluster(name, nodes ?? 3, opts);
  }
  const profiles = await Promise.all(cluster.nodes.map((node) => loadProfile(profilePath(node.name, env))));
  const heap = opts.heap ?? cluster.heap;
  // A cluster started before keeps its roles in system_auth at replication 3: its first node back alone cannot log
  // anyone in (QUORUM), so a restart waits for each node's CQL port first, and for logins once all are up.
  for (const profile of profiles) await startInstance(profile, { ...opts, heap, ...(existed ? { requireAuth: false } : {}) });
  if (existed) for (const profile of profiles) await startInstance(profile, { ...opts, heap });
  return settledStatus(name, env, opts.signal);
}

/**
 * The last node answering CQL is not yet a formed ring: the others learn it by gossip a moment later. Start returns
 * once every node is Up/Normal and knows every other one (or after a minute, with the status as it is, for the
 * caller to see which node is not).
 */
async function settledStatus(name: string, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<ClusterStatus> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const status = await clusterStatus(name, { env });
    const others = status.nodes.length - 1;
    if (status.nodes.every((n) => n.running && n.state === 'UN' && n.peers === others) || Date.now() > deadline) return status;
    await sleep(1000, undefined, signal ? { signal } : undefined);
  }
}

export async function createCluster(name: string, nodes: number, opts: SandboxOptions): Promise<ClusterFile> {
  const env = opts.env ?? process.env;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_SLOT_NODES) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--nodes must be 1 to ${MAX_SLOT_NODES} (got ${nodes})`);
  }
  const dir = instanceDir(name, env);
  if (existsSync(dir)) throw new CbrError('CBR_ERR_SANDBOX_EXISTS', `sandbox ${name} already exists at ${dir}`);
  const names = Array.from({ length: nodes }, (_, i) => `${name}-${i + 1}`);
  for (const n of names) {
    if (!INSTANCE_NAME_RE.test(n)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `sandbox cluster name too long for its node names (${n})`);
    if (existsSync(instanceDir(n, env)))
      throw new CbrError('CBR_ERR_SANDBOX_EXISTS', `a sandbox named ${n} already exists: it would be node ${n} of cluster ${name}`);
  }
  const first = opts.address ?? '127.0.0.1';
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(first);
  if (!m || Number(m[3]) + nodes - 1 > 254)
    throw new CbrError(
      'CBR_ERR_INVALID_ARGUMENT',
      `--address must be a loopback IPv4 address with room for ${nodes} nodes after it (got ${JSON.stringify(first)})`,
    );
  const addresses = names.map((_, i) => `127.${m[1]}.${m[2]}.${Number(m[3]) + i}`);
  const clusterName = checkClusterName(opts.clusterName ?? name);
  const heap = opts.heap ?? env['CBR_SANDBOX_CLUSTER_HEAP'] ?? DEFAULT_CLUSTER_HEAP;
  await mkdir(dir, { recursive: true });
  const cluster: ClusterFile = { version: 1, name, clusterName, nodes: names.map((n, i) => ({ name: n, address: addresses[i] as string })), heap };
  let slot: number;
  try {
    slot = await freeSlot(dir, env, nodes);
    await writeFile(join(dir, 'cluster.json'), `${JSON.stringify(cluster, null, 2)}\n`);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  // Vnodes as a stock 5.0 node has them (16, allocated for RF 3) instead of the single-node sandbox's one token at 0;
  // the operator's --set comes after, so it can change them.
  const settings = ['num_tokens=16', 'allocate_tokens_for_local_replication_factor=3', ...(opts.settings ?? [])];
  // The first node is the seed of all: every node has the slot's storage port.
  const seeds = `${addresses[0]}:${slotStoragePort(slot)}`;
  for (const [i, n] of names.entries()) {
    await createSandbox(n, { ...opts, clusterName, address: addresses[i] as string, settings, clusterNode: { slot, index: i, seeds } });
    await writeFile(join(instanceDir(n, env), 'conf', 'heap'), `${heap}\n`);
  }
  return cluster;
}

/** Stops every node of the cluster at once; their data stays. */
export async function stopCluster(name: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const c = await loadCluster(name, env);
  await Promise.all(c.nodes.map((n) => stopInstance(instanceDir(n.name, env))));
}

/** Stops the nodes and removes their folders, then the cluster's, and frees its port slot. */
export async function removeCluster(name: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const c = await loadCluster(name, env);
  await stopCluster(name, env);
  for (const n of c.nodes) await rm(instanceDir(n.name, env), { recursive: true, force: true });
  const dir = instanceDir(name, env);
  await rm(dir, { recursive: true, force: true });
  await releaseSlots(dir);
}

/** Each node as it sees itself: its process, gossip state (over JMX), host id, tokens, datacenter and rack (over CQL). */
export async function clusterStatus(name: string, opts: { env?: NodeJS.ProcessEnv; probe?: boolean } = {}): Promise<ClusterStatus> {
  const env = opts.env ?? process.env;
  const c = await loadCluster(name, env);
  const status: ClusterStatus = { name, cluster: true, clusterName: c.clusterName, running: true, nodes: [] };
  for (const n of c.nodes) {
    const path = profilePath(n.name, env);
    const profile = await loadProfile(path);
    const dir = instanceDir(n.name, env);
    const pid = runningPid(dir);
    const s: ClusterNodeStatus = {
      name: n.name,
      address: profile.cql.host,
      running: pid !== null,
      pid,
      state: pid === null ? 'DN' : '?',
      cqlPort: profile.cql.port,
      jmxPort: profile.jmx.port,
      profilePath: path,
      logFile: join(dir, 'logs', 'system.log'),
    };
    if (pid !== null && opts.probe !== false) await probeNode(profile, s, status);
    if (!s.running) status.running = false;
    status.nodes.push(s);
  }
  return status;
}

async function probeNode(profile: Profile, s: ClusterNodeStatus, cluster: ClusterStatus): Promise<void> {
  try {
    const cql = await connectCql({ ...profile.cql, credentials: await loadCredentials(profile.cql.credentialsFile) }, { timeoutMs: 3000 });
    try {
      const [row] = await cql.execute('SELECT host_id, tokens, data_center, rack, release_version FROM system.local');
      s.hostId = String(row?.['host_id']);
      s.tokens = (row?.['tokens'] as unknown[] | undefined)?.length ?? 0;
      s.datacenter = String(row?.['data_center']);
      s.rack = String(row?.['rack']);
      cluster.releaseVersion ??= String(row?.['release_version']);
      s.peers = (await cql.execute('SELECT peer FROM system.peers_v2')).length;
    } finally {
      await cql.close();
    }
    const jmx = createNodetool(profile);
    try {
      const st = await jmx.status();
      s.state = `${st.live ? 'U' : 'D'}${st.state[0]}`;
    } finally {
      jmx.close();
    }
  } catch (err) {
    s.running = false;
    s.error = err instanceof Error ? err.message : String(err);
  }
}

export function describeCluster(c: ClusterStatus): string {
  const lines = [
    `${c.name}: cluster ${c.clusterName}, ${c.nodes.length} nodes, ${c.running ? `running (Cassandra ${c.releaseVersion ?? '?'})` : 'not all running'}`,
  ];
  lines.push('  state  address          host id                               tokens  dc/rack                 node');
  for (const n of c.nodes) {
    const where = n.datacenter ? `${n.datacenter}/${n.rack}` : '-';
    lines.push(
      `  ${n.state.padEnd(5)}  ${`${n.address}:${n.cqlPort}`.padEnd(15)}  ${(n.hostId ?? '-').padEnd(36)}  ${String(n.tokens ?? '-').padStart(6)}  ${where.padEnd(22)}  ${n.name} (jmx ${n.jmxPort}, pid ${n.pid ?? '-'})`,
    );
  }
  return lines.join('\n');
}
