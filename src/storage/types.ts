import type { Readable } from 'node:stream';
import type { S3Config } from './s3.ts';
import type { SwiftConfig } from './swift.ts';

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
export type StorageConfig = { driver: 'local'; root: string; container: string } | SwiftConfig | S3Config;

export const DEFAULT_CONTAINER = 'database_backups';

/** Object keys are `<backup id>/<name>`: ASCII, no traversal. */
export const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;
