import { readFile } from 'node:fs/promises';
import { parseKey } from '../archive/crypto.ts';
import { type BusNotice, type CommandDraft, DEFAULT_OUTAGE_DEADLINE_MS, runCommand } from '../bus/client.ts';
import type { BusEvent } from '../bus/schemas/events.ts';
import { CbrError, fromErrorInfo, isErrorCode } from '../core/errors.ts';
import type { CliIO } from './io.ts';
import { ProgressBar } from './progress.ts';

/** Options of every command that can go over the bus instead of running locally. */
export const busOptions = {
  bus: { type: 'string' },
  host: { type: 'string' },
  prefix: { type: 'string' },
  'signing-key-file': { type: 'string' },
} as const;

/** Options of the commands that follow a workflow over the bus until its result. */
export const followOptions = {
  'bus-outage-deadline': { type: 'string' },
} as const;

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

/** --bus-outage-deadline, else $CBR_BUS_OUTAGE_DEADLINE, else 5 minutes. */
export function outageDeadline(values: BusValues, env: NodeJS.ProcessEnv): number {
  const v = values['bus-outage-deadline'] ?? env['CBR_BUS_OUTAGE_DEADLINE'];
  return v === undefined ? DEFAULT_OUTAGE_DEADLINE_MS : parseDuration(v, '--bus-outage-deadline');
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

export function busPrefix(values: BusValues, env: NodeJS.ProcessEnv): string {
  return values.prefix ?? env['CBR_BUS_PREFIX'] ?? '';
}

export async function signingKey(values: BusValues, env: NodeJS.ProcessEnv): Promise<Buffer | null> {
  const file = values['signing-key-file'] ?? env['CBR_SIGNING_KEY_FILE'];
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
export async function runOverBus(io: CliIO, values: BusValues, draft: Omit<CommandDraft, 'host'>, json: boolean): Promise<BusEvent & { commandId: string }> {
  if (!values.host) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--host is required with --bus');
  const bar = io.isTTY && !json ? new ProgressBar(io.stderr) : null;
  const deadlineMs = outageDeadline(values, io.env);
  const result = await runCommand({
    url: values.bus!,
    prefix: busPrefix(values, io.env),
    draft: { ...draft, host: values.host } as CommandDraft,
    signingKey: await signingKey(values, io.env),
    outageDeadlineMs: deadlineMs,
    onNotice: (n) => io.stderr(`cbr: ${noticeLine(n, deadlineMs)}\n`),
    onEvent: (e) => {
      if (!bar) return;
      if (e.type === 'state' && e.state) bar.step(e.state);
      if (e.type === 'progress' && e.progress) bar.update(e.progress.bytes, e.progress.totalBytes);
    },
  });
  bar?.end();
  if (result.type === 'rejected' || result.state !== 'completed') {
    const err = result.error;
    if (err && isErrorCode(err.code)) throw fromErrorInfo({ ...err, code: err.code });
    throw new CbrError('CBR_ERR_INTERNAL', `command ended ${result.state ?? result.type}`);
  }
  return result;
}
