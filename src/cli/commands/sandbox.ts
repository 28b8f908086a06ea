import { CbrError } from '../../core/errors.ts';
import { ensureDistribution } from '../../sandbox/dist.ts';
import { listSandboxes, removeSandbox, type SandboxStatus, sandboxStatus, startSandbox, stopSandbox } from '../../sandbox/sandbox.ts';
import { type CliIO, type Command, parse, printJson } from '../io.ts';

const usage =
  'cbr sandbox start <name> [--cluster-name N] [--version V] [--heap 768M] [--yaml FILE] [--set key=value ...] [--data-dirs N] [--address 127.0.0.X] | stop <name> | status [<name>] | rm <name> | fetch [--version V]  [--json]';

export const command: Command = {
  summary: 'Run throwaway real Cassandra 5.0 nodes from Maven Central jars (start, stop, status, rm, fetch).',
  usage,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        json: { type: 'boolean', default: false },
        'cluster-name': { type: 'string' },
        version: { type: 'string' },
        heap: { type: 'string' },
        yaml: { type: 'string' },
        set: { type: 'string', multiple: true },
        'data-dirs': { type: 'string' },
        address: { type: 'string' },
      },
      usage,
    );
    const [verb, name] = positionals;
    const env = io.env;
    const need = (): string => {
      if (!name) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `sandbox ${verb} needs a name\nusage: ${usage}`);
      return name;
    };
    switch (verb) {
      case 'fetch': {
        const t0 = Date.now();
        const dist = await ensureDistribution(values.version, env);
        const out = { ...dist, seconds: (Date.now() - t0) / 1000 };
        if (values.json) printJson(io, out);
        else io.stdout(`Cassandra ${dist.version} jars in ${dist.libDir}${dist.fetched ? ' (fetched)' : ' (cached)'}\n`);
        return 0;
      }
      case 'start': {
        const n = need();
        const t0 = Date.now();
        if (!values.json && io.isTTY) io.stderr(`starting sandbox ${n}...\n`);
        const status = await startSandbox(n, {
          env,
          ...(values.version ? { version: values.version } : {}),
          ...(values['cluster-name'] ? { clusterName: values['cluster-name'] } : {}),
          ...(values.heap ? { heap: values.heap } : {}),
          ...(values.yaml ? { yamlFile: values.yaml } : {}),
          ...(values.set?.length ? { settings: values.set } : {}),
          ...(values['data-dirs'] ? { dataDirs: Number(values['data-dirs']) } : {}),
          ...(values.address ? { address: values.address } : {}),
        });
        const out = { ...status, startSeconds: (Date.now() - t0) / 1000 };
        if (values.json) printJson(io, out);
        else io.stdout(`${describe(status)}\nstarted in ${out.startSeconds.toFixed(1)} s\n`);
        return 0;
      }
      case 'stop': {
        await stopSandbox(need(), env);
        if (values.json) printJson(io, { name, running: false });
        else io.stdout(`sandbox ${name} stopped\n`);
        return 0;
      }
      case 'rm': {
        await removeSandbox(need(), env);
        if (values.json) printJson(io, { name, removed: true });
        else io.stdout(`sandbox ${name} removed\n`);
        return 0;
      }
      case 'status': {
        const names = name ? [name] : await listSandboxes(env);
        const statuses = await Promise.all(names.map((n) => sandboxStatus(n, { env })));
        if (values.json) printJson(io, name ? statuses[0] : statuses);
        else io.stdout(statuses.length ? `${statuses.map(describe).join('\n')}\n` : 'no sandboxes\n');
        return name && !statuses[0]?.running ? 1 : 0;
      }
      default:
        throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `unknown sandbox verb ${JSON.stringify(verb ?? '')}\nusage: ${usage}`);
    }
  },
};

function describe(s: SandboxStatus): string {
  const state = s.running ? `running (pid ${s.pid}, Cassandra ${s.releaseVersion ?? '?'}, cluster ${s.clusterName ?? '?'})` : 'stopped';
  return `${s.name}: ${state}\n  cql ${s.cqlHost}:${s.cqlPort}  jmx ${s.jmxPort}\n  profile ${s.profilePath}\n  log ${s.logFile}`;
}

export type { CliIO };
