import { join } from 'node:path';
import type { CqlSession, CqlTarget } from '../cassandra/cql.ts';
import type { Nodetool } from '../cassandra/nodetool.ts';
import type { ServiceControl } from '../cassandra/service.ts';
import type { Logger } from '../log.ts';
import type { Profile } from '../profile.ts';
import type { ObjectStore } from '../storage/types.ts';
import type { Progress } from '../../machines/common.ts';

/** What the restore steps need from the outside world; the composition root builds it, tests fake it. */
export interface RestoreDeps {
  profile: Profile;
  nodetool: Nodetool;
  service: ServiceControl;
  /** A CQL session on the target; without credentials while it runs with AllowAllAuthenticator. */
  cql: (credentials?: CqlTarget['credentials']) => Promise<CqlSession>;
  store: ObjectStore;
  key: Buffer | null;
  log: Logger;
  /** Fault-injection drills: wait this long before each step. */
  stepDelayMs?: number;
  onProgress: (step: string, progress: Progress) => void;
  diskSpace: (path: string) => Promise<{ free: number; total: number }>;
  /** Reads the new superuser password from its file (never logged, never in context). */
  readPassword: () => Promise<string>;
}

/** Where a restore puts things: staging beside the data dir, the old directories beside their live names. */
export function restorePaths(profile: Profile, workflowId: string) {
  const first = profile.dataDirs[0]!;
  const live = [...profile.dataDirs, profile.commitlogDir, profile.savedCachesDir, profile.hintsDir];
  return {
    staging: `${first}.cbr-restore-${workflowId}`,
    moves: live.map((dir) => ({ live: dir, old: `${dir}.cbr-old-${workflowId}` })),
    yaml: profile.cassandraYaml,
    yamlOrig: `${profile.cassandraYaml}.cbr-orig-${workflowId}`,
    stagingParent: join(first, '..'),
  };
}
