import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../../core/atomicWrite.ts';
import { cbrHome } from '../../core/paths.ts';
import { CLUSTER_RESTORE_PHASES } from '../../machines/clusterRestore.machine.ts';
import type { RestoreInput } from '../../machines/restore.machine.ts';

/**
 * The cluster restore's journal: what the coordinator (one `cbr create` process) has done to each target node, on
 * disk before it does it, so a coordinator killed midway (SIGKILL, a crash, a reboot) leaves enough for `cbr resume`
 * or the next `cbr create` onto the same nodes to put every node back. `$CBR_HOME/cluster-restores/<run id>.json`,
 * written atomically (0600: it holds each node's restore input, as the state database does) before each phase
 * begins and removed once the run ended cleanly (completed, or rolled back without a warning).
 *
 * Intent before action: a node is marked touched before it is stopped, so a journal may call a node touched that
 * was not yet; its rollback (stop, yaml back, directories back, staging gone, start if it ran) finds nothing to
 * undo then. The phase `finalizing` is written once every node and the ring were proven good: from there a
 * recovery finishes the job instead of undoing it.
 */

export const JOURNAL_PHASES = [...CLUSTER_RESTORE_PHASES, 'rollingBack', 'finalizing'] as const;
export type JournalPhase = (typeof JOURNAL_PHASES)[number];

const journalNode = z.strictObject({
  name: z.string(),
  profilePath: z.string(),
  workflowId: z.string(),
  /** The node's restore input, as an ordinary restore persists it (a password file's path, never a password). */
  input: z.record(z.string(), z.unknown()),
  /** Stopped (or about to be) and swapped by this restore: a rollback puts its yaml and directories back. */
  touched: z.boolean(),
  /** It ran before the restore: a rollback starts it again. */
  wasRunning: z.boolean(),
});

export const clusterRestoreJournalSchema = z.strictObject({
  version: z.literal(1),
  runId: z.string(),
  clusterBackupId: z.string(),
  /** The coordinator process (runtime/owner.ts's token: boot id, pid, start time). */
  owner: z.string(),
  pid: z.number().int(),
  startedAt: z.string(),
  phase: z.enum(JOURNAL_PHASES),
  nodes: z.array(journalNode),
});
export type ClusterRestoreJournal = z.infer<typeof clusterRestoreJournalSchema>;
export type JournalNode = z.infer<typeof journalNode>;

export function journalDir(env: NodeJS.ProcessEnv): string {
  return join(cbrHome(env), 'cluster-restores');
}

export function journalPath(env: NodeJS.ProcessEnv, runId: string): string {
  return join(journalDir(env), `${runId}.json`);
}

export async function writeJournal(env: NodeJS.ProcessEnv, j: ClusterRestoreJournal): Promise<void> {
  await mkdir(journalDir(env), { recursive: true, mode: 0o700 });
  await writeFileAtomic(journalPath(env, j.runId), `${JSON.stringify(clusterRestoreJournalSchema.parse(j), null, 2)}\n`, 0o600);
}

export async function removeJournal(env: NodeJS.ProcessEnv, runId: string): Promise<void> {
  await rm(journalPath(env, runId), { force: true });
}

/** Every journal under $CBR_HOME (synchronous: the workflow runtime's conflict check reads them). One unreadable is skipped. */
export function listJournals(env: NodeJS.ProcessEnv): ClusterRestoreJournal[] {
  const dir = journalDir(env);
  if (!existsSync(dir)) return [];
  const out: ClusterRestoreJournal[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (!name.endsWith('.json')) continue;
    try {
      out.push(clusterRestoreJournalSchema.parse(JSON.parse(readFileSync(join(dir, name), 'utf8'))));
    } catch {
      // A temporary file of an atomic write, or a journal of another version: not ours to act on.
    }
  }
  return out;
}

export function nodeInput(n: JournalNode): RestoreInput {
  return n.input as unknown as RestoreInput;
}

/** The restore steps that undo (or, from `finalizing`, finish) one node's part, in order. */
export type RecoveryStep = 'stopNode' | 'restoreConfig' | 'restoreDataDirs' | 'discardStaging' | 'startNode' | 'finalizeRestore';

/**
 * What a recovery does with a journal: a run that reached `finalizing` had every node and the ring proven good,
 * so each node finishes (the replaced data goes); any other phase rolls every node back. The same rollback the
 * coordinator runs in-process on a failure (nodeRollback).
 */
export function recoveryPlan(j: Pick<ClusterRestoreJournal, 'phase' | 'nodes'>): {
  action: 'finalize' | 'rollBack';
  nodes: { name: string; steps: RecoveryStep[] }[];
} {
  if (j.phase === 'finalizing') return { action: 'finalize', nodes: j.nodes.map((n) => ({ name: n.name, steps: ['finalizeRestore'] })) };
  return { action: 'rollBack', nodes: j.nodes.map((n) => ({ name: n.name, steps: nodeRollback(n) })) };
}

/** One node's rollback: a touched node is stopped, its yaml and directories go back, its staging goes, and it starts if it ran before. */
export function nodeRollback(n: { touched: boolean; wasRunning: boolean }): RecoveryStep[] {
  if (!n.touched) return ['discardStaging'];
  return ['stopNode', 'restoreConfig', 'restoreDataDirs', 'discardStaging', ...(n.wasRunning ? (['startNode'] as const) : [])];
}

/** The journals a recovery may take: their coordinator is gone (`alive` is runtime/owner.ts's check). */
export function deadJournals(journals: ClusterRestoreJournal[], alive: (owner: string, pid: number) => boolean): ClusterRestoreJournal[] {
  return journals.filter((j) => !alive(j.owner, j.pid));
}
