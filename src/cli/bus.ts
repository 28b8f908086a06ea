import { readFile } from 'node:fs/promises';
import { parseKey } from '../archive/crypto.ts';
import { type CommandDraft, runCommand } from '../bus/client.ts';
import type { BusEvent } from '../bus/topology.ts';
import { CbrError, fromErrorInfo, isErrorCode } from '../errors.ts';
import type { CliIO } from './io.ts';
import { ProgressBar } from './progress.ts';

/** Options of every command that can go over the bus instead of running locally. */
export const busOptions = {
  bus: { type: 'string' },
  host: { type: 'string' },
  prefix: { type: 'string' },
  'signing-key-file': { type: 'string' },
} as const;

export type BusValues = { bus?: string | undefined; host?: string | undefined; prefix?: string | undefined; 'signing-key-file'?: string | undefined };

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
  const result = await runCommand({
    url: values.bus!,
    prefix: busPrefix(values, io.env),
    draft: { ...draft, host: values.host } as CommandDraft,
    signingKey: await signingKey(values, io.env),
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
