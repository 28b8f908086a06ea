import { readFile } from 'node:fs/promises';
import { parseKey } from '../archive/crypto.ts';
import type { CommandDraft } from '../bus/client.ts';
import { DEFAULT_OUTAGE_DEADLINE_MS } from '../bus/outage.ts';
import type { BusEvent } from '../bus/schemas/events.ts';
import type { BusNotice } from '../bus/subscriber.ts';
import { CbrError, fromErrorInfo, isErrorCode } from '../core/errors.ts';
import { optionGroup } from './command.ts';
import type { CliIO } from './io.ts';
import { ProgressBar } from './progress.ts';

/** The broker a command talks to when neither --bus nor $CBR_BUS_URL names one: RabbitMQ's defaults on this host. */
export const DEFAULT_BUS_URL = 'amqp://guest:guest@127.0.0.1:5672';

/** The bus option groups share it: agents, clients and the web view on one prefix see each other. */
const prefix = {
  type: 'string',
  placeholder: '<prefix>',
  env: 'CBR_BUS_PREFIX',
  default: '',
  description: 'the prefix of the exchange and queue names (several deployments on one broker)',
} as const;

/** Commands that listen to the bus (agent, status, watch, ui): the broker, defaulting to this host's. */
export const busConnectionOptions = optionGroup('bus options', {
  bus: {
    type: 'string',
    placeholder: '<url>',
    env: 'CBR_BUS_URL',
    default: DEFAULT_BUS_URL,
    description: 'the broker, amqp[s]://user:password@host:port (printed with the password hidden)',
  },
  prefix,
});

/** Commands that run on a host's agent over the bus when --bus is given, and here otherwise. */
export const busOptions = optionGroup('bus options', {
  bus: { type: 'string', placeholder: '<url>', description: "run on a host's agent over this broker instead of here" },
  host: { type: 'string', placeholder: '<host-id>', description: 'the host id of the agent that runs it (required with --bus)' },
  prefix,
  'signing-key-file': {
    type: 'string',
    placeholder: '<file>',
    env: 'CBR_SIGNING_KEY_FILE',
    description: "sign the command with this key (the agents' --signing-key-file)",
  },
});

/** Commands that follow their workflow over the bus until its result. */
export const followOptions = optionGroup('bus options', {
  'bus-outage-deadline': {
    type: 'string',
    placeholder: '<duration>',
    env: 'CBR_BUS_OUTAGE_DEADLINE',
    description: `how long the broker may stay away before the outcome is reported unknown (exit 75), e.g. 90s, 5m (default ${DEFAULT_OUTAGE_DEADLINE_MS / 60_000}m)`,
  },
});

export type BusValues = {
  bus?: string | undefined;
  host?: string | undefined;
  prefix?: string | undefined;
  'signing-key-file'?: string | undefined;
  'bus-outage-deadline'?: string | undefined;
};

/** `300`, `300s`, `5m`, `1h`, `500ms` (a bare number is seconds). */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `${what} must be a duration like 300s, 5m or 500ms (got ${JSON.stringify(text)})`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * unit);
}

/** --bus-outage-deadline, else its environment variable (for callers that did not parse options), else 5 minutes. */
export function outageDeadline(values: BusValues, env: NodeJS.ProcessEnv): number {
  const v = values['bus-outage-deadline'] ?? env[followOptions['bus-outage-deadline'].env];
  return v === undefined ? DEFAULT_OUTAGE_DEADLINE_MS : parseDuration(v, '--bus-outage-deadline');
}

/**
 * A verify, prune or drill runs beside the agent's workflows and is not persisted: an agent that dies mid-run never
 * answers. The CLI asks the agent every CBR_BUS_LIVENESS_MS (default 10 s) whether it still runs it (runCommand).
 */
export function livenessFor(type: string, env: NodeJS.ProcessEnv): { everyMs: number } | undefined {
  if (type !== 'backup.verify' && type !== 'backup.prune' && type !== 'backup.drill') return undefined;
  const ms = Number(env['CBR_BUS_LIVENESS_MS'] ?? 10_000);
  return { everyMs: Number.isFinite(ms) && ms >= 100 ? ms : 10_000 };
}

/** One line for the operator (stderr) about the connection of a bus subscriber. */
export function noticeLine(n: BusNotice, deadlineMs?: number): string {
  switch (n.type) {
    case 'disconnected':
      return `lost the broker (${n.error}); reconnecting${deadlineMs === undefined ? '' : `, for up to ${Math.round(deadlineMs / 1000)} s before the outcome is reported unknown`}`;
    case 'reconnected':
      return `reconnected to the broker after ${(n.downMs / 1000).toFixed(1)} s; asking the agents what was missed`;
    case 'resynchronised':
      return `${n.host} answered the status query (${n.workflows} workflow${n.workflows === 1 ? '' : 's'})`;
    case 'no-agent':
      return `no agent${n.host === '*' ? '' : ` for ${n.host}`} listens on the bus yet; its events will come when it is back`;
  }
}

/** The key in --signing-key-file (or $CBR_SIGNING_KEY_FILE, applied by the parser), or null for unsigned. */
export async function signingKey(file: string | undefined): Promise<Buffer | null> {
  if (!file) return null;
  let raw: Buffer;
  try {
    raw = await readFile(file);
  } catch (err) {
    throw new CbrError('CBR_ERR_KEY_INVALID', `cannot read signing key file ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parseKey(raw, file);
}

/**
 * Publishes a command to a host's agent and follows its events: a progress bar on a TTY, the result at the end.
 * Exit 0 on success; on failure the coded error of the workflow (or of the rejection) is thrown.
 */
export async function runOverBus(
  io: CliIO,
  values: BusValues,
  draft: Omit<CommandDraft, 'host'>,
  json: boolean,
  /** Shown a failed result event before its error is thrown (a failed drill's checks, say). */
  onFailed?: (result: BusEvent) => void,
): Promise<BusEvent & { commandId: string }> {
  if (!values.host) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--host is required with --bus');
  const bar = io.isTTY && !json ? new ProgressBar(io.stderr) : null;
  const deadlineMs = outageDeadline(values, io.env);
  // The AMQP client loads only for a command that goes over the bus: a local run does not hold it.
  const { runCommand } = await import('../bus/client.ts');
  const result = await runCommand({
    url: values.bus!,
    prefix: values.prefix ?? '',
    draft: { ...draft, host: values.host } as CommandDraft,
    signingKey: await signingKey(values['signing-key-file']),
    outageDeadlineMs: deadlineMs,
    ...(livenessFor(draft.type, io.env) ? { liveness: livenessFor(draft.type, io.env)! } : {}),
    onNotice: (n) => io.stderr(`cbr: ${noticeLine(n, deadlineMs)}\n`),
    onEvent: (e) => {
      if (!bar) return;
      if (e.type === 'state' && e.state) bar.step(e.state);
      if (e.type === 'progress' && e.progress) bar.update(e.progress.bytes, e.progress.totalBytes);
    },
  });
  bar?.end();
  if (result.type === 'rejected' || result.state !== 'completed') {
    if (result.type === 'result') onFailed?.(result);
    const err = result.error;
    if (err && isErrorCode(err.code)) throw fromErrorInfo({ ...err, code: err.code });
    throw new CbrError('CBR_ERR_INTERNAL', `command ended ${result.state ?? result.type}`);
  }
  return result;
}
