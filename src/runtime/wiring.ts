import { readFile, statfs } from 'node:fs/promises';
import { loadKey } from '../archive/crypto.ts';
import { connectCql } from '../cassandra/cql.ts';
import { createNodetool, jmxIdleMs } from '../cassandra/nodetool.ts';
import { loadCredentials, loadProfile } from '../cassandra/profile.ts';
import { createSystemdControl } from '../cassandra/service.ts';
import { keptCql, sharedCql } from '../cassandra/sharedCql.ts';
import { CbrError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { cbrHome } from '../core/paths.ts';
import type { BackupInput } from '../machines/backup.machine.ts';
import type { Progress } from '../machines/common.ts';
import type { RestoreInput } from '../machines/restore.machine.ts';
import { createSandboxControl } from '../sandbox/serviceControl.ts';
import type { BackupDeps } from '../steps/nodeDeps.ts';
import type { RestoreDeps } from '../steps/restore/restoreDeps.ts';
import { openStore } from '../storage/open.ts';

/**
 * The composition root's wiring: real dependencies built from a workflow's (persisted) input alone, so a
 * workflow resumed after a crash gets the same ones.
 */
export interface DepsOptions {
  env: NodeJS.ProcessEnv;
  log: Logger;
  onProgress: (step: string, p: Progress) => void;
  stepDelayMs?: number;
  /**
   * Keep the node's CQL session after the workflow, for the next one (the agent: --jmx-idle, as its JMX client);
   * otherwise it closes when the workflow ends, so a CLI run exits at once.
   */
  keepSessions?: boolean;
}

async function nodeDeps(input: BackupInput | RestoreInput, opts: DepsOptions) {
  const profile = await loadProfile(input.profilePath);
  return {
    profile,
    nodetool: createNodetool(profile, opts.env),
    service: profile.service.kind === 'sandbox' ? createSandboxControl(profile) : createSystemdControl(profile),
    store: openStore(input.storage),
    key: input.keySource ? await loadKey(input.keySource, opts.env) : null,
    log: opts.log,
    onProgress: opts.onProgress,
    stepDelayMs: opts.stepDelayMs ?? 0,
    // A drill for kill tests: widens the window in which a process dies with some files moved and some not.
    fileDelayMs: Number(opts.env['CBR_DRILL_FILE_DELAY_MS'] ?? 0) || 0,
    diskSpace: async (path: string) => {
      const s = await statfs(path);
      return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
    },
  };
}

export async function buildBackupDeps(input: BackupInput, opts: DepsOptions): Promise<BackupDeps> {
  const common = await nodeDeps(input, opts);
  const { cql } = common.profile;
  // The steps of one backup share a connection (verifyNode, then takeSnapshot); the runtime disposes of it when
  // the workflow ends.
  const connect = async () => connectCql({ ...cql, credentials: await loadCredentials(cql.credentialsFile) });
  const shared = opts.keepSessions
    ? keptCql(JSON.stringify([cql.host, cql.port, cql.localDc, cql.credentialsFile ?? null]), connect, jmxIdleMs(opts.env))
    : sharedCql(connect);
  return {
    ...common,
    cql: shared.open,
    dispose: shared.dispose,
    // CBR_REHASH=1: read and hash every snapshot file again, whatever the cache remembers (and rewrite the cache).
    hashCache: { home: cbrHome(opts.env), trust: !/^(1|true|yes)$/i.test(opts.env['CBR_REHASH'] ?? '') },
  };
}

export async function buildRestoreDeps(input: RestoreInput, opts: DepsOptions): Promise<RestoreDeps> {
  const common = await nodeDeps(input, opts);
  return {
    ...common,
    cql: (credentials, endpoint) => connectCql({ ...common.profile.cql, ...endpoint, credentials }),
    readPassword: async () => {
      try {
        return (await readFile(input.passwordFile, 'utf8')).replace(/\r?\n$/, '');
      } catch (err) {
        throw new CbrError('CBR_ERR_CONFIG', `cannot read password file ${input.passwordFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    },
  };
}
