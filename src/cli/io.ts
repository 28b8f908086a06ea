import { CbrError } from '../core/errors.ts';

/** What a command may touch of the outside world; tests pass their own to run commands in-process. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  isTTY: boolean;
}

export function processIO(): CliIO {
  return {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
    isTTY: Boolean(process.stderr.isTTY),
  };
}

export function printJson(io: CliIO, value: unknown): void {
  io.stdout(`${JSON.stringify(value, null, 2)}\n`);
}

export function requireOption(value: string | undefined, name: string, usage: string): string {
  if (!value) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `${name} is required\nusage: ${usage}`);
  return value;
}
