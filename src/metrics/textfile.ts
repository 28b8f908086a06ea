import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../core/atomicWrite.ts';
import { CbrMetrics, type OutcomeSample } from './metrics.ts';

/** The series a textfile carries from run to run: counters add up, last-outcome gauges keep their value. */
const CARRIED_COUNTERS = ['cbr_workflows_total', 'cbr_read_bytes_total', 'cbr_stored_bytes_total'] as const;
const CARRIED_GAUGES = ['cbr_last_success_timestamp_seconds', 'cbr_last_run_success', 'cbr_workflow_last_duration_seconds'] as const;

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * The samples of a text exposition (what prom-client writes: `name{a="b",...} value`); comments, blank lines and
 * lines it cannot read are skipped, so a hand-edited or truncated file costs its bad lines, not the run.
 */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/.exec(line.trim());
    if (!m) continue;
    const value = Number(m[3] === '+Inf' ? Number.POSITIVE_INFINITY : m[3] === '-Inf' ? Number.NEGATIVE_INFINITY : m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') continue;
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    const re = /\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/gy;
    let ok = true;
    let at = 0;
    while (at < body.length) {
      re.lastIndex = at;
      const l = re.exec(body);
      if (!l) {
        ok = body.slice(at).trim() === '';
        break;
      }
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      at = re.lastIndex;
    }
    if (ok) out.push({ name: m[1] as string, labels, value });
  }
  return out;
}

/** Loads what an earlier run's textfile says into fresh metrics (a missing or unreadable file: nothing). */
export function carryOver(metrics: CbrMetrics, previous: string): void {
  for (const s of parseExposition(previous)) {
    if (!Number.isFinite(s.value)) continue;
    const { kind = '', host = '', strategy = '', outcome = '', code = '' } = s.labels;
    switch (s.name as (typeof CARRIED_COUNTERS)[number] | (typeof CARRIED_GAUGES)[number]) {
      case 'cbr_workflows_total':
        if (s.value > 0 && (outcome === 'completed' || outcome === 'failed')) metrics.workflows.inc({ kind, outcome, code }, s.value);
        break;
      case 'cbr_read_bytes_total':
        if (s.value > 0) metrics.bytesRead.inc({ kind }, s.value);
        break;
      case 'cbr_stored_bytes_total':
        if (s.value > 0) metrics.bytesStored.inc({ kind }, s.value);
        break;
      case 'cbr_last_success_timestamp_seconds':
        metrics.lastSuccess.set({ kind, host, strategy }, s.value);
        break;
      case 'cbr_last_run_success':
        metrics.lastRunSuccess.set({ kind, host, strategy }, s.value);
        break;
      case 'cbr_workflow_last_duration_seconds':
        metrics.lastDuration.set({ kind, host, strategy }, s.value);
        break;
    }
  }
}

/**
 * Records one CLI run into a node_exporter textfile: the previous file's counters and last outcomes, plus this run,
 * written to a temporary file beside it and renamed over it (node_exporter reads the old file or the new one,
 * never half; its textfile collector reads only *.prom, so the temporary name is never read). The duration
 * histogram is left out: one observation per file cannot add up across runs; cbr_workflow_last_duration_seconds
 * says how long the last one took. Two runs writing the same file at the same moment may lose one's counts: give
 * concurrent jobs their own files (node_exporter reads every *.prom of its directory).
 */
export async function writeTextfile(path: string, sample: OutcomeSample): Promise<void> {
  const metrics = new CbrMetrics();
  metrics.registry.removeSingleMetric('cbr_workflow_duration_seconds');
  const previous = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
  carryOver(metrics, previous);
  metrics.recordOutcome(sample);
  await writeFileAtomic(path, await metrics.text());
}
