import { statfs } from 'node:fs/promises';
import { loadKey } from '../archive/crypto.ts';
import { connectCql } from '../cassandra/cql.ts';
import { createNodetool } from '../cassandra/nodetool.ts';
import { createServiceControl } from '../cassandra/service.ts';
import type { Logger } from '../log.ts';
import { loadCredentials, loadProfile } from '../profile.ts';
import type { BackupDeps } from '../steps/deps.ts';
import { openStore } from '../storage/index.ts';
import type { BackupInput } from '../../machines/backup.machine.ts';
import type { Progress } from '../../machines/common.ts';

/** Builds the real dependencies of a backup from its (persisted) input, so a resumed workflow gets the same ones. */
export async function buildBackupDeps(
  input: BackupInput,
  opts: { env: NodeJS.ProcessEnv; log: Logger; onProgress: (step: string, p: Progress) => void; stepDelayMs?: number },
): Promise<BackupDeps> {
  const profile = await loadProfile(input.profilePath);
  const key = input.keySource ? await loadKey(input.keySource, opts.env) : null;
  return {
    profile,
    nodetool: createNodetool(profile, opts.env),
    service: createServiceControl(profile),
    cql: async () => connectCql({ ...profile.cql, credentials: await loadCredentials(profile.cql.credentialsFile) }),
    store: openStore(input.storage),
    key,
    log: opts.log,
    onProgress: opts.onProgress,
    stepDelayMs: opts.stepDelayMs ?? 0,
    diskSpace: async (path) => {
      const s = await statfs(path);
      return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
    },
  };
}
