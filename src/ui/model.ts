import { CLUSTER_KIND, ClusterGroups, type ClusterHostRow } from '../bus/clusterParts.ts';
import type { BusEvent } from '../bus/schemas/events.ts';
import type { Progress } from '../machines/common.ts';

/**
 * What the live view knows, folded from bus events: each host, each workflow on it, its current state, the
 * history of transitions with timestamps, the latest progress with a rate and an ETA, and the coded error of a
 * failure. Pure (no I/O): the UI server feeds it events and ships views to browsers.
 */

export interface ProgressView extends Progress {
  step: string;
  /** Bytes per second, smoothed over the recent samples; null until two samples are in. */
  rate: number | null;
  /** Seconds left at the current rate; null when unknown. */
  etaSeconds: number | null;
  at: string;
}

export interface HistoryEntry {
  state: string;
  status: string;
  at: string;
  error?: { code: string; message: string } | null;
}

export interface WorkflowView {
  id: string;
  host: string;
  kind: string;
  state: string;
  status: string;
  error: { code: string; message: string; retryable: boolean } | null;
  /** The state the workflow was in when its error happened (drawn red on the diagram). */
  failedIn: string | null;
  startedAt: string;
  updatedAt: string;
  history: HistoryEntry[];
  progress: ProgressView | null;
  result: Record<string, unknown> | null;
  /** A host's part of a cluster backup: the cluster backup's workflow id (src/bus/clusterParts.ts). */
  clusterOf?: string;
  /** A cluster backup: one row per host (phase, the part's state and progress, error), drawn beneath its row. */
  hosts?: ClusterHostRow[];
}

export interface UiSnapshot {
  workflows: WorkflowView[];
  rejected: { host: string; id: string; at: string; error: { code: string; message: string } | null }[];
}

export const MAX_HISTORY = 200;
const MAX_REJECTED = 50;

export class UiModel {
  readonly #workflows = new Map<string, WorkflowView>();
  readonly #rejected: UiSnapshot['rejected'] = [];
  readonly #samples = new Map<string, { t: number; bytes: number; rate: number | null }>();
  readonly #maxWorkflows: number;
  /** Event ids already applied (events are at-least-once). */
  readonly #seen = new Set<string>();
  readonly #seenOrder: string[] = [];
  readonly #groups = new ClusterGroups();

  constructor(opts: { maxWorkflows?: number } = {}) {
    this.#maxWorkflows = opts.maxWorkflows ?? 2000;
  }

  /** Applies one event (parsed off the bus: src/bus/schemas/events.ts); returns the workflow it changed, or null when it changed none. */
  apply(e: BusEvent): WorkflowView | null {
    if (e.eventId) {
      if (this.#seen.has(e.eventId)) return null;
      this.#seen.add(e.eventId);
      this.#seenOrder.push(e.eventId);
      if (this.#seenOrder.length > 20_000) this.#seen.delete(this.#seenOrder.shift()!);
    }
    if (e.type === 'rejected') {
      this.#rejected.unshift({ host: e.host, id: e.workflowId, at: e.at, error: e.error ? { code: e.error.code, message: e.error.message } : null });
      this.#rejected.length = Math.min(this.#rejected.length, MAX_REJECTED);
      return null;
    }
    // Results of commands that start no workflow (delete, cancel, refused starts) are not workflows.
    if (e.kind !== 'backup' && e.kind !== 'restore' && e.kind !== CLUSTER_KIND) return null;
    const w = this.#get(e);
    const part = this.#groups.see(e);
    const w2 = this.#apply(w, e);
    // A cluster backup's rows follow its own events and each of its parts' (the server redraws both).
    if (part) w.clusterOf = part.clusterId;
    const cluster = part ? this.#workflows.get(part.clusterId) : e.kind === CLUSTER_KIND ? w : undefined;
    if (cluster) cluster.hosts = this.#groups.rows(cluster.id);
    return w2;
  }

  #apply(w: WorkflowView, e: BusEvent): WorkflowView | null {
    if (e.at > w.updatedAt) w.updatedAt = e.at;
    switch (e.type) {
      case 'state': {
        if (!e.state) return null;
        const last = w.history[w.history.length - 1];
        if (!last || last.state !== e.state || last.status !== e.status) {
          w.history.push({
            state: e.state,
            status: e.status,
            at: e.at,
            ...(e.error ? { error: { code: e.error.code, message: e.error.message } } : {}),
          });
          if (w.history.length > MAX_HISTORY) w.history.splice(1, w.history.length - MAX_HISTORY);
        }
        if (e.error && !w.error) w.failedIn = last?.state ?? e.state;
        this.#setState(w, e);
        return w;
      }
      case 'progress': {
        const p = e.progress;
        const step = e.step ?? w.state;
        const t = Date.parse(e.at);
        const prev = this.#samples.get(w.id);
        let rate = prev?.rate ?? null;
        if (prev && t > prev.t && p.bytes >= prev.bytes) {
          const r = ((p.bytes - prev.bytes) * 1000) / (t - prev.t);
          rate = rate === null ? r : rate * 0.6 + r * 0.4;
        }
        if (!prev || t > prev.t) this.#samples.set(w.id, { t, bytes: p.bytes, rate });
        const left = Math.max(0, p.totalBytes - p.bytes);
        w.progress = {
          step,
          bytes: p.bytes,
          totalBytes: p.totalBytes,
          files: p.files,
          totalFiles: p.totalFiles,
          storedBytes: p.storedBytes,
          rate,
          etaSeconds: left === 0 ? 0 : rate && rate > 0 ? left / rate : null,
          at: e.at,
        };
        return w;
      }
      case 'result': {
        if (e.result) w.result = e.result;
        if (e.state) this.#setState(w, e);
        this.#samples.delete(w.id);
        return w;
      }
      default:
        return null;
    }
  }

  get(id: string): WorkflowView | undefined {
    return this.#workflows.get(id);
  }

  snapshot(): UiSnapshot {
    return { workflows: [...this.#workflows.values()], rejected: [...this.#rejected] };
  }

  #setState(w: WorkflowView, e: Extract<BusEvent, { type: 'state' | 'result' }>): void {
    if (e.state) w.state = e.state;
    if (e.status) w.status = e.status;
    if (e.error) w.error = { code: e.error.code, message: e.error.message, retryable: e.error.retryable };
  }

  #get(e: BusEvent): WorkflowView {
    let w = this.#workflows.get(e.workflowId);
    if (!w) {
      w = {
        id: e.workflowId,
        host: e.host,
        kind: e.kind,
        state: '',
        status: 'active',
        error: null,
        failedIn: null,
        startedAt: e.at,
        updatedAt: e.at,
        history: [],
        progress: null,
        result: null,
      };
      this.#workflows.set(w.id, w);
      this.#evict();
    }
    return w;
  }

  /** Keeps memory bounded: the oldest finished workflows go first. */
  #evict(): void {
    if (this.#workflows.size <= this.#maxWorkflows) return;
    const done = [...this.#workflows.values()].filter((w) => w.status !== 'active').sort((a, b) => (a.updatedAt < b.updatedAt ? -1 : 1));
    for (const w of done.slice(0, this.#workflows.size - this.#maxWorkflows)) {
      this.#workflows.delete(w.id);
      this.#samples.delete(w.id);
    }
  }
}
