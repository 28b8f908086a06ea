import { watchEvents } from '../../bus/client.ts';
import { CLUSTER_KIND, ClusterGroups, formatClusterRows } from '../../bus/clusterParts.ts';
import type { BusEvent } from '../../bus/schemas/events.ts';
import { busConnectionOptions, noticeLine } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { formatBytes } from '../progress.ts';
import { onInterrupt } from '../signals.ts';

export const command = defineCommand('watch', {
  summary: 'Print workflow events from the bus as they come (state changes, progress, results, rejections); survives broker outages.',
  options: {
    host: { type: 'string', placeholder: '<host-id>', description: "this host's events only (default: every host's)" },
    workflow: { type: 'string', placeholder: '<id>', description: "this workflow's events only" },
    ...jsonOption,
    ...busConnectionOptions,
  },
  notes: ['--json prints each event as one line of JSON. Ctrl-C stops.'],
  async run({ values }, io) {
    const groups = new ClusterGroups();
    const sub = await watchEvents({
      url: values.bus,
      prefix: values.prefix,
      host: values.host,
      workflow: values.workflow,
      // The present state first (from the agents), then live events; after a broker outage it reconnects and
      // asks the agents again, so what happened meanwhile is printed too (marked resync).
      reconnect: true,
      onNotice: (n) => io.stderr(`cbr watch: ${noticeLine(n)}\n`),
      onEvent: (e) => io.stdout(values.json ? `${JSON.stringify(e)}\n` : describeGrouped(groups, e)),
    });
    const dispose = onInterrupt(() => void sub.close());
    await sub.closed.finally(dispose);
    return 0;
  },
});

/**
 * An event's line; a cluster backup's host parts (`<cluster id>-<n>`) indented beneath it, and the cluster's result
 * followed by one row per host (its phase, its part's state and progress, its error).
 */
export function describeGrouped(groups: ClusterGroups, e: BusEvent): string {
  const part = groups.see(e);
  if (part) return `  ${part.n}. ${describe(e)}\n`;
  if (e.kind === CLUSTER_KIND && e.type === 'result') return `${[describe(e), ...formatClusterRows(groups.rows(e.workflowId))].join('\n')}\n`;
  return `${describe(e)}\n`;
}

export function describe(e: BusEvent): string {
  const head = `${e.at} ${e.host} ${e.kind} ${e.workflowId}${e.resync ? ' (resync)' : ''}`;
  switch (e.type) {
    case 'state':
      return `${head} state ${e.state}${e.error ? ` ${e.error.code}: ${e.error.message}` : ''}`;
    case 'progress': {
      const p = e.progress!;
      const pct = p.totalBytes ? ((p.bytes / p.totalBytes) * 100).toFixed(0) : '?';
      return `${head} progress ${pct}% ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)} files ${p.files}/${p.totalFiles}`;
    }
    case 'result':
      return `${head} result ${e.state}${e.error ? ` ${e.error.code}: ${e.error.message}` : ''}`;
    case 'rejected':
      return `${head} rejected ${e.error?.code}: ${e.error?.message}`;
  }
}
