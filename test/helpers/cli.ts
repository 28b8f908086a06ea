import type { CliIO } from '../../src/cli/io.ts';
import { main } from '../../src/cli/main.ts';
import { testEnv } from './env.ts';

export interface CliResult {
  code: number;
  out: string;
  err: string;
  json: () => Record<string, unknown> & { error?: { code: string; message: string } };
}

/** Runs a cbr command in-process, the way `npx cbr ...` would, and captures its output. */
export async function cbr(args: string[], env: NodeJS.ProcessEnv = testEnv): Promise<CliResult> {
  let out = '';
  let err = '';
  const io: CliIO = {
    stdout: (t) => {
      out += t;
    },
    stderr: (t) => {
      err += t;
    },
    env,
    isTTY: false,
  };
  const code = await main(args, io);
  return { code, out, err, json: () => JSON.parse(out) };
}
