import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { WorkflowEvent } from '../runtime/runtime.ts';

/**
 * cbr's Prometheus metrics: one registry, every metric declared once here. The agent serves them (serve.ts); a CLI
 * run writes them as a node_exporter textfile (textfile.ts). Labels stay bounded: a workflow kind (backup,
 * restore, and later verify, drill, prune), an outcome (completed, failed), an error code from the one catalogue,
 * a host id, a backup strategy (full, incremental, or '' for kinds without one) and a machine state name. Never a
 * backup or workflow id.
 */

/** Workflow durations: seconds to half a day (a large node's backup takes hours). */
const DURATION_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200];

/** One ended workflow, as the metrics see it. */
export interface OutcomeSample {
  kind: string;
  outcome: 'completed' | 'failed';
  /** The error code of a failed workflow ('' when it completed). */
  code: string;
  /** From its creation (persisted) to its final state, time a stopped agent was away included. */
  seconds: number;
  host: string;
  /** full or incremental for a backup; '' for kinds without one. */
  strategy: string;
  /** Bytes read from the node's files (a backup) or from storage (a restore); 0 when unknown. */
  bytesRead: number;
  /** Bytes a backup added to storage (compressed, sealed; an incremental one: its new blobs only). */
  bytesStored: number;
  /** When it ended (Unix seconds). */
  at: number;
}

/** What the agent can tell at scrape time: read from its state database and its bus connection. */
export interface AgentGauges {
  activeByState(): { kind: string; state: string; count: number }[];
  outboxDepth(): number;
  /** Age in seconds of the oldest event waiting in the outbox, null when it is empty. */
  outboxOldestAgeSeconds(): number | null;
  busConnected(): boolean;
}

export class CbrMetrics {
  readonly registry = new Registry();
  readonly workflows: Counter<'kind' | 'outcome' | 'code'>;
  readonly duration: Histogram<'kind' | 'outcome'>;
  readonly lastDuration: Gauge<'kind' | 'host' | 'strategy'>;
  readonly bytesRead: Counter<'kind'>;
  readonly bytesStored: Counter<'kind'>;
  readonly lastSuccess: Gauge<'kind' | 'host' | 'strategy'>;
  readonly lastRunSuccess: Gauge<'kind' | 'host' | 'strategy'>;

  /** `process`: also Node's process metrics (process_start_time_seconds, memory, event loop lag): the agent's. */
  constructor(opts: { process?: boolean } = {}) {
    const registers = [this.registry];
    this.workflows = new Counter({
      name: 'cbr_workflows_total',
      help: 'Workflows ended, by kind, outcome (completed, failed) and error code ("" when completed).',
      labelNames: ['kind', 'outcome', 'code'],
      registers,
    });
    this.duration = new Histogram({
      name: 'cbr_workflow_duration_seconds',
      help: 'How long workflows took from their creation to their final state.',
      labelNames: ['kind', 'outcome'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.lastDuration = new Gauge({
      name: 'cbr_workflow_last_duration_seconds',
      help: 'How long the last workflow of this kind, host and strategy took.',
      labelNames: ['kind', 'host', 'strategy'],
      registers,
    });
    this.bytesRead = new Counter({
      name: 'cbr_read_bytes_total',
      help: "Bytes workflows read: a backup the node's files, a restore its backup from storage.",
      labelNames: ['kind'],
      registers,
    });
    this.bytesStored = new Counter({
      name: 'cbr_stored_bytes_total',
      help: 'Bytes backups added to storage (compressed and sealed as stored).',
      labelNames: ['kind'],
      registers,
    });
    this.lastSuccess = new Gauge({
      name: 'cbr_last_success_timestamp_seconds',
      help: 'When the last workflow of this kind, host and strategy completed (Unix time).',
      labelNames: ['kind', 'host', 'strategy'],
      registers,
    });
    this.lastRunSuccess = new Gauge({
      name: 'cbr_last_run_success',
      help: 'Whether the last workflow of this kind, host and strategy completed (1) or failed (0).',
      labelNames: ['kind', 'host', 'strategy'],
      registers,
    });
    if (opts.process) collectDefaultMetrics({ register: this.registry });
  }

  recordOutcome(s: OutcomeSample): void {
    const ok = s.outcome === 'completed';
    this.workflows.inc({ kind: s.kind, outcome: s.outcome, code: ok ? '' : s.code });
    this.duration.observe({ kind: s.kind, outcome: s.outcome }, Math.max(0, s.seconds));
    const series = { kind: s.kind, host: s.host, strategy: s.strategy };
    this.lastDuration.set(series, Math.max(0, s.seconds));
    if (s.bytesRead > 0) this.bytesRead.inc({ kind: s.kind }, s.bytesRead);
    if (s.bytesStored > 0) this.bytesStored.inc({ kind: s.kind }, s.bytesStored);
    this.lastRunSuccess.set(series, ok ? 1 : 0);
    if (ok) this.lastSuccess.set(series, s.at);
  }

  /** Last outcomes known from before this process (the state database, an earlier textfile). */
  seedLast(l: { kind: string; host: string; strategy: string; lastSuccessAt: number | null; lastRunSucceeded: boolean | null }): void {
    const series = { kind: l.kind, host: l.host, strategy: l.strategy };
    if (l.lastSuccessAt !== null) this.lastSuccess.set(series, l.lastSuccessAt);
    if (l.lastRunSucceeded !== null) this.lastRunSuccess.set(series, l.lastRunSucceeded ? 1 : 0);
  }

  /** The agent's live gauges, read at each scrape. */
  watchAgent(source: AgentGauges): void {
    const registers = [this.registry];
    new Gauge({
      name: 'cbr_workflows_active',
      help: 'Workflows not ended yet, by kind and machine state (includes ones waiting to resume).',
      labelNames: ['kind', 'state'],
      registers,
      collect() {
        this.reset();
        for (const r of source.activeByState()) this.set({ kind: r.kind, state: r.state }, r.count);
      },
    });
    new Gauge({
      name: 'cbr_outbox_events',
      help: 'Events persisted by the agent and not yet confirmed by the broker.',
      registers,
      collect() {
        this.set(source.outboxDepth());
      },
    });
    new Gauge({
      name: 'cbr_outbox_oldest_event_age_seconds',
      help: 'Age of the oldest event waiting in the outbox (0 when it is empty).',
      registers,
      collect() {
        this.set(source.outboxOldestAgeSeconds() ?? 0);
      },
    });
    new Gauge({
      name: 'cbr_bus_connected',
      help: 'Whether the agent has a channel to the broker (1) or waits for it to come back (0).',
      registers,
      collect() {
        this.set(source.busConnected() ? 1 : 0);
      },
    });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** What the observer needs of a workflow's persisted row. */
/** A verify or drill run (they start no workflow) as an outcome sample: last success per host and strategy. */
export function runSample(
  kind: 'verify' | 'drill',
  r: { ok: boolean; code: string; seconds: number; host: string; strategy?: string; bytesRead?: number },
): OutcomeSample {
  return {
    kind,
    outcome: r.ok ? 'completed' : 'failed',
    code: r.ok ? '' : r.code,
    seconds: r.seconds,
    host: r.host,
    strategy: r.strategy ?? '',
    bytesRead: r.bytesRead ?? 0,
    bytesStored: 0,
    at: Date.now() / 1000,
  };
}

/** A drill's result (src/workflows/drill.ts) as an outcome sample: the same from `cbr drill` and the agent's `backup.drill`. */
export function drillSample(r: { ok: boolean; error: { code: string } | null; seconds: { total: number }; host: string; strategy: string }): OutcomeSample {
  return runSample('drill', {
    ok: r.ok,
    code: r.ok ? '' : (r.error?.code ?? 'CBR_ERR_DRILL_FAILED'),
    seconds: r.seconds.total,
    host: r.host,
    strategy: r.strategy,
  });
}

export interface WorkflowFacts {
  createdAt: string;
  input: unknown;
}

/** A backup's strategy as its input says (older inputs have none: full); '' for other kinds. */
export function strategyOf(kind: string, input: unknown): string {
  const s = (input as { strategy?: unknown } | null)?.strategy;
  if (typeof s === 'string') return s;
  return kind === 'backup' ? 'full' : '';
}

/**
 * A runtime event listener that records every workflow's end. `facts` reads its row (creation time, input); a
 * restore's bytes read are the last progress it reported, as its output carries none.
 */
export function workflowObserver(metrics: CbrMetrics, host: string, facts: (workflowId: string) => WorkflowFacts | undefined): (e: WorkflowEvent) => void {
  const progressBytes = new Map<string, number>();
  return (e) => {
    if (e.type === 'progress') {
      if (e.kind === 'restore') progressBytes.set(e.workflowId, e.progress.bytes);
      return;
    }
    if (e.status !== 'done') return;
    const seen = progressBytes.get(e.workflowId) ?? 0;
    progressBytes.delete(e.workflowId);
    // Metrics never stand in the way of the event they watch: a failure here costs one sample.
    try {
      metrics.recordOutcome(outcomeSample(e, facts(e.workflowId), host, seen));
    } catch {
      /* a state database closed under a stopping agent */
    }
  };
}

/** The sample of a workflow's final event (status 'done'). */
export function outcomeSample(e: Extract<WorkflowEvent, { type: 'state' }>, row: WorkflowFacts | undefined, host: string, progressBytes = 0): OutcomeSample {
  const end = Date.parse(e.at);
  const start = row ? Date.parse(row.createdAt) : end;
  const completed = e.state === 'completed';
  let bytesRead = 0;
  let bytesStored = 0;
  const out = e.output as { result?: { rawBytes?: number; size?: number; newBytes?: number; newStoredBytes?: number; strategy?: string } | null } | undefined;
  const result = out?.result;
  if (e.kind === 'backup' && result) {
    const incremental = result.strategy === 'incremental';
    bytesRead = (incremental ? result.newBytes : result.rawBytes) ?? 0;
    bytesStored = (incremental ? result.newStoredBytes : result.size) ?? 0;
  } else if (e.kind === 'restore') {
    bytesRead = progressBytes;
  }
  return {
    kind: e.kind,
    outcome: completed ? 'completed' : 'failed',
    code: completed ? '' : (e.error?.code ?? 'CBR_ERR_INTERNAL'),
    seconds: Number.isFinite(start) && Number.isFinite(end) ? (end - start) / 1000 : 0,
    host,
    strategy: strategyOf(e.kind, row?.input),
    bytesRead,
    bytesStored,
    at: (Number.isFinite(end) ? end : Date.now()) / 1000,
  };
}

/** An agent's last outcomes from its state database (lastEnded rows), so a restart does not forget them. */
export function seedFromEnded(metrics: CbrMetrics, host: string, rows: { kind: string; strategy: string | null; state: string; at: string }[]): void {
  const series = new Map<string, { kind: string; strategy: string; success: number | null; failure: number | null }>();
  for (const r of rows) {
    const strategy = r.strategy ?? strategyOf(r.kind, null);
    const key = `${r.kind}\u0000${strategy}`;
    const s = series.get(key) ?? { kind: r.kind, strategy, success: null, failure: null };
    const at = Date.parse(r.at) / 1000;
    if (!Number.isFinite(at)) continue;
    if (r.state === 'completed') s.success = Math.max(s.success ?? 0, at);
    else s.failure = Math.max(s.failure ?? 0, at);
    series.set(key, s);
  }
  for (const s of series.values()) {
    const last = s.success === null && s.failure === null ? null : (s.success ?? -1) >= (s.failure ?? -1);
    metrics.seedLast({ kind: s.kind, host, strategy: s.strategy, lastSuccessAt: s.success, lastRunSucceeded: last });
  }
}
