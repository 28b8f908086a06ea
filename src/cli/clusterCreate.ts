import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { listKeyspaces } from '../cassandra/layout.ts';
import { loadProfile } from '../cassandra/profile.ts';
import type { ClusterRecord } from '../catalog/clusterRecord.ts';
import { CbrError } from '../core/errors.ts';
import { SYSTEM_KEYSPACES } from '../core/ids.ts';
import { ownerToken } from '../runtime/owner.ts';
import { buildRestoreDeps } from '../runtime/wiring.ts';
import { clusterProfiles, createCluster, isCluster, loadCluster, removeCluster } from '../sandbox/cluster.ts';
import { instanceDir, profilePath, runningPid } from '../sandbox/sandbox.ts';
import { StateDb } from '../state/stateDb.ts';
import { removeJournal } from '../steps/clusterRestore/journal.ts';
import { type ClusterRestoreResult, type ClusterTarget, restoreCluster } from '../steps/clusterRestore/restoreCluster.ts';
import type { StorageConfig } from '../storage/port.ts';
import { checkRestoreRequest, generatePassword, type RestoreRequest, restoreInput } from '../workflows/restoreRequest.ts';
import { clearEarlierClusterRestores } from './clusterRecovery.ts';
import { cliLogger, stateDbPath } from './context.ts';
import type { CliIO } from './io.ts';
import { printJson } from './io.ts';
import { onInterrupt } from './signals.ts';

/**
 * `cbr create <name> --backup <cluster backup id> --sandbox --nodes N | --profile a --profile b ...`: a cluster
 * backup restored as a new cluster of the same size (src/steps/clusterRestore/restoreCluster.ts). The composition
 * root of that restore: the target nodes (a new sandbox cluster, or one profile per node), the one password file,
 * each node's restore input and dependencies.
 */
export interface ClusterCreateOptions {
  request: RestoreRequest;
  storage: StorageConfig;
  /** --sandbox --nodes N: the node count asked for. */
  sandboxNodes: number | null;
  /** --profile / --profiles: one profile per node, in the record's host order. */
  profiles: string[];
  json: boolean;
}

export async function createFromClusterBackup(io: CliIO, record: ClusterRecord, o: ClusterCreateOptions): Promise<number> {
  const checked = checkRestoreRequest(o.request);
  const instance = checked.instanceName;
  const count = record.hosts.length;
  if ((o.sandboxNodes === null) === (o.profiles.length === 0)) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'a cluster backup restores as a new cluster with --sandbox --nodes <n> or one --profile per node');
  }
  const asked = o.sandboxNodes ?? o.profiles.length;
  if (asked !== count) {
    throw new CbrError(
      'CBR_ERR_INVALID_ARGUMENT',
      `cluster backup ${record.id} has ${count} hosts (${record.hosts.map((h) => h.host).join(', ')}): restore it as a new cluster of ${count} nodes (got ${asked})`,
    );
  }

  // A cluster restore killed earlier on these nodes (its journal, its process gone) is rolled back first.
  const log = cliLogger(io).child({ clusterBackupId: record.id, instance });
  const wanted =
    o.sandboxNodes !== null ? Array.from({ length: count }, (_, i) => profilePath(`${instance}-${i + 1}`, io.env)) : o.profiles.map((p) => resolve(p));
  await clearEarlierClusterRestores(io.env, log, wanted);
  refuseActiveWorkflows(io.env, wanted);

  let profilePaths: string[];
  let created = false;
  if (o.sandboxNodes !== null) {
    if (isCluster(instance, io.env)) await takeOverCluster(instance, count, io.env);
    else if (existsSync(instanceDir(instance, io.env))) {
      throw new CbrError('CBR_ERR_SANDBOX_EXISTS', `a sandbox named ${instance} exists and is not a cluster; remove it with cbr sandbox rm ${instance}`);
    } else {
      await createCluster(instance, count, { env: io.env, clusterName: checked.clusterName });
      created = true;
    }
    profilePaths = (await loadCluster(instance, io.env)).nodes.map((n) => profilePath(n.name, io.env));
  } else {
    profilePaths = o.profiles.map((p) => resolve(p));
  }

  const runId = randomUUID();
  try {
    const passwordFile = checked.passwordFile ?? (await generatePassword(`${instance}-${checked.superuser}-${randomUUID()}`, io.env));
    const targets: ClusterTarget[] = [];
    for (const [i, host] of record.hosts.entries()) {
      const target = profilePaths[i]!;
      await loadProfile(target);
      const workflowId = randomUUID();
      const { input } = await restoreInput(
        { ...o.request, backupId: host.backupId, clusterName: checked.clusterName, passwordFile },
        { id: workflowId, profilePath: target, storage: o.storage },
        io.env,
      );
      const nodeLog = log.child({ workflowId, part: host.backupId });
      targets.push({ host, input, deps: await buildRestoreDeps(input, { env: io.env, log: nodeLog, onProgress: () => {} }) });
    }
    const ac = new AbortController();
    const dispose = onInterrupt(() => ac.abort(new CbrError('CBR_ERR_ABORTED', 'interrupted')));
    let result: ClusterRestoreResult;
    try {
      result = await restoreCluster(record, targets, {
        env: io.env,
        log,
        signal: ac.signal,
        journal: { runId, owner: ownerToken() },
        onPhase: (phase) => {
          if (!o.json) io.stderr(`${phase}...\n`);
        },
      });
    } finally {
      dispose();
    }
    const out = { instance, state: 'COMPLETED', passwordGenerated: checked.passwordFile === null, ...result };
    if (o.json) printJson(io, out);
    else {
      io.stdout(
        `cluster ${instance} restored from cluster backup ${record.id} (source cluster ${record.clusterName}): ${count} nodes, cluster ${result.clusterName}\n`,
      );
      for (const n of result.nodes) io.stdout(`  ${n.node}  <- ${n.backupId} (${n.sourceHost}, ${n.sourceAddress}, ${n.tokens} tokens, host id ${n.hostId})\n`);
      io.stdout(`password  ${passwordFile}${out.passwordGenerated ? ' (generated, mode 0600)' : ''} (superuser ${result.superuser})\n`);
      io.stdout(`superusers ${result.superusers.join(', ') || '(none)'} (every superuser role of the restored data)\n`);
      io.stdout(
        `phases    ${Object.entries(result.seconds)
          .map(([p, t]) => `${p} ${t} s`)
          .join(', ')}\n`,
      );
      for (const w of result.warnings) io.stderr(`warning: ${w}\n`);
    }
    return 0;
  } catch (err) {
    // A cluster made for this restore holds nothing else: a failed restore leaves no stopped nodes behind.
    if (created) {
      const removed = await removeCluster(instance, io.env).then(
        () => true,
        () => false,
      );
      // Its nodes are gone: a journal kept for an incomplete rollback has nothing left to recover (and would name
      // profiles that no longer exist).
      if (removed) await removeJournal(io.env, runId).catch(() => {});
    }
    throw err;
  }
}

/** A backup or restore workflow on a target node (running, or left by a dead process) keeps the cluster restore off it. */
function refuseActiveWorkflows(env: NodeJS.ProcessEnv, profiles: string[]): void {
  const state = new StateDb(stateDbPath(env));
  try {
    for (const w of state.list({ status: 'active' })) {
      const p = (w.input as { profilePath?: string }).profilePath;
      if (p === undefined || !profiles.includes(p)) continue;
      throw new CbrError(
        'CBR_ERR_WORKFLOW_CONFLICT',
        `${w.kind} ${w.id} is still active on ${p} (${w.state}); a cluster restore waits until it ends (cancel it, or resume it with cbr resume if its process is gone)`,
      );
    }
  } finally {
    state.close();
  }
}

/** An existing sandbox cluster is taken only as the stopped, empty leftover of an earlier run (or made empty by `sandbox start`, then stopped). */
async function takeOverCluster(name: string, count: number, env: NodeJS.ProcessEnv): Promise<void> {
  const taken = (why: string) =>
    new CbrError('CBR_ERR_SANDBOX_EXISTS', `sandbox cluster ${name} already exists and ${why}; remove it with cbr sandbox rm ${name}`);
  const nodes = (await loadCluster(name, env)).nodes.length;
  if (nodes !== count) throw taken(`has ${nodes} nodes`);
  for (const p of await clusterProfiles(name, env)) {
    if (p.service.kind !== 'sandbox' || runningPid(p.service.instanceDir) !== null) throw taken(`node ${p.name} is running`);
    const userData = (await listKeyspaces(p.dataDirs)).filter((k) => !SYSTEM_KEYSPACES.has(k));
    if (userData.length) throw taken(`node ${p.name} holds keyspaces ${userData.slice(0, 5).join(', ')}`);
  }
}
