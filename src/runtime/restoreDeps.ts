import { readFile, statfs } from 'node:fs/promises';
import { loadKey } from '../archive/crypto.ts';
import { connectCql } from '../cassandra/cql.ts';
import { createNodetool } from '../cassandra/nodetool.ts';
import { createServiceControl } from '../cassandra/service.ts';
import { CbrError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { loadProfile } from '../profile.ts';
import type { RestoreDeps } from '../steps/restoreDeps.ts';
import { openStore } from '../storage/index.ts';
import type { RestoreInput } from '../../machines/restore.machine.ts';
import type { Progress } from '../../machines/common.ts';

/** Builds the real dependencies of a restore from its (persisted) input. */
export async function buildRestoreDeps(
  input: RestoreInput,
  opts: { env: NodeJS.ProcessEnv; log: Logger; onProgress: (step: string, p: Progress) => void; stepDelayMs?: number },
): Promise<RestoreDeps> {
  const profile = await loadProfile(input.profilePath);
  const key = input.keySource ? await loadKey(input.keySource, opts.env) : null;
  return {
    profile,
    nodetool: createNodetool(profile, opts.env),
    service: createServiceControl(profile),
    cql: (credentials) => connectCql({ ...profile.cql, credentials }),
    store: openStore(input.storage),
    key,
    log: opts.log,
    onProgress: opts.onProgress,
    stepDelayMs: opts.stepDelayMs ?? 0,
    diskSpace: async (path) => {
      const s = await statfs(path);
      return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
    },
    readPassword: async () => {
      try {
        return (await readFile(input.passwordFile, 'utf8')).replace(/\r?\n$/, '');
      } catch (err) {
        throw new CbrError('CBR_ERR_CONFIG', `cannot read password file ${input.passwordFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    },
  };
}
