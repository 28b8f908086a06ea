import { queryStatus } from '../../bus/client.ts';
import type { WorkflowStatus } from '../../bus/schemas/status.ts';
import { CbrError, fromErrorInfo, isErrorCode } from '../../core/errors.ts';
import { busConnectionOptions } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { printJson } from '../io.ts';
import { formatBytes } from '../progress.ts';

export const command = defineCommand('status', {
  summary: "Ask the agents on the bus for workflows' present state: one workflow, or each host's recent ones (read-only).",
  options: {
    host: { type: 'string', placeholder: '<host-id>', description: "ask this host's agent only (default: every agent that answers)" },
    workflow: { type: 'string', placeholder: '<id>', description: "one workflow (default: each host's active ones and those changed in the last 24 h)" },
    limit: { type: 'string', placeholder: '<n>', description: 'at most this many workflows per host, 1..200 (default 200)' },
    'timeout-ms': { type: 'string', placeholder: '<ms>', description: 'how long to wait for answers (default 10000 with --host, else 2000)' },
    ...jsonOption,
    ...busConnectionOptions,
  },
  async run({ values }, io) {
    const url = values.bus;
    const limit = values.limit === undefined ? undefined : Number(values.limit);
    if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1 && limit <= 200))
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--limit must be 1..200');
    const timeoutMs = values['timeout-ms'] === undefined ? undefined : Number(values['timeout-ms']);
    if (timeoutMs !== undefined && !(timeoutMs > 0)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--timeout-ms must be a positive number');
    const replies = await queryStatus({
      url,
      prefix: values.prefix,
      host: values.host,
      workflowId: values.workflow,
      limit,
      ...(timeoutMs ? { timeoutMs } : {}),
    });
    if (replies.length === 0) throw new CbrError('CBR_ERR_BUS_UNAVAILABLE', `no agent${values.host ? ` for host ${values.host}` : ''} answered on the bus`);
    const refused = replies.find((r) => r.error);
    if (refused?.error)
      throw isErrorCode(refused.error.code)
        ? fromErrorInfo({ ...refused.error, code: refused.error.code })
        : new CbrError('CBR_ERR_INTERNAL', refused.error.message);
    const rows = replies.flatMap((r) => r.workflows.map((w) => ({ host: r.host, ...w })));
    if (values.workflow && rows.length === 0) {
      throw new CbrError('CBR_ERR_WORKFLOW_NOT_FOUND', `no agent that answered (${replies.map((r) => r.host).join(', ')}) knows workflow ${values.workflow}`);
    }
    if (values.json)
      printJson(io, values.workflow ? rows[0] : { hosts: replies.map((r) => ({ host: r.host, at: r.at, truncated: r.truncated, workflows: r.workflows })) });
    else for (const w of rows) io.stdout(`${line(w)}\n`);
    return 0;
  },
});

function line(w: WorkflowStatus & { host: string }): string {
  const p = w.progress;
  const progress =
    p && w.status === 'active'
      ? ` ${p.totalBytes ? ((p.bytes / p.totalBytes) * 100).toFixed(0) : '?'}% ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)}`
      : '';
  const error = w.error ? ` ${w.error.code}: ${w.error.message}` : '';
  return `${w.updatedAt} ${w.host} ${w.kind} ${w.workflowId} ${w.state} ${w.status}${progress}${error}`;
}
