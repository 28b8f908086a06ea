import { join } from 'node:path';
import type { CqlSession, CqlTarget } from '../../cassandra/cql.ts';
import type { Profile } from '../../cassandra/profile.ts';
import type { Endpoint } from '../../cassandra/service.ts';
import type { NodeDeps } from '../nodeDeps.ts';

/** The restore steps' dependencies. */
export interface RestoreDeps extends NodeDeps {
  /**
   * A CQL session on the target; without credentials while it runs with AllowAllAuthenticator, and at
   * `endpoint` while it runs on the maintenance configuration.
   */
  cql: (credentials?: CqlTarget['credentials'], endpoint?: Endpoint) => Promise<CqlSession>;
  /** Reads the new superuser password from its file (never logged, never in context). */
  readPassword: () => Promise<string>;
}

/**
 * Where a restore puts things: one staging directory beside each data directory (on its filesystem, so the
 * swap is a rename), the old directories beside their live names.
 */
export function restorePaths(profile: Profile, workflowId: string) {
  const live = [...profile.dataDirs, profile.commitlogDir, profile.savedCachesDir, profile.hintsDir];
  return {
    stagings: profile.dataDirs.map((dir) => ({ live: dir, staging: `${dir}.cbr-restore-${workflowId}`, parent: join(dir, '..') })),
    moves: live.map((dir) => ({ live: dir, old: `${dir}.cbr-old-${workflowId}` })),
    yaml: profile.cassandraYaml,
    yamlOrig: `${profile.cassandraYaml}.cbr-orig-${workflowId}`,
    /** A cluster backup restored into one node: the other hosts' parts, one folder each (`<n>/`), beside the first data directory. */
    parts: `${profile.dataDirs[0]}.cbr-parts-${workflowId}`,
  };
}
