import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { COMPRESSIONS } from '../../archive/format.ts';
import { parseRate } from '../../archive/throttle.ts';
import { createNodetool } from '../../cassandra/nodetool.ts';
import { loadProfile } from '../../cassandra/profile.ts';
import { checkId } from '../../catalog/catalog.ts';
import { CbrError, fromErrorInfo } from '../../core/errors.ts';
import {
  type BackupRequest,
  backupInput,
  backupPayload,
  checkBackupRequest,
  DEFAULT_COMPRESSION,
  DEFAULT_CONCURRENCY,
  DEFAULT_MIN_FREE_PERCENT,
  MAX_CONCURRENCY,
  STRATEGIES,
  STRATEGY_ENV,
} from '../../workflows/backupRequest.ts';
import { type BusValues, busOptions, followOptions, runOverBus } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { type CliIO, printJson, requireOption } from '../io.ts';
import { formatBytes } from '../progress.ts';
import { metricsOptions, storageConfig, storageOptions } from '../storageOptions.ts';

export const command = defineCommand('backup-create', {
  summary: 'Snapshot the node and store it: one archive (full) or only the files not stored yet (incremental); prints the id.',
  args: '<name> (--config <profile> | --bus <url> --host <host-id>)',
  options: {
    config: { type: 'string', placeholder: '<profile>', description: "the source node's profile (how to reach CQL and JMX, where its data is)" },
    description: { type: 'string', default: '', placeholder: '<text>', description: 'kept in the record, at most 1,024 characters' },
    compression: { type: 'string', default: DEFAULT_COMPRESSION, placeholder: COMPRESSIONS.join('|'), description: 'how the archive is compressed' },
    'encrypt-key-file': {
      type: 'string',
      placeholder: '<file>',
      description: 'seal the archive (AES-256-GCM) with the key in this file: 64 hex characters, base64 of 32 bytes, or 32 bytes',
    },
    'encrypt-key-env': {
      type: 'string',
      placeholder: '<var>',
      description: 'seal the archive with the key in this environment variable (of the process that runs it)',
    },
    'min-free-percent': {
      type: 'string',
      placeholder: '<percent>',
      env: 'CBR_MIN_FREE_PERCENT',
      description: `refuse to snapshot when less of the data filesystem is free (default ${DEFAULT_MIN_FREE_PERCENT})`,
    },
    'rate-limit': { type: 'string', placeholder: '<rate>', description: 'cap the stored bytes per second, e.g. 50M (default: no limit)' },
    strategy: {
      type: 'string',
      placeholder: STRATEGIES.join('|'),
      description: `full: one archive of every file; incremental: only the files no earlier backup of this node stored (default: the profile's backupStrategy, then $${STRATEGY_ENV}, then full)`,
    },
    incremental: { type: 'boolean', default: false, description: "the same as --strategy incremental: it follows this node's latest COMPLETED backup" },
    parent: {
      type: 'string',
      placeholder: '<id>',
      description: 'the backup this one follows, a COMPLETED backup of the same node (implies --strategy incremental)',
    },
    concurrency: {
      type: 'string',
      placeholder: '<n>',
      description: `files an incremental backup uploads at once, 1 to ${MAX_CONCURRENCY} (default ${DEFAULT_CONCURRENCY})`,
    },
    id: { type: 'string', placeholder: '<id>', description: 'the backup id, also the snapshot tag (default: a new UUID)' },
    cluster: {
      type: 'string',
      placeholder: '<cluster-name>',
      description: 'back up every node of this Cassandra cluster as one cluster backup (with --bus): the agents that announce it, or --hosts',
    },
    hosts: {
      type: 'string',
      placeholder: '<a,b,c>',
      description: 'with --cluster: the host ids of the agents taking part (default: every agent of the cluster)',
    },
    coordinator: {
      type: 'string',
      placeholder: '<host-id>',
      description: 'with --cluster: the agent that coordinates (default --host, else the first of the hosts)',
    },
    ...jsonOption,
    ...storageOptions,
    ...metricsOptions,
    ...busOptions,
    ...followOptions,
  },
  notes: [
    "With --bus the host's agent runs the backup on its node and storage; key files are paths on that host, and its profile, environment and",
    'storage choose the strategy and the parent when the options do not.',
    'With --cluster (and --bus) one agent coordinates a cluster backup: every host takes its snapshot, all held until the last is taken,',
    'then --concurrency hosts upload at once (default 2); each host part is an ordinary backup <id>-<n>, and the cluster record is written last.',
  ],
  async run({ values, positionals, usage }, io) {
    const name = positionals[0];
    if (!name || positionals.length > 1) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `backup-create takes one <name>\nusage: ${usage}`);
    if (values.cluster !== undefined) return clusterBackup(io, name, values);
    if (values.hosts !== undefined || values.coordinator !== undefined)
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--hosts and --coordinator go with --cluster');
    const request: BackupRequest = {
      name,
      description: values.description,
      compression: values.compression,
      encryptKeyFile: values['encrypt-key-file'],
      encryptKeyEnv: values['encrypt-key-env'],
      minFreePercent: values['min-free-percent'] === undefined ? undefined : Number(values['min-free-percent']),
      rateLimit: values['rate-limit'] ? parseRate(values['rate-limit']) : null,
      strategy: values.strategy,
      incremental: values.incremental,
      parent: values.parent,
      concurrency: values.concurrency === undefined ? undefined : Number(values.concurrency),
    };
    // Checked here, before anything runs, whether it runs here or on an agent.
    const checked = checkBackupRequest(request);
    const id = values.id ? checkId(values.id) : randomUUID();

    if (values.bus) {
      const result = await runOverBus(io, values, { id, type: 'backup.create', payload: backupPayload(checked) }, values.json);
      if (values.json) printJson(io, { id, name, state: 'COMPLETED', host: values.host, ...result.result });
      else io.stdout(`${id}\n`);
      return 0;
    }
    const profilePath = resolve(requireOption(values.config, '--config', usage));
    const profile = await loadProfile(profilePath);
    // The backup's first step asks JMX: its JVM starts now, while the request is checked and the runtime loads
    // (the runtime, its machines and the state database load only after this, on the other core).
    createNodetool(profile, io.env).warm?.();
    const { runLocally } = await import('../context.ts');
    const input = await backupInput(request, { id, profilePath, storage: storageConfig(values, io.env) }, io.env, { profile });
    const outcome = await runLocally(io, values.json, id, (runtime) => runtime.startBackup(input), {
      metricsTextfile: values['metrics-textfile'],
    });
    const out = outcome.output;
    if (outcome.state !== 'completed') throw fromErrorInfo(outcome.error ?? { code: 'CBR_ERR_INTERNAL', message: 'backup failed', retryable: false });
    if (values.json) {
      printJson(io, { id, name, state: 'COMPLETED', ...out.result, warnings: out.warnings });
    } else {
      io.stdout(`${id}\n`);
      const how = input.strategy === 'incremental' ? ` (incremental, ${input.parent ? `after ${input.parent}` : 'the first of this node'})` : '';
      io.stderr(
        `backup ${id} COMPLETED${how}: ${out.result?.files} files, ${formatBytes(out.result?.rawBytes ?? 0)} -> ${formatBytes(out.result?.size ?? 0)}\n`,
      );
      for (const w of out.warnings) io.stderr(`warning: ${w}\n`);
    }
    return 0;
  },
});

type Values = Parameters<Parameters<typeof defineCommand>[1]['run']>[0]['values'] & Record<string, unknown>;

/**
 * `backup-create --cluster`: sends `cluster.backup` to the coordinating agent and follows it to its end; prints the
 * id, then each host's phase (and error). A failed cluster backup exits with its code (CBR_ERR_CLUSTER_BACKUP_FAILED).
 */
async function clusterBackup(io: CliIO, name: string, values: Values): Promise<number> {
  const v = values as unknown as Record<string, string | boolean | undefined> & BusValues;
  if (!v.bus) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--cluster runs over the bus: give --bus <url>');
  for (const k of ['parent', 'incremental', 'encrypt-key-file', 'encrypt-key-env', 'rate-limit', 'config'] as const)
    if (v[k]) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--${k} is not taken with --cluster`);
  const cluster = String(v['cluster']);
  if (!cluster || cluster.length > 255) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--cluster must name a cluster (at most 255 characters)');
  const strategy = v['strategy'] === undefined ? 'full' : String(v['strategy']);
  if (!(STRATEGIES as readonly string[]).includes(strategy))
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--strategy must be one of ${STRATEGIES.join(', ')}`);
  const concurrency = v['concurrency'] === undefined ? 2 : Number(v['concurrency']);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1000)
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--concurrency (hosts uploading at once) must be a whole number from 1 to 1000');
  const hosts =
    typeof v['hosts'] === 'string'
      ? [
          ...new Set(
            v['hosts']
              .split(',')
              .map((h) => h.trim())
              .filter(Boolean),
          ),
        ]
      : null;
  if (hosts && hosts.length === 0) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--hosts names no host');
  const { checkClusterBackupId } = await import('../../catalog/clusterRecord.ts');
  const id = typeof v['id'] === 'string' ? checkClusterBackupId(v['id']) : randomUUID();
  const description = typeof v['description'] === 'string' ? v['description'] : '';
  checkBackupRequest({ name, description });
  let coordinator = (v['coordinator'] as string | undefined) ?? v.host ?? hosts?.slice().sort()[0];
  if (!coordinator) {
    // The first (sorted) agent announcing the cluster, as the coordinator would resolve them.
    const { queryStatus } = await import('../../bus/client.ts');
    const replies = await queryStatus({ url: v.bus, prefix: v.prefix ?? '', limit: 1, timeoutMs: 2000 });
    coordinator = replies
      .filter((r) => r.cluster === cluster)
      .map((r) => r.host)
      .sort()[0];
    if (!coordinator)
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `no agent on the bus announces cluster ${JSON.stringify(cluster)} (name them with --hosts)`);
  }
  const payload = {
    name,
    ...(description ? { description } : {}),
    cluster,
    ...(hosts ? { hosts } : {}),
    strategy,
    concurrency,
  };
  const json = v['json'] === true;
  const printHosts = (r: Record<string, unknown> | undefined) => {
    const list = (r?.['hosts'] as { host: string; phase: string; error: { code: string; message: string } | null }[] | undefined) ?? [];
    for (const h of list) io.stderr(`  ${h.host}  ${h.phase}${h.error ? `  ${h.error.code}: ${h.error.message}` : ''}\n`);
    for (const w of (r?.['warnings'] as string[] | undefined) ?? []) io.stderr(`warning: ${w}\n`);
  };
  const result = await runOverBus(io, { ...v, host: coordinator }, { id, type: 'cluster.backup', payload } as never, json, (e) => {
    if (json) printJson(io, { id, state: 'FAILED', coordinator, error: e.error, ...(e.result ?? {}) });
    else {
      io.stderr(`cluster backup ${id} FAILED (coordinator ${coordinator})\n`);
      printHosts(e.result);
    }
  });
  if (json) printJson(io, { id, state: 'COMPLETED', coordinator, ...(result.result ?? {}) });
  else {
    io.stdout(`${id}\n`);
    const n = ((result.result?.['hosts'] as unknown[] | undefined) ?? []).length;
    io.stderr(`cluster backup ${id} COMPLETED: ${n} hosts, coordinator ${coordinator}\n`);
    printHosts(result.result);
  }
  return 0;
}
