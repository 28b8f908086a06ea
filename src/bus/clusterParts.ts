import type { BusEvent } from './schemas/events.ts';

/**
 * A cluster backup as a subscriber sees it (cbr watch, cbr ui): the coordinator's workflow (kind `clusterBackup`)
 * and, beneath it, one row per host: that host's part, an ordinary backup workflow on the host with the id
 * `<cluster backup id>-<n>` (src/catalog/clusterRecord.ts partId, n = the host's 1-based place in the coordinator's
 * sorted host list). A host's phase comes from the coordinator's result (`hosts: [{host, phase, error}]`, in that
 * order) once it is seen, and until then from the part's own state events.
 */

export const CLUSTER_KIND = 'clusterBackup';

export interface ClusterHostRow {
  /** 1-based, as in the part id. */
  n: number;
  partId: string;
  host: string | null;
  /** pending | started | snapshotted | uploaded | failed | aborted (the coordinator's), or derived from the part. */
  phase: string;
  /** The part's own machine state, when its events were seen. */
  state: string | null;
  progress: { bytes: number; totalBytes: number; files: number; totalFiles: number } | null;
  error: { code: string; message: string } | null;
}

interface ClusterSeen {
  id: string;
  host: string;
  state: string;
  hosts: { host: string; phase: string; error: { code: string; message: string } | null }[] | null;
}

interface PartSeen {
  host: string;
  state: string | null;
  progress: ClusterHostRow['progress'];
  error: { code: string; message: string } | null;
}

/** `<cluster id>-<n>` split, or null when the id does not end in `-<n>`. */
export function splitPartId(id: string): { clusterId: string; n: number } | null {
  const m = /^(.+)-([1-9]\d{0,4})$/.exec(id);
  return m ? { clusterId: m[1]!, n: Number(m[2]) } : null;
}

/** The phase a part's own state tells, before the coordinator's result says it. */
export function phaseOfPartState(state: string | null): string {
  if (state === null) return 'pending';
  if (state === 'holding') return 'snapshotted';
  if (state === 'completed') return 'uploaded';
  if (state === 'failed') return 'failed';
  return 'started';
}

/** Cluster backups a long-running subscriber remembers (the oldest seen is forgotten first, with its parts). */
export const CLUSTERS_KEPT = 256;

export class ClusterGroups {
  readonly #clusters = new Map<string, ClusterSeen>();
  readonly #parts = new Map<string, PartSeen>();
  readonly #limit: number;

  constructor(opts: { limit?: number } = {}) {
    this.#limit = opts.limit ?? CLUSTERS_KEPT;
  }

  /**
   * Takes an event in. Returns the cluster backup and part number when it is a part's event of a cluster backup
   * already seen (the coordinator's first state event comes before any host is told anything), else null.
   */
  see(e: BusEvent): { clusterId: string; n: number } | null {
    if (e.kind === CLUSTER_KIND) {
      const c = this.#clusters.get(e.workflowId) ?? { id: e.workflowId, host: e.host, state: '', hosts: null };
      if (e.type === 'state' || e.type === 'result') c.state = e.state;
      if (e.type === 'result' && Array.isArray(e.result?.['hosts'])) c.hosts = readHosts(e.result['hosts']);
      this.#clusters.set(e.workflowId, c);
      this.#forgetOldest();
      return null;
    }
    if (e.kind !== 'backup') return null;
    // Only parts of a cluster backup seen (its coordinator's first event comes before any host is told anything):
    // every other backup's events would otherwise be kept for as long as `cbr ui` runs.
    const split = splitPartId(e.workflowId);
    if (!split || !this.#clusters.has(split.clusterId)) return null;
    const p = this.#parts.get(e.workflowId) ?? { host: e.host, state: null, progress: null, error: null };
    if (e.type === 'state' || e.type === 'result') {
      p.state = e.state;
      if (e.error) p.error = { code: e.error.code, message: e.error.message };
    }
    if (e.type === 'progress' && e.progress) p.progress = e.progress;
    this.#parts.set(e.workflowId, p);
    return split;
  }

  #forgetOldest(): void {
    for (const id of this.#clusters.keys()) {
      if (this.#clusters.size <= this.#limit) return;
      this.#clusters.delete(id);
      for (const part of this.#parts.keys()) if (splitPartId(part)?.clusterId === id) this.#parts.delete(part);
    }
  }

  /** How many parts are remembered (for tests: a bounded memory). */
  get partCount(): number {
    return this.#parts.size;
  }

  isCluster(workflowId: string): boolean {
    return this.#clusters.has(workflowId);
  }

  /** One row per host of a cluster backup: every host the coordinator's result names, and every part seen. */
  rows(clusterId: string): ClusterHostRow[] {
    const c = this.#clusters.get(clusterId);
    if (!c) return [];
    const ns = new Set<number>();
    c.hosts?.forEach((_, i) => {
      ns.add(i + 1);
    });
    for (const id of this.#parts.keys()) {
      const s = splitPartId(id);
      if (s && s.clusterId === clusterId) ns.add(s.n);
    }
    return [...ns]
      .sort((a, b) => a - b)
      .map((n) => {
        const partId = `${clusterId}-${n}`;
        const part = this.#parts.get(partId);
        const said = c.hosts?.[n - 1];
        return {
          n,
          partId,
          host: said?.host ?? part?.host ?? null,
          phase: said?.phase ?? phaseOfPartState(part?.state ?? null),
          state: part?.state ?? null,
          progress: part?.progress ?? null,
          error: said?.error ?? part?.error ?? null,
        };
      });
  }
}

function readHosts(value: unknown[]): ClusterSeen['hosts'] {
  return value.map((h) => {
    const o = (h ?? {}) as { host?: unknown; phase?: unknown; error?: { code?: unknown; message?: unknown } | null };
    const error = o.error && typeof o.error.code === 'string' ? { code: o.error.code, message: String(o.error.message ?? '') } : null;
    return { host: String(o.host ?? ''), phase: String(o.phase ?? 'pending'), error };
  });
}

/** The rows as `cbr watch` prints them beneath the cluster workflow: `  <n> <host> <phase> [state] [progress] [error]`. */
export function formatClusterRows(rows: ClusterHostRow[]): string[] {
  return rows.map((r) => {
    const pct = r.progress?.totalBytes ? ` ${((r.progress.bytes / r.progress.totalBytes) * 100).toFixed(0)}%` : '';
    const state = r.state && r.state !== r.phase ? ` (${r.state}${pct})` : pct;
    return `  ${r.n}. ${r.host ?? '?'} ${r.partId} ${r.phase}${state}${r.error ? ` ${r.error.code}: ${r.error.message}` : ''}`;
  });
}
