import { join } from 'node:path';
import type { CqlSession, CqlTarget } from '../cassandra/cql.ts';
import type { Profile } from '../profile.ts';
import type { NodeDeps } from './deps.ts';

/** The restore steps' dependencies. */
export interface RestoreDeps extends NodeDeps {
  /** A CQL session on the target; without credentials while it runs with AllowAllAuthenticator. */
  cql: (credentials?: CqlTarget['credentials']) => Promise<CqlSession>;
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
