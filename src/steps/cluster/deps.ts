import { setTimeout as sleep } from 'node:timers/promises';
import type { CqlSession } from '../../cassandra/cql.ts';
import type { ErrorInfo } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import type { ObjectStore } from '../../storage/port.ts';

/**
 * What the coordinator's steps need: the bus to the hosts' agents (a narrow port; src/bus/hostBus.ts is the AMQP
 * one), the storage the parts go to, and a CQL session on its own node (topology and schema for the record).
 */

/** One workflow (or command outcome) as a host's status reply lists it. */
export interface HostWorkflow {
  workflowId: string;
  kind: string;
  state: string;
  status: string;
  error: ErrorInfo | null;
  result?: Record<string, unknown>;
}

export interface HostReply {
  host: string;
  /** The host's Cassandra cluster_name, once its agent has read it. */
  cluster?: string;
  /** The broadcast address of the host's node, once its agent has read it. */
  address?: string;
  workflows: HostWorkflow[];
}

export interface HostBus {
  /** Publishes a command to one host's agent, confirmed by the broker; no agent queue for it: CBR_ERR_BUS_UNAVAILABLE. */
  send(host: string, type: string, payload: Record<string, unknown>, id?: string): Promise<string>;
  /** One host's answer about one workflow (or command) id, or its recent ones; null when it did not answer in time. */
  ask(host: string, workflowId: string | undefined, signal: AbortSignal): Promise<HostReply | null>;
  /** Every agent's answer within a short window (the status broadcast). */
  everyone(signal: AbortSignal): Promise<HostReply[]>;
  close(): Promise<void>;
}

export interface ClusterDeps {
  /** A bus session for one step (closed when the step ends). */
  bus: () => Promise<HostBus>;
  store: ObjectStore;
  /** A CQL session on the coordinator's own node. */
  cql: () => Promise<CqlSession>;
  log: Logger;
  /** How often a waiting step asks the hosts again. */
  pollMs: number;
  /** How long after the cluster backup started every host must have its snapshot held (the barrier's deadline). */
  barrierTimeoutMs: number;
  /** How long an abort waits for each host to drop its part. */
  abortTimeoutMs: number;
  /** How often a part still waiting for its upload slot is told to keep holding (default: a third of its hold timeout). */
  holdKeepaliveMs?: number;
  stepDelayMs?: number;
  /**
   * Test-only (CBR_TEST_CLUSTER_PAUSE_FILE): while this file exists and names a step on a line of its own, that step
   * waits before doing anything, so a test can kill the agent with the coordinator in that state.
   */
  pauseFile?: string | undefined;
}

/** Where a part stands, from its host's answer. */
export type PartView =
  | { at: 'noAnswer' }
  | { at: 'none' }
  | { at: 'before' | 'holding' | 'uploading' | 'failing'; state: string }
  | { at: 'completed'; result: Record<string, unknown> }
  | { at: 'failed'; error: ErrorInfo };

const UPLOADING = new Set(['streaming', 'recording', 'clearingSnapshot']);

export function viewOf(reply: HostReply | null, partId: string): PartView {
  if (!reply) return { at: 'noAnswer' };
  const w = reply.workflows.find((x) => x.workflowId === partId);
  if (!w) return { at: 'none' };
  if (w.status === 'done' || w.state === 'rejected') {
    if (w.state === 'completed' && w.kind === 'backup') return { at: 'completed', result: w.result ?? {} };
    return { at: 'failed', error: w.error ?? { code: 'CBR_ERR_INTERNAL', message: `part ${partId} ended ${w.state}`, retryable: true } };
  }
  if (w.status !== 'active') return { at: 'failed', error: w.error ?? { code: 'CBR_ERR_INTERNAL', message: `part ${partId} is ${w.status}`, retryable: true } };
  if (w.state === 'holding') return { at: 'holding', state: w.state };
  if (UPLOADING.has(w.state)) return { at: 'uploading', state: w.state };
  if (w.state.startsWith('compensating')) return { at: 'failing', state: w.state };
  return { at: 'before', state: w.state };
}

/** Runs `fn` over items, at most `limit` at once. */
export async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++] as T);
  });
  await Promise.all(workers);
}

/** A bus session for the length of one step. */
export async function withBus<T>(deps: ClusterDeps, fn: (bus: HostBus) => Promise<T>): Promise<T> {
  const bus = await deps.bus();
  try {
    return await fn(bus);
  } finally {
    await bus.close().catch(() => {});
  }
}

/** The test-only pause (see ClusterDeps.pauseFile): waits while the file names this step. */
export async function pauseIfAsked(deps: ClusterDeps, step: string, signal: AbortSignal): Promise<void> {
  if (!deps.pauseFile) return;
  const { readFile } = await import('node:fs/promises');
  for (;;) {
    const text = await readFile(deps.pauseFile, 'utf8').catch(() => '');
    if (!text.split('\n').some((l) => l.trim() === step)) return;
    await sleep(100, undefined, { signal });
  }
}
