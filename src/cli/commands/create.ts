import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { listKeyspaces } from '../../cassandra/layout.ts';
import { loadProfile } from '../../cassandra/profile.ts';
import { checkClusterName } from '../../cassandra/yaml.ts';
import { checkId } from '../../catalog/catalog.ts';
import { writeFileAtomic } from '../../core/atomicWrite.ts';
import { CbrError, fromErrorInfo } from '../../core/errors.ts';
import { cbrHome } from '../../core/paths.ts';
import { createSandbox, removeSandbox, runningPid, profilePath as sandboxProfilePath } from '../../sandbox/sandbox.ts';
import { StateDb } from '../../state/stateDb.ts';
import { SYSTEM_KEYSPACES } from '../../steps/restore/checkRestore.ts';
import { busOptions, followOptions, runOverBus } from '../bus.ts';
import { commonOptions, localRuntime, stateDbPath, storageConfig } from '../context.ts';
import { type Command, parse, printJson } from '../io.ts';

const usage =
  'cbr create <instance-name> --backup <id> (--config <target profile> | --sandbox | --bus URL --host H [--bus-outage-deadline 5m]) [--password-file F] [--decrypt-key-file F | --decrypt-key-env VAR] [--superuser cassandra] [--cluster-name N] [--force] [--storage-root DIR] [--json]';

const NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,47}$/;

export const command: Command = {
  summary: 'Restore a backup as a new, independent single-node instance (Trove: create --backup).',
  usage,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        ...commonOptions,
        backup: { type: 'string' },
        config: { type: 'string' },
        sandbox: { type: 'boolean', default: false },
        'password-file': { type: 'string' },
        'decrypt-key-file': { type: 'string' },
        'decrypt-key-env': { type: 'string' },
        superuser: { type: 'string', default: 'cassandra' },
        'cluster-name': { type: 'string' },
        force: { type: 'boolean', default: false },
        ...busOptions,
        ...followOptions,
      },
      usage,
    );
    const instance = positionals[0];
    if (!instance || positionals.length > 1 || !NAME_RE.test(instance)) {
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `create takes one <instance-name> matching ${NAME_RE}\nusage: ${usage}`);
    }
    if (!values.backup) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--backup is required\nusage: ${usage}`);
    const backupId = checkId(values.backup);
    if (values.bus) {
      // Over the bus: the target is the host's agent's node; file paths are paths on that host.
      const result = await runOverBus(
        io,
        values,
        {
          type: 'restore.create',
          payload: {
            backupId,
            instanceName: instance,
            ...(values['cluster-name'] ? { clusterName: values['cluster-name'] } : {}),
            ...(values['password-file'] ? { passwordFile: resolve(values['password-file']) } : {}),
            superuser: values.superuser,
            ...(values['decrypt-key-file'] ? { decryptKeyFile: resolve(values['decrypt-key-file']) } : {}),
            ...(values['decrypt-key-env'] ? { decryptKeyEnv: values['decrypt-key-env'] } : {}),
            force: values.force,
          },
        },
        values.json,
      );
      if (values.json) printJson(io, { instance, backupId, state: 'COMPLETED', host: values.host, workflowId: result.commandId, ...result.result });
      else
        io.stdout(
          `instance ${instance} restored on ${values.host} from backup ${backupId}; password file ${String(result.result?.['passwordFile'])} on that host\n`,
        );
      return 0;
    }
    if (Boolean(values.config) === values.sandbox)
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `give exactly one of --config and --sandbox\nusage: ${usage}`);
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,47}$/.test(values.superuser)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--superuser must be a plain role name');
    if (values['decrypt-key-file'] && values['decrypt-key-env'])
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'give one of --decrypt-key-file and --decrypt-key-env');
    const clusterName = values['cluster-name'] ?? instance;
    checkClusterName(clusterName);

    let profilePath: string;
    let createdSandbox = false;
    if (values.sandbox) {
      profilePath = sandboxProfilePath(instance, io.env);
      if (existsSync(profilePath)) {
        // A rerun after a failed or interrupted `create --sandbox` takes over the instance it left: stopped, with no
        // user data and no workflow still on it. Anything else is somebody's node.
        await takeOverSandbox(instance, profilePath, io.env);
      } else {
        await createSandbox(instance, { env: io.env });
        createdSandbox = true;
      }
    } else {
      profilePath = resolve(values.config!);
      await loadProfile(profilePath);
    }

    // The new password lives in a file from the start; the workflow and its persisted state only know the path.
    let passwordFile: string;
    let generated = false;
    if (values['password-file']) {
      passwordFile = resolve(values['password-file']);
    } else {
      const dir = join(cbrHome(io.env), 'secrets');
      await mkdir(dir, { recursive: true, mode: 0o700 });
      passwordFile = join(dir, `${instance}-${values.superuser}.password`);
      await writeFileAtomic(passwordFile, `${randomBytes(18).toString('base64url')}\n`, 0o600);
      generated = true;
    }

    const workflowId = randomUUID();
    const { runtime, state, bar } = localRuntime(io, values.json);
    try {
      const running = await runtime.startRestore({
        workflowId,
        backupId,
        instanceName: instance,
        clusterName,
        profilePath,
        storage: storageConfig(values, io.env),
        passwordFile,
        superuser: values.superuser,
        keySource: values['decrypt-key-file']
          ? { file: resolve(values['decrypt-key-file']) }
          : values['decrypt-key-env']
            ? { env: values['decrypt-key-env'] }
            : null,
        force: values.force,
        startedAt: new Date().toISOString(),
      });
      if (!running) throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `workflow ${workflowId} exists`);
      // Ctrl-C or SIGTERM cancels: the machine rolls back and puts the target back as it was.
      const onSignal = () => runtime.cancel(workflowId, 'interrupted');
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const outcome = await running.done.finally(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        bar?.end();
      });
      const restored = outcome.output;
      if (outcome.state !== 'completed' && createdSandbox) {
        // The instance was made for this restore and holds nothing else: a failed restore leaves no stopped node behind.
        await removeSandbox(instance, io.env).catch(() => {});
      }
      if (outcome.state !== 'completed') {
        throw fromErrorInfo(outcome.error ?? { code: 'CBR_ERR_INTERNAL', message: 'restore failed', retryable: false });
      }
      const out = {
        instance,
        workflowId,
        backupId,
        state: 'COMPLETED',
        clusterName,
        superuser: values.superuser,
        passwordFile,
        passwordGenerated: generated,
        profilePath,
        cassandraStarts: restored.cassandraStarts,
        keyspaces: restored.keyspaces,
        superusers: restored.superusers,
        settingChanges: restored.settingChanges,
        warnings: restored.warnings,
      };
      if (values.json) printJson(io, out);
      else {
        io.stdout(`instance ${instance} restored from backup ${backupId}: cluster ${clusterName}, ${out.cassandraStarts} Cassandra starts\n`);
        io.stdout(`profile   ${profilePath}\npassword  ${passwordFile}${generated ? ' (generated, mode 0600)' : ''}\n`);
        io.stdout(`superusers ${out.superusers.join(', ') || '(none)'} (every superuser role of the restored data)\n`);
        for (const c of out.settingChanges)
          io.stdout(`changed   ${c.key}: ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)} (the restored data needs it)\n`);
        for (const w of out.warnings) io.stderr(`warning: ${w}\n`);
      }
      return 0;
    } finally {
      state.close();
    }
  },
};

/** Refuses an existing sandbox unless it is the stopped, empty leftover of an earlier `create --sandbox`. */
async function takeOverSandbox(instance: string, profilePath: string, env: NodeJS.ProcessEnv): Promise<void> {
  const profile = await loadProfile(profilePath);
  const taken = (why: string) =>
    new CbrError('CBR_ERR_SANDBOX_EXISTS', `sandbox ${instance} already exists and ${why}; remove it with cbr sandbox rm ${instance}`);
  if (profile.service.kind !== 'sandbox' || runningPid(profile.service.instanceDir) !== null) throw taken('is running');
  const userData = (await listKeyspaces(profile.dataDirs)).filter((k) => !SYSTEM_KEYSPACES.has(k));
  if (userData.length) throw taken(`holds keyspaces ${userData.slice(0, 5).join(', ')}`);
  if (existsSync(stateDbPath(env))) {
    const db = new StateDb(stateDbPath(env));
    try {
      const active = db.list({ status: 'active' }).find((w) => (w.input as { profilePath?: string }).profilePath === profilePath);
      if (active) throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `${active.kind} ${active.id} is still unfinished on sandbox ${instance}: run cbr resume`);
    } finally {
      db.close();
    }
  }
}
