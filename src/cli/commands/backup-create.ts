import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { COMPRESSIONS } from '../../archive/format.ts';
import { parseRate } from '../../archive/throttle.ts';
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
import { busOptions, followOptions, runOverBus } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { metricsOptions, runLocally, storageConfig, storageOptions } from '../context.ts';
import { printJson, requireOption } from '../io.ts';
import { formatBytes } from '../progress.ts';

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
    ...jsonOption,
    ...storageOptions,
    ...metricsOptions,
    ...busOptions,
    ...followOptions,
  },
  notes: [
    "With --bus the host's agent runs the backup on its node and storage; key files are paths on that host, and its profile, environment and",
    'storage choose the strategy and the parent when the options do not.',
  ],
  async run({ values, positionals, usage }, io) {
    const name = positionals[0];
    if (!name || positionals.length > 1) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `backup-create takes one <name>\nusage: ${usage}`);
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
