import { type ParseArgsConfig, parseArgs } from 'node:util';
import { CbrError } from '../core/errors.ts';

/** What a command may touch of the outside world; tests pass their own to run commands in-process. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  isTTY: boolean;
}

export interface Command {
  /** One line for `cbr --help`. */
  summary: string;
  usage: string;
  run(argv: string[], io: CliIO): Promise<number>;
}

export function processIO(): CliIO {
  return {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
    isTTY: Boolean(process.stderr.isTTY),
  };
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with cbr's error: unknown or malformed options are CBR_ERR_INVALID_ARGUMENT. */
export function parse<O extends Options>(argv: string[], options: O, usage: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `${(err as Error).message}\nusage: ${usage}`);
  }
}

export function printJson(io: CliIO, value: unknown): void {
  io.stdout(`${JSON.stringify(value, null, 2)}\n`);
}

export function requireOption(value: string | undefined, name: string, usage: string): string {
  if (!value) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `${name} is required\nusage: ${usage}`);
  return value;
}
