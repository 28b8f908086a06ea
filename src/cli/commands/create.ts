import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { listKeyspaces } from '../../cassandra/layout.ts';
import { loadProfile } from '../../cassandra/profile.ts';
import { checkId } from '../../catalog/catalog.ts';
import { findClusterRecord, intoOneNodeOf } from '../../catalog/clusterRecord.ts';
import { CbrError, fromErrorInfo } from '../../core/errors.ts';
import { INSTANCE_NAME_RE, SYSTEM_KEYSPACES } from '../../core/ids.ts';
import { createSandbox, removeSandbox, runningPid, profilePath as sandboxProfilePath } from '../../sandbox/sandbox.ts';
import { StateDb } from '../../state/stateDb.ts';
import { openStore } from '../../storage/open.ts';
import { checkRestoreRequest, DEFAULT_SUPERUSER, type RestoreRequest, restoreInput, restorePayload } from '../../workflows/restoreRequest.ts';
import { busOptions, followOptions, runOverBus } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { metricsOptions, runLocally, stateDbPath, storageConfig, storageOptions } from '../context.ts';
import { printJson } from '../io.ts';

export const command = defineCommand('create', {
  summary: 'Restore a backup as a new, independent single-node instance (Trove: create --backup).',
  args: '<instance-name> --backup <id> (--config <profile> | --sandbox | --bus <url> --host <host-id>); a cluster backup: --sandbox --nodes <n> | --profile <p> ...',
  options: {
    backup: {
      type: 'string',
      placeholder: '<id>',
      description: "the backup to restore; a cluster backup's id restores every host's data into this one node",
    },
    config: {
      type: 'string',
      placeholder: '<profile>',
      description: "the target node's profile: an existing node, refused while it holds user keyspaces unless --force",
    },
    sandbox: { type: 'boolean', default: false, description: 'restore into a new sandbox named <instance-name> (see cbr sandbox)' },
    'password-file': {
      type: 'string',
      placeholder: '<file>',
      description: "the superuser's new password, in a file (default: generated into $CBR_HOME/secrets/<instance>-<superuser>.password, mode 0600)",
    },
    'decrypt-key-file': { type: 'string', placeholder: '<file>', description: 'the key the backup was sealed with, in this file' },
    'decrypt-key-env': { type: 'string', placeholder: '<var>', description: 'the key the backup was sealed with, in this environment variable' },
    superuser: {
      type: 'string',
      default: DEFAULT_SUPERUSER,
      placeholder: '<role>',
      description: 'the role given the new password (created as a login superuser if the backup lacks it)',
    },
    'cluster-name': { type: 'string', placeholder: '<name>', description: "the new instance's cluster_name (default: the instance name)" },
    force: { type: 'boolean', default: false, description: "replace the target's data even though it holds user keyspaces" },
    nodes: {
      type: 'string',
      placeholder: '<n>',
      description: 'with a cluster backup id and --sandbox: restore it as a new sandbox cluster of <n> nodes (as many as the backup has hosts)',
    },
    profile: {
      type: 'string',
      multiple: true,
      placeholder: '<profile>',
      description: "with a cluster backup id: the new cluster's nodes, one profile per host of the backup, in its host order",
    },
    profiles: { type: 'string', placeholder: '<a,b,c>', description: 'the same as --profile, comma-separated' },
    ...jsonOption,
    ...storageOptions,
    ...metricsOptions,
    ...busOptions,
    ...followOptions,
  },
  notes: ["With --bus the host's agent restores onto its own node; file paths are paths on that host."],
  async run({ values, positionals, usage }, io) {
    const instance = positionals[0];
    if (!instance || positionals.length > 1 || !INSTANCE_NAME_RE.test(instance)) {
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `create takes one <instance-name> matching ${INSTANCE_NAME_RE}\nusage: ${usage}`);
    }
    if (!values.backup) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--backup is required\nusage: ${usage}`);
    const backupId = checkId(values.backup);
    const request: RestoreRequest = {
      backupId,
      instanceName: instance,
      clusterName: values['cluster-name'],
      passwordFile: values['password-file'],
      superuser: values.superuser,
      decryptKeyFile: values['decrypt-key-file'],
      decryptKeyEnv: values['decrypt-key-env'],
      force: values.force,
    };
    // A cluster backup id (issue #15): restored as a new cluster with --nodes or --profile.
    const cluster = values.bus ? null : await findClusterRecord(openStore(storageConfig(values, io.env)), backupId);
    const profiles = [...(values.profile ?? []), ...(values.profiles ?? '').split(',')].map((p) => p.trim()).filter(Boolean);
    if (cluster && (values.nodes !== undefined || profiles.length > 0)) {
      const { createFromClusterBackup } = await import('../clusterCreate.ts');
      const nodes = values.nodes === undefined ? null : Number(values.nodes);
      if (nodes !== null && (!Number.isInteger(nodes) || nodes < 1 || !values.sandbox)) {
        throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--nodes takes a node count, with --sandbox\nusage: ${usage}`);
      }
      return createFromClusterBackup(io, cluster, { request, storage: storageConfig(values, io.env), sandboxNodes: nodes, profiles, json: values.json });
    }
    if (values.nodes !== undefined || profiles.length > 0) {
      if (values.bus) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `a restore as a new cluster (--nodes, --profile) runs without --bus\nusage: ${usage}`);
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--nodes and --profile restore a cluster backup; ${backupId} is not one\nusage: ${usage}`);
    }
    if (values.bus) {
      // Over the bus the agent checks the rest of the request (the bus schema, then the same restoreInput).
      const result = await runOverBus(io, values, { type: 'restore.create', payload: restorePayload(request) }, values.json);
      if (values.json) printJson(io, { instance, backupId, state: 'COMPLETED', host: values.host, workflowId: result.commandId, ...result.result });
      else
        io.stdout(
          `instance ${instance} restored on ${values.host} from backup ${backupId}; password file ${String(result.result?.['passwordFile'])} on that host\n`,
        );
      return 0;
    }
    if (Boolean(values.config) === values.sandbox)
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `give exactly one of --config and --sandbox\nusage: ${usage}`);
    // Refused before a sandbox is made or a password written.
    const { clusterName } = checkRestoreRequest(request);
    const storage = storageConfig(values, io.env);
    // A cluster backup's id: its first part is restored as usual, every other part's tables imported into it.
    const intoOne = cluster ? intoOneNodeOf(cluster) : null;
    if (intoOne) request.backupId = intoOne.backupId;

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

    const workflowId = randomUUID();
    const { input, passwordGenerated: generated } = await restoreInput(request, { id: workflowId, profilePath, storage }, io.env);
    if (intoOne) input.clusterBackupId = intoOne.clusterBackupId;
    const { passwordFile } = input;
    const outcome = await runLocally(io, values.json, workflowId, (runtime) => runtime.startRestore(input), {
      metricsTextfile: values['metrics-textfile'],
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
      ...(intoOne ? { clusterBackupId: intoOne.clusterBackupId, partsImported: restored.partsImported, replicationChanges: restored.replicationChanges } : {}),
      warnings: restored.warnings,
    };
    if (values.json) printJson(io, out);
    else {
      io.stdout(`instance ${instance} restored from backup ${backupId}: cluster ${clusterName}, ${out.cassandraStarts} Cassandra starts\n`);
      io.stdout(`profile   ${profilePath}\npassword  ${passwordFile}${generated ? ' (generated, mode 0600)' : ''}\n`);
      io.stdout(`superusers ${out.superusers.join(', ') || '(none)'} (every superuser role of the restored data)\n`);
      for (const c of out.settingChanges) io.stdout(`changed   ${c.key}: ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)} (the restored data needs it)\n`);
      if (intoOne) {
        io.stdout(`cluster backup ${intoOne.clusterBackupId}: part ${intoOne.backupId} restored, ${restored.partsImported.join(', ')} imported into it\n`);
        for (const c of restored.replicationChanges)
          io.stdout(`replication ${c.keyspace}: ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)} (one node holds every replica)\n`);
      }
      for (const w of out.warnings) io.stderr(`warning: ${w}\n`);
    }
    return 0;
  },
});

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
