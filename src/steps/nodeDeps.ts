import type { CqlSession } from '../cassandra/cql.ts';
import type { Nodetool } from '../cassandra/nodetool.ts';
import type { Profile } from '../cassandra/profile.ts';
import type { ServiceControl } from '../cassandra/service.ts';
import type { Logger } from '../core/log.ts';
import type { Progress } from '../machines/common.ts';
import type { ObjectStore } from '../storage/port.ts';

/** What every step needs of one node and its storage; the composition root builds it, tests fake it. */
export interface NodeDeps {
  profile: Profile;
  nodetool: Nodetool;
  service: ServiceControl;
  store: ObjectStore;
  /** The encryption key, when the archive is (to be) encrypted. */
  key: Buffer | null;
  log: Logger;
  /** Fault-injection drills: wait this long before each step. */
  stepDelayMs?: number;
  /** Fault-injection drills: wait this long before each file an incremental backup stores or its restore fetches. */
  fileDelayMs?: number;
  onProgress: (step: string, progress: Progress) => void;
  /** Free and total bytes of the filesystem holding `path`. */
  diskSpace: (path: string) => Promise<{ free: number; total: number }>;
}

/** The backup steps' dependencies. */
export interface BackupDeps extends NodeDeps {
  /** A CQL session as the profile's user (the real one is shared by the workflow's steps: see sharedCql.ts). */
  cql: () => Promise<CqlSession>;
  /** Releases what the steps shared (the CQL connection) once the workflow has ended; absent when nothing is. */
  dispose?: () => Promise<void>;
  /**
   * Where the host's cache of snapshot file hashes for incremental backups lives (catalog/hashCache.ts), and
   * whether its entries are trusted (CBR_REHASH=1: not). Absent: every file is read and hashed, nothing cached.
   */
  hashCache?: { home: string; trust: boolean };
}
