import type { Nodetool } from '../cassandra/nodetool.ts';
import type { CqlSession } from '../cassandra/cql.ts';
import type { ServiceControl } from '../cassandra/service.ts';
import type { Logger } from '../log.ts';
import type { Profile } from '../profile.ts';
import type { ObjectStore } from '../storage/types.ts';
import type { Progress } from '../../machines/common.ts';

/** What the backup steps need from the outside world; the composition root builds it, tests fake it. */
export interface BackupDeps {
  profile: Profile;
  nodetool: Nodetool;
  service: ServiceControl;
  /** A CQL session as the profile's user. */
  cql: () => Promise<CqlSession>;
  store: ObjectStore;
  /** The encryption key, when the backup is encrypted. */
  key: Buffer | null;
  log: Logger;
  /** Fault-injection drills: wait this long before each step. */
  stepDelayMs?: number;
  onProgress: (step: string, progress: Progress) => void;
  /** Free and total bytes of the filesystem holding `path`. */
  diskSpace: (path: string) => Promise<{ free: number; total: number }>;
}
