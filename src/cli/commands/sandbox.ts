import { CbrError } from '../../core/errors.ts';
import {
  type ClusterStatus,
  clusterStatus,
  describeCluster,
  isCluster,
  listClusters,
  removeCluster,
  startCluster,
  stopCluster,
} from '../../sandbox/cluster.ts';
import { DEFAULT_CASSANDRA_VERSION, ensureDistribution } from '../../sandbox/dist.ts';
import { listSandboxes, removeSandbox, type SandboxStatus, sandboxStatus, startSandbox, stopSandbox } from '../../sandbox/sandbox.ts';
import { defineCommand, defineCommandGroup, jsonOption } from '../command.ts';
import { printJson } from '../io.ts';

const version = {
  type: 'string',
  placeholder: '<version>',
  description: `the Cassandra release whose jars are fetched from Maven Central (default ${DEFAULT_CASSANDRA_VERSION})`,
} as const;

function needName(positionals: string[], verb: string, usage: string): string {
  const name = positionals[0];
  if (!name) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `sandbox ${verb} needs a name\nusage: ${usage}`);
  return name;
}

const start = defineCommand('sandbox start', {
  summary: 'Start an instance, creating it first if it does not exist; waits until CQL answers.',
  args: '<name>',
  options: {
    'cluster-name': { type: 'string', placeholder: '<name>', description: "a new instance's cluster_name (default: the instance name)" },
    version,
    heap: { type: 'string', placeholder: '<size>', description: 'the JVM heap, e.g. 768M (default $CBR_SANDBOX_HEAP or 768M)' },
    yaml: { type: 'string', placeholder: '<file>', description: "a whole cassandra.yaml to start from instead of cbr's defaults (a new instance)" },
    set: {
      type: 'string',
      multiple: true,
      placeholder: '<key=value>',
      description: 'one cassandra.yaml setting (dotted keys nest; the value is YAML; empty removes the key)',
    },
    'data-dirs': { type: 'string', placeholder: '<n>', description: 'how many data_file_directories a new instance gets, 1..16 (default 1)' },
    address: {
      type: 'string',
      placeholder: '<127.0.0.X>',
      description: "the loopback address a new instance listens on (default 127.0.0.1); a cluster's first node",
    },
    nodes: {
      type: 'string',
      placeholder: '<n>',
      description: 'a cluster of n nodes <name>-1..n on 127.0.0.1, .2, ... with the same ports, started one at a time (heap default 512M each)',
    },
    ...jsonOption,
  },
  async run({ values, positionals, usage }, io) {
    const name = needName(positionals, 'start', usage);
    const t0 = Date.now();
    if (!values.json && io.isTTY) io.stderr(`starting sandbox ${name}...\n`);
    const opts = {
      env: io.env,
      ...(values.version ? { version: values.version } : {}),
      ...(values['cluster-name'] ? { clusterName: values['cluster-name'] } : {}),
      ...(values.heap ? { heap: values.heap } : {}),
      ...(values.yaml ? { yamlFile: values.yaml } : {}),
      ...(values.set?.length ? { settings: values.set } : {}),
      ...(values['data-dirs'] ? { dataDirs: Number(values['data-dirs']) } : {}),
      ...(values.address ? { address: values.address } : {}),
    };
    if (values.nodes !== undefined || isCluster(name, io.env)) {
      const cluster = await startCluster(name, values.nodes === undefined ? undefined : Number(values.nodes), opts);
      const out = { ...cluster, startSeconds: (Date.now() - t0) / 1000 };
      if (values.json) printJson(io, out);
      else io.stdout(`${describeCluster(cluster)}\nstarted in ${out.startSeconds.toFixed(1)} s\n`);
      return 0;
    }
    const status = await startSandbox(name, opts);
    const out = { ...status, startSeconds: (Date.now() - t0) / 1000 };
    if (values.json) printJson(io, out);
    else io.stdout(`${describe(status)}\nstarted in ${out.startSeconds.toFixed(1)} s\n`);
    return 0;
  },
});

const stop = defineCommand('sandbox stop', {
  summary: 'Stop an instance or every node of a cluster (SIGTERM, then SIGKILL after a grace period); its data stays.',
  args: '<name>',
  options: { ...jsonOption },
  async run({ values, positionals, usage }, io) {
    const name = needName(positionals, 'stop', usage);
    if (isCluster(name, io.env)) await stopCluster(name, io.env);
    else await stopSandbox(name, io.env);
    if (values.json) printJson(io, { name, running: false });
    else io.stdout(`sandbox ${name} stopped\n`);
    return 0;
  },
});

const status = defineCommand('sandbox status', {
  summary: 'Show one instance or cluster (its ring: state, address, host id, tokens; exit 1 when a node is stopped), or every one.',
  args: '[<name>]',
  options: { ...jsonOption },
  async run({ values, positionals }, io) {
    const name = positionals[0];
    if (name && isCluster(name, io.env)) {
      const cluster = await clusterStatus(name, { env: io.env });
      if (values.json) printJson(io, cluster);
      else io.stdout(`${describeCluster(cluster)}\n`);
      return cluster.running ? 0 : 1;
    }
    const names = name ? [name] : await listSandboxes(io.env);
    const statuses: (SandboxStatus | ClusterStatus)[] = await Promise.all(names.map((n) => sandboxStatus(n, { env: io.env })));
    if (!name) for (const c of await listClusters(io.env)) statuses.push(await clusterStatus(c, { env: io.env, probe: false }));
    if (values.json) printJson(io, name ? statuses[0] : statuses);
    else io.stdout(statuses.length ? `${statuses.map((s) => ('cluster' in s ? describeCluster(s) : describe(s))).join('\n')}\n` : 'no sandboxes\n');
    return name && !statuses[0]?.running ? 1 : 0;
  },
});

const rm = defineCommand('sandbox rm', {
  summary: 'Stop an instance (or a whole cluster) and remove its folder(s), data included.',
  args: '<name>',
  options: { ...jsonOption },
  async run({ values, positionals, usage }, io) {
    const name = needName(positionals, 'rm', usage);
    if (isCluster(name, io.env)) await removeCluster(name, io.env);
    else await removeSandbox(name, io.env);
    if (values.json) printJson(io, { name, removed: true });
    else io.stdout(`sandbox ${name} removed\n`);
    return 0;
  },
});

const fetch = defineCommand('sandbox fetch', {
  summary: 'Only fetch the Cassandra jars (once; they are cached in $CBR_CACHE, default ~/.cache/cbr).',
  options: { version, ...jsonOption },
  async run({ values }, io) {
    const t0 = Date.now();
    const dist = await ensureDistribution(values.version, io.env);
    const out = { ...dist, seconds: (Date.now() - t0) / 1000 };
    if (values.json) printJson(io, out);
    else io.stdout(`Cassandra ${dist.version} jars in ${dist.libDir}${dist.fetched ? ' (fetched)' : ' (cached)'}\n`);
    return 0;
  },
});

export const command = defineCommandGroup('sandbox', 'Run throwaway real Cassandra 5.0 nodes from Maven Central jars (start, stop, status, rm, fetch).', {
  start,
  stop,
  status,
  rm,
  fetch,
});

function describe(s: SandboxStatus): string {
  const state = s.running ? `running (pid ${s.pid}, Cassandra ${s.releaseVersion ?? '?'}, cluster ${s.clusterName ?? '?'})` : 'stopped';
  return `${s.name}: ${state}\n  cql ${s.cqlHost}:${s.cqlPort}  jmx ${s.jmxPort}\n  profile ${s.profilePath}\n  log ${s.logFile}`;
}
