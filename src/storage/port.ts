import type { Readable } from 'node:stream';

/**
 * The object storage port. Drivers: local filesystem (the embedded default); Swift and S3 fit the same
 * shape (a put of unknown length becomes a multi-part/segmented upload inside the driver).
 * Every call honours its AbortSignal. A put that fails or is aborted leaves no object behind.
 */
export interface ObjectStore {
  readonly description: string;
  /** `ifAbsent`: create only; an existing object is left as it is and the put fails with CBR_ERR_OBJECT_EXISTS. */
  put(key: string, body: Readable, opts?: { signal?: AbortSignal; contentType?: string; ifAbsent?: boolean }): Promise<{ size: number }>;
  get(key: string, opts?: { signal?: AbortSignal }): Promise<Readable>;
  head(key: string, opts?: { signal?: AbortSignal }): Promise<ObjectInfo | null>;
  list(prefix?: string, opts?: { signal?: AbortSignal }): AsyncIterable<ObjectInfo>;
  /** Idempotent: deleting a missing object is not an error. */
  delete(key: string, opts?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Removes every object under `prefix` and whatever the driver keeps for them (Swift segments of uploads that
   * died, half-written local files). Idempotent; returns how many things it removed.
   */
  purge(prefix: string, opts?: { signal?: AbortSignal }): Promise<number>;
}

export interface ObjectInfo {
  key: string;
  size: number;
  modified: string;
}

/** Plain-JSON storage settings, kept in workflow context so a resumed workflow can reconnect. No secrets here:
 * credentials stay in files the settings name. */
export type StorageConfig = LocalConfig | SwiftConfig | S3Config;

export interface LocalConfig {
  driver: 'local';
  root: string;
  container: string;
}

export interface SwiftConfig {
  driver: 'swift';
  authUrl: string;
  /** 1: tempauth/swauth (X-Auth-User/X-Auth-Key); 3: Keystone v3 password auth. */
  authVersion: 1 | 3;
  /** JSON file {"username","password"} (mode 0600); for v1 the username is "account:user". */
  credentialsFile: string;
  container: string;
  /** Keystone v3 only. */
  projectName?: string;
  userDomainName?: string;
  projectDomainName?: string;
  region?: string;
  interface?: 'public' | 'internal' | 'admin';
  /** Bytes per segment (default 1 GiB). */
  segmentSize?: number;
  /** Where segments are spooled (default `$CBR_HOME/spool`; never the OS temp dir, often tmpfs or small). */
  spoolDir?: string;
  /** Attempts per request on 5xx and network errors (default 5). */
  attempts?: number;
  /** After those attempts, how long (ms) a request keeps being tried while the store keeps failing (default 2 minutes). */
  outageMs?: number;
}

export interface S3Config {
  driver: 's3';
  /** The bucket; cbr's "container". */
  container: string;
  region: string;
  /** For S3-compatible stores, e.g. http://127.0.0.1:8080 (Swift's s3api). */
  endpoint?: string;
  forcePathStyle?: boolean;
  /** JSON file {"accessKeyId","secretAccessKey"} (mode 0600). */
  credentialsFile: string;
  /** Bytes per part (default 16 MiB; S3's minimum is 5 MiB, at most 10,000 parts). */
  partSize?: number;
}

export const DEFAULT_CONTAINER = 'database_backups';

/** Object keys are `<backup id>/<name>`: ASCII, no traversal. */
export const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;
