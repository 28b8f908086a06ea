import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { COMPRESSIONS, type Compression } from '../../archive/format.ts';
import { parseRate } from '../../archive/throttle.ts';
import { loadProfile } from '../../cassandra/profile.ts';
import { checkId } from '../../catalog/catalog.ts';
import { CbrError, fromErrorInfo } from '../../core/errors.ts';
import { busOptions, followOptions, runOverBus } from '../bus.ts';
import { commonOptions, localRuntime, storageConfig } from '../context.ts';
import { type Command, parse, printJson, requireOption } from '../io.ts';
import { formatBytes } from '../progress.ts';

const usage =
  'cbr backup-create <name> (--config <profile> | --bus URL --host H [--bus-outage-deadline 5m]) [--signing-key-file F] [--description D] [--compression zstd|gzip|none] [--encrypt-key-file F | --encrypt-key-env VAR] [--min-free-percent 10] [--rate-limit 50M] [--id ID] [--storage-root DIR] [--json]';

export const command: Command = {
  summary: 'Snapshot the node and stream one archive of it to storage; prints the backup id.',
  usage,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        ...commonOptions,
        config: { type: 'string' },
        description: { type: 'string', default: '' },
        compression: { type: 'string', default: 'zstd' },
        'encrypt-key-file': { type: 'string' },
        'encrypt-key-env': { type: 'string' },
        'min-free-percent': { type: 'string' },
        id: { type: 'string' },
        'rate-limit': { type: 'string' },
        ...busOptions,
        ...followOptions,
      },
      usage,
    );
    const name = positionals[0];
    if (!name || positionals.length > 1) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `backup-create takes one <name>\nusage: ${usage}`);
    // The record's schema, checked before anything runs (a record it would refuse is never written).
    if (name.length > 128 || /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(name))
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'the backup name must be one line of at most 128 characters');
    if (values.description.length > 1024 || /[\u0000-\u0008\u000b-\u001f\u007f]/.test(values.description))
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'the description must be text of at most 1,024 characters');
    const compression = values.compression as Compression;
    if (!COMPRESSIONS.includes(compression)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--compression must be one of ${COMPRESSIONS.join(', ')}`);
    if (values['encrypt-key-file'] && values['encrypt-key-env'])
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'give one of --encrypt-key-file and --encrypt-key-env');
    const minFree = Number(values['min-free-percent'] ?? io.env['CBR_MIN_FREE_PERCENT'] ?? 10);
    if (!Number.isFinite(minFree) || minFree < 0 || minFree > 100) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--min-free-percent must be 0..100');
    const id = values.id ? checkId(values.id) : randomUUID();
    const rateLimit = values['rate-limit'] ? parseRate(values['rate-limit']) : null;

    if (values.bus) {
      // Over the bus: the host's agent runs the workflow; key files are paths on that host.
      const result = await runOverBus(
        io,
        values,
        {
          id,
          type: 'backup.create',
          payload: {
            name,
            ...(values.description ? { description: values.description } : {}),
            compression,
            ...(values['encrypt-key-file'] ? { encryptKeyFile: resolve(values['encrypt-key-file']) } : {}),
            ...(values['encrypt-key-env'] ? { encryptKeyEnv: values['encrypt-key-env'] } : {}),
            minFreePercent: minFree,
            ...(rateLimit ? { rateLimit } : {}),
          },
        },
        values.json,
      );
      if (values.json) printJson(io, { id, name, state: 'COMPLETED', host: values.host, ...result.result });
      else io.stdout(`${id}\n`);
      return 0;
    }
    const profilePath = resolve(requireOption(values.config, '--config', usage));
    await loadProfile(profilePath);
    const keySource = values['encrypt-key-file']
      ? { file: resolve(values['encrypt-key-file']) }
      : values['encrypt-key-env']
        ? { env: values['encrypt-key-env'] }
        : null;

    const { runtime, state, bar } = localRuntime(io, values.json);
    try {
      const running = await runtime.startBackup({
        workflowId: id,
        backupId: id,
        name,
        description: values.description,
        profilePath,
        storage: storageConfig(values, io.env),
        compression,
        keySource,
        minFreePercent: minFree,
        startedAt: new Date().toISOString(),
        rateLimit,
      });
      if (!running) throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `a workflow with id ${id} already exists`);
      const onSignal = () => runtime.cancel(id, 'interrupted');
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const outcome = await running.done.finally(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        bar?.end();
      });
      const out = outcome.output;
      if (outcome.state !== 'completed') throw fromErrorInfo(outcome.error ?? { code: 'CBR_ERR_INTERNAL', message: 'backup failed', retryable: false });
      if (values.json) {
        printJson(io, { id, name, state: 'COMPLETED', ...out.result, warnings: out.warnings });
      } else {
        io.stdout(`${id}\n`);
        io.stderr(`backup ${id} COMPLETED: ${out.result?.files} files, ${formatBytes(out.result?.rawBytes ?? 0)} -> ${formatBytes(out.result?.size ?? 0)}\n`);
        for (const w of out.warnings) io.stderr(`warning: ${w}\n`);
      }
      return 0;
    } finally {
      state.close();
    }
  },
};
