import { createActor, fromPromise, toPromise } from 'xstate';
import type { SettingChange } from '../../cassandra/configFiles.ts';
import type { ClusterRecord, ClusterRecordHost } from '../../catalog/clusterRecord.ts';
import { CbrError, type ErrorInfo, toErrorInfo } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import { CLUSTER_RESTORE_PHASES, type ClusterRestorePhase, clusterRestoreMachine } from '../../machines/clusterRestore.machine.ts';
import type { RestoreInput, RestorePlan } from '../../machines/restore.machine.ts';
import { checkRestore } from '../restore/checkRestore.ts';
import { chownData } from '../restore/chownData.ts';
import { discardStaging } from '../restore/discardStaging.ts';
import { finalizeRestore } from '../restore/finalizeRestore.ts';
import { forgetSourcePeers } from '../restore/forgetSourcePeers.ts';
import { resetIdentity } from '../restore/resetIdentity.ts';
import { restoreConfig } from '../restore/restoreConfig.ts';
import { restoreDataDirs } from '../restore/restoreDataDirs.ts';
import type { RestoreDeps } from '../restore/restoreDeps.ts';
import { startMaintenance } from '../restore/startMaintenance.ts';
import { startNode } from '../restore/startNode.ts';
import { stopNode } from '../restore/stopNode.ts';
import { swapDataDirs } from '../restore/swapDataDirs.ts';
import { unpackBackup } from '../restore/unpackBackup.ts';
import { verifyRestore } from '../restore/verifyRestore.ts';
import { writeClusterConfig } from '../restore/writeClusterConfig.ts';
import { writeFinalConfig } from '../restore/writeFinalConfig.ts';
import { checkTargetPlaces, readTargetPlace } from './checkTargets.ts';
import {
  type ClusterRestoreJournal,
  type JournalPhase,
  nodeInput,
  nodeRollback,
  type RecoveryStep,
  recoveryPlan,
  removeJournal,
  writeJournal,
} from './journal.ts';
import { verifyRing } from './verifyRing.ts';

/**
 * Restore a cluster backup as a new cluster of the same size (issue #15 item 3): target node i takes the part of
 * the record's host i (its data, host id and tokens), every node the new cluster_name and ONE new superuser
 * password, the seeds are new nodes only. Each node goes through the ordinary restore's steps; the pure machine
 * src/machines/clusterRestore.machine.ts orders them phase by phase with a barrier between phases, because the
 * nodes depend on each other, and this runs each phase on every node at once:
 *
 *   check -> unpack -> clear staged peers -> stop, swap, chown -> maintenance start + reset identity (each node
 *   alone on loopback) -> final yaml + source tokens + new seeds -> start (first node, then the others)
 *   -> verify each node -> verify the ring -> finalize
 *
 * Finalize (which drops the replaced data) comes only after every node and the ring are proven good, so a node
 * failing at any earlier point rolls back every node with the ordinary restore's rollback steps, including nodes
 * that had already started in the new cluster. A coordinator killed midway (SIGKILL, crash) is answered by its journal
 * (journal.ts, written before each phase): `cbr resume`, or the next `cbr create` onto the same nodes, rolls every
 * node back with the same steps (recoverClusterRestore), or finishes a run that had reached finalize.
 */

/** One target node, prepared by the composition root: its restore input and dependencies, and the host it takes. */
export interface ClusterTarget {
  host: ClusterRecordHost;
  input: RestoreInput;
  deps: RestoreDeps;
}

export interface ClusterRestoreNode {
  node: string;
  profilePath: string;
  workflowId: string;
  /** The part it took and the source host it came from. */
  backupId: string;
  sourceHost: string;
  sourceAddress: string;
  hostId: string;
  tokens: number;
  settingChanges: SettingChange[];
}

export interface ClusterRestoreResult {
  clusterBackupId: string;
  clusterName: string;
  sourceClusterName: string;
  superuser: string;
  passwordFile: string;
  nodes: ClusterRestoreNode[];
  /** Every superuser role of the restored data. */
  superusers: string[];
  warnings: string[];
  /** Seconds each phase took (both start phases summed), for the operator's sense of where the time went. */
  seconds: Partial<Record<Phase | 'finalize', number>>;
}

export interface ClusterRestoreOptions {
  env: NodeJS.ProcessEnv;
  log: Logger;
  signal?: AbortSignal | undefined;
  /** Each phase as it begins (the CLI prints them). */
  onPhase?: (phase: Phase | 'finalize') => void;
  /** The journal's run id and coordinator (runtime/owner.ts's token); without it no journal is written (unit tests). */
  journal?: { runId: string; owner: string } | undefined;
}

export type Phase = ClusterRestorePhase;

interface NodeRun extends ClusterTarget {
  index: number;
  plan: RestorePlan | null;
  /** The node was stopped (or being stopped) by this restore: a rollback puts its directories and yaml back. */
  touched: boolean;
  superusers: string[];
  settingChanges: SettingChange[];
}

interface NodeFailure {
  node: NodeRun;
  error: ErrorInfo;
}

/**
 * Runs the restore of `record` onto `targets` (target i takes the record's host i; their inputs share one password
 * file and the new cluster_name). Throws CBR_ERR_CLUSTER_RESTORE_FAILED, after rolling every node back, when any
 * node fails.
 */
export async function restoreCluster(record: ClusterRecord, targets: ClusterTarget[], opts: ClusterRestoreOptions): Promise<ClusterRestoreResult> {
  const { env, log } = opts;
  if (targets.length !== record.hosts.length || targets.some((t, i) => t.host !== record.hosts[i])) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `cluster backup ${record.id} has ${record.hosts.length} hosts; give one target node for each, in order`);
  }
  const seen = new Map<string, string>();
  for (const { deps } of targets) {
    for (const dir of [deps.profile.cassandraYaml, ...deps.profile.dataDirs]) {
      const other = seen.get(dir);
      if (other !== undefined)
        throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `target nodes ${other} and ${deps.profile.name} share ${dir}: give one profile per node`);
      seen.set(dir, deps.profile.name);
    }
  }
  const first = targets[0]!.input;
  if (targets.some((t) => t.input.clusterName !== first.clusterName || t.input.passwordFile !== first.passwordFile || t.input.superuser !== first.superuser)) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'every node of a cluster restore takes the same cluster name, superuser and password file');
  }
  const nodes: NodeRun[] = targets.map((t, index) => ({ ...t, index, plan: null, touched: false, superusers: [], settingChanges: [] }));
  const places = await Promise.all(nodes.map((n) => readTargetPlace(n.deps.profile)));
  checkTargetPlaces(places, record.hosts);
  const seeds = `${places[0]!.address}:${places[0]!.storagePort}`;
  const startedAt = new Date().toISOString();
  /** The journal before each phase (phases run one after another: no two writes at once). */
  const journal = async (phase: JournalPhase) => {
    if (!opts.journal) return;
    await writeJournal(env, {
      version: 1,
      runId: opts.journal.runId,
      clusterBackupId: record.id,
      owner: opts.journal.owner,
      pid: process.pid,
      startedAt,
      phase,
      nodes: nodes.map((n) => ({
        name: n.deps.profile.name,
        profilePath: n.input.profilePath,
        workflowId: n.input.workflowId,
        input: { ...n.input },
        touched: n.touched,
        wasRunning: n.plan?.wasRunning ?? false,
      })),
    });
  };
  await journal('check');
  const drill = drillFailure(env);
  const s = (n: NodeRun) => ({ ctx: n.input, plan: n.plan! });
  const password = async () => ({ username: first.superuser, password: await nodes[0]!.deps.readPassword() });
  // What each phase does on one node, and on which nodes it runs.
  const work: Record<Phase, { which: NodeRun[]; run: (n: NodeRun, signal: AbortSignal) => Promise<unknown> }> = {
    check: { which: nodes, run: async (n, signal) => (n.plan = await checkRestore(n.deps, { ctx: n.input }, signal)) },
    unpack: { which: nodes, run: (n, signal) => unpackBackup(n.deps, s(n), signal) },
    clearPeers: { which: nodes, run: (n, signal) => forgetSourcePeers(n.deps, s(n), signal) },
    swap: {
      which: nodes,
      // Marked touched in the journal before this phase begins (runPhase).
      run: async (n, signal) => {
        await stopNode(n.deps, s(n), signal);
        await swapDataDirs(n.deps, s(n), signal);
        await chownData(n.deps, s(n), signal);
      },
    },
    // Each node alone, on loopback ports of its own, under the source's cluster_name: the new name and the new
    // password's hash go into its own system.local and its own copy of system_auth.roles (a lone node owns the
    // whole ring, so the write lands locally whatever system_auth's replication). Every node writes the same
    // role, so whichever replica answers a login after the ring forms holds the new password.
    maintenance: {
      which: nodes,
      run: async (n, signal) => {
        await startMaintenance(n.deps, s(n), signal);
        n.superusers = (await resetIdentity(n.deps, s(n), signal)).superusers;
      },
    },
    config: {
      which: nodes,
      run: async (n, signal) => {
        n.settingChanges = (await writeFinalConfig(n.deps, s(n), signal)).changes;
        await writeClusterConfig(n.deps, { ...s(n), node: { tokens: n.host.tokens, seeds } }, signal);
      },
    },
    // The seed first (saved tokens: every node starts without bootstrap or streaming), then the others at once.
    startSeed: { which: nodes.slice(0, 1), run: (n, signal) => startNode(n.deps, s(n), signal) },
    startOthers: { which: nodes.slice(1), run: (n, signal) => startNode(n.deps, s(n), signal) },
    verify: { which: nodes, run: (n, signal) => verifyRestore(n.deps, s(n), signal) },
    ring: {
      which: nodes.slice(0, 1),
      run: async (_n, signal) =>
        verifyRing(
          nodes.map((n) => ({ deps: n.deps, hostId: n.host.hostId, tokens: n.host.tokens })),
          await password(),
          signal,
        ),
    },
  };

  const seconds: Partial<Record<Phase | 'finalize', number>> = {};
  let failures: NodeFailure[] = [];
  /** One phase on its nodes at once; the first node failing aborts the others, and the phase fails naming each. */
  const runPhase = async (name: Phase, signal: AbortSignal) => {
    opts.onPhase?.(name);
    const began = performance.now();
    const { which, run } = work[name];
    if (name === 'swap') for (const n of which) n.touched = true;
    await journal(name);
    log.info('cluster restore phase', { phase: name, nodes: which.map((n) => n.deps.profile.name) });
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    const failed: NodeFailure[] = [];
    await Promise.all(
      which.map(async (n) => {
        try {
          ac.signal.throwIfAborted();
          if (drill && drill.node === n.index + 1 && drill.phase === name) {
            throw new CbrError('CBR_ERR_INTERNAL', `failure injected by CBR_DRILL_CLUSTER_RESTORE_FAIL at ${name}`);
          }
          await run(n, ac.signal);
        } catch (err) {
          failed.push({ node: n, error: toErrorInfo(err) });
          ac.abort(err);
        }
      }),
    );
    signal.removeEventListener('abort', onAbort);
    seconds[name] = Math.round((performance.now() - began) / 100) / 10;
    if (failed.length) {
      failures = failed;
      throw new CbrError('CBR_ERR_CLUSTER_RESTORE_FAILED', describeFailures(failed));
    }
  };
  const finalize = async () => {
    // Proven good: the replaced data goes on every node. A finalize that fails leaves leftovers, not a broken node.
    opts.onPhase?.('finalize');
    await journal('finalizing');
    const began = performance.now();
    const warnings: string[] = [];
    await Promise.all(
      nodes.map(async (n) => {
        try {
          await finalizeRestore(n.deps, s(n), new AbortController().signal);
        } catch (err) {
          warnings.push(`${n.deps.profile.name}: finalize: ${toErrorInfo(err).message}`);
        }
      }),
    );
    seconds.finalize = Math.round((performance.now() - began) / 100) / 10;
    if (opts.journal) await removeJournal(env, opts.journal.runId);
    return { warnings };
  };

  const machine = clusterRestoreMachine.provide({
    actors: {
      runPhase: fromPromise<void, { phase: Phase }>(({ input, signal }) => runPhase(input.phase, signal)),
      rollBackNodes: fromPromise(async () => {
        // Best effort: a journal that cannot be written must not keep the nodes from being rolled back.
        await journal('rollingBack').catch((err) => log.warn('cluster restore journal not written', { error: toErrorInfo(err).message }));
        const warnings = await rollBack(
          nodes.map((n) => ({ name: n.deps.profile.name, deps: n.deps, input: n.input, touched: n.touched, wasRunning: n.plan?.wasRunning ?? false })),
          'rollBack',
          log,
        );
        // A rollback with a warning keeps the journal: `cbr resume` tries again (every step is idempotent).
        if (opts.journal && !warnings.length) await removeJournal(env, opts.journal.runId);
        return { warnings };
      }),
      finalizeNodes: fromPromise(finalize),
    },
  });
  const actor = createActor(machine, { input: { clusterBackupId: record.id, nodes: nodes.length } });
  const done = toPromise(actor);
  const onCancel = () => actor.send({ type: 'CANCEL', reason: 'interrupted' });
  if (opts.signal?.aborted) onCancel();
  opts.signal?.addEventListener('abort', onCancel, { once: true });
  actor.start();
  if (opts.signal?.aborted) onCancel();
  const out = await done.finally(() => opts.signal?.removeEventListener('abort', onCancel));
  if (out.error) throw failedError(record, out.failedPhase, out.error, failures, out.warnings);
  return {
    clusterBackupId: record.id,
    clusterName: first.clusterName,
    sourceClusterName: record.clusterName,
    superuser: first.superuser,
    passwordFile: first.passwordFile,
    nodes: nodes.map((n) => ({
      node: n.deps.profile.name,
      profilePath: n.input.profilePath,
      workflowId: n.input.workflowId,
      backupId: n.host.backupId,
      sourceHost: n.host.host,
      sourceAddress: n.host.address,
      hostId: n.host.hostId,
      tokens: n.host.tokens.length,
      settingChanges: n.settingChanges,
    })),
    superusers: [...new Set(nodes.flatMap((n) => n.superusers))].sort(),
    warnings: out.warnings,
    seconds,
  };
}

interface RecoveryNode {
  name: string;
  deps: RestoreDeps;
  input: RestoreInput;
  touched: boolean;
  wasRunning: boolean;
}

/**
 * Every node's own restore rollback, all nodes at once: a node this restore stopped is stopped again, its yaml and
 * old directories go back, its staging goes, and it starts again if it was running before; an untouched node only
 * loses its staging (journal.ts's nodeRollback). From a journal that reached finalize, each node's finalize instead.
 * Each step's failure is a warning and the rest goes on.
 */
async function rollBack(nodes: RecoveryNode[], action: 'rollBack' | 'finalize', log: Logger): Promise<string[]> {
  const warnings: string[] = [];
  const signal = new AbortController().signal;
  await Promise.all(
    nodes.map(async (n) => {
      const input = { ctx: n.input, plan: { ...emptyPlan(), wasRunning: n.wasRunning } };
      const run: Record<RecoveryStep, () => Promise<unknown>> = {
        stopNode: () => stopNode(n.deps, input, signal),
        restoreConfig: () => restoreConfig(n.deps, input, signal),
        restoreDataDirs: () => restoreDataDirs(n.deps, input, signal),
        discardStaging: () => discardStaging(n.deps, input, signal),
        startNode: () => startNode(n.deps, input, signal),
        finalizeRestore: () => finalizeRestore(n.deps, input, signal),
      };
      const steps: RecoveryStep[] = action === 'finalize' ? ['finalizeRestore'] : nodeRollback(n);
      for (const name of steps) {
        try {
          await run[name]();
        } catch (err) {
          const w = `${n.name}: ${action === 'finalize' ? 'finalize' : 'rollback'} ${name}: ${toErrorInfo(err).message.split('\n')[0]}`;
          warnings.push(w);
          log.warn('cluster restore rollback step failed', { node: n.name, step: name });
        }
      }
    }),
  );
  return warnings;
}

/**
 * The answer to a coordinator that died (its journal left behind): every node rolled back, or finished when the run
 * had reached finalize. Idempotent: killed during this, it runs again from the same journal, which goes only once
 * every step succeeded. `depsFor` builds a node's dependencies from its persisted restore input.
 */
export async function recoverClusterRestore(
  j: ClusterRestoreJournal,
  opts: { env: NodeJS.ProcessEnv; log: Logger; owner: string; depsFor: (input: RestoreInput) => Promise<RestoreDeps> },
): Promise<{ action: 'finalize' | 'rollBack'; warnings: string[] }> {
  const { action } = recoveryPlan(j);
  // Claimed by this process: a second recovery at once sees a live owner and leaves it alone.
  await writeJournal(opts.env, { ...j, owner: opts.owner, pid: process.pid });
  const log = opts.log.child({ clusterBackupId: j.clusterBackupId, runId: j.runId });
  log.info('cluster restore recovery', { action, phase: j.phase, nodes: j.nodes.map((n) => n.name) });
  const nodes: RecoveryNode[] = [];
  for (const n of j.nodes) {
    const input = nodeInput(n);
    nodes.push({ name: n.name, input, deps: await opts.depsFor(input), touched: n.touched, wasRunning: n.wasRunning });
  }
  const warnings = await rollBack(nodes, action, log);
  if (!warnings.length) await removeJournal(opts.env, j.runId);
  return { action, warnings };
}

function emptyPlan(): RestorePlan {
  return { sourceClusterName: '', keyspaces: [], rawBytes: 0, fileCount: 0, wasRunning: false, settings: null, placement: {} };
}

/** Each failing node, its part and its own error (a node aborted because another failed says nothing new). */
function describeFailures(failures: NodeFailure[]): string {
  const own = failures.filter((f) => f.error.code !== 'CBR_ERR_ABORTED');
  const named = (own.length ? own : failures).sort((a, b) => a.node.index - b.node.index);
  return named.map((f) => `${f.node.deps.profile.name} (part ${f.node.host.backupId}): ${f.error.code}: ${f.error.message.split('\n')[0]}`).join('; ');
}

function failedError(record: ClusterRecord, phase: Phase | null, error: ErrorInfo, failures: NodeFailure[], warnings: string[]): CbrError {
  const what = error.code === 'CBR_ERR_CLUSTER_RESTORE_FAILED' && failures.length ? describeFailures(failures) : `${error.code}: ${error.message}`;
  const rolled = warnings.length ? `; rollback warnings: ${warnings.join('; ')}` : '; every target node rolled back';
  return new CbrError('CBR_ERR_CLUSTER_RESTORE_FAILED', `restore of cluster backup ${record.id} failed at ${phase ?? 'start'}: ${what}${rolled}`);
}

/** Test drill: `CBR_DRILL_CLUSTER_RESTORE_FAIL=<node number>:<phase>` fails that node as that phase begins. */
function drillFailure(env: NodeJS.ProcessEnv): { node: number; phase: Phase } | null {
  const m = /^(\d+):([a-zA-Z]+)$/.exec(env['CBR_DRILL_CLUSTER_RESTORE_FAIL'] ?? '');
  if (!m || !(CLUSTER_RESTORE_PHASES as readonly string[]).includes(m[2]!)) return null;
  return { node: Number(m[1]), phase: m[2] as Phase };
}
