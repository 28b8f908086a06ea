import { watchEvents } from '../../bus/client.ts';
import type { BusEvent } from '../../bus/schemas/events.ts';
import { busOptions, busPrefix, noticeLine } from '../bus.ts';
import { type Command, parse } from '../io.ts';
import { formatBytes } from '../progress.ts';

const usage = 'cbr watch [--bus amqp://127.0.0.1:5672] [--host H] [--workflow W] [--prefix P] [--json]';

export const command: Command = {
  summary: 'Print workflow events from the bus as they come (state changes, progress, results, rejections); survives broker outages.',
  usage,
  async run(argv, io) {
    const { values } = parse(argv, { ...busOptions, workflow: { type: 'string' }, json: { type: 'boolean', default: false } }, usage);
    const url = values.bus ?? io.env['CBR_BUS_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
    const sub = await watchEvents({
      url,
      prefix: busPrefix(values, io.env),
      host: values.host,
      workflow: values.workflow,
      // The present state first (from the agents), then live events; after a broker outage it reconnects and
      // asks the agents again, so what happened meanwhile is printed too (marked resync).
      reconnect: true,
      onNotice: (n) => io.stderr(`cbr watch: ${noticeLine(n)}\n`),
      onEvent: (e) => io.stdout(values.json ? `${JSON.stringify(e)}\n` : `${describe(e)}\n`),
    });
    const stop = () => void sub.close();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    await sub.closed;
    return 0;
  },
};

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
