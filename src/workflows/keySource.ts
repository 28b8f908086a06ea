import { resolve } from 'node:path';
import { CbrError } from '../core/errors.ts';
import type { BackupInput } from '../machines/backup.machine.ts';

/** Where a workflow finds its archive key: a file's path or an environment variable's name, never the key. */
export type KeySource = BackupInput['keySource'];

/**
 * The key source a request names: at most one of a file (resolved against this process's directory; bus payloads
 * carry absolute paths) and an environment variable. `use` is the option prefix the message names (`encrypt`,
 * `decrypt`).
 */
export function keySource(file: string | undefined, env: string | undefined, use: 'encrypt' | 'decrypt'): KeySource {
  if (file && env) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `give one of --${use}-key-file and --${use}-key-env`);
  if (file) return { file: resolve(file) };
  if (env) return { env };
  return null;
}
