/**
 * The one error catalogue. Every failure cbr reports carries one of these codes; codes travel
 * unchanged in events, CLI output (`--json`) and exit statuses. docs/errors.md mirrors this table
 * and test/unit/errors.test.ts keeps the two in step.
 */
export const ERRORS = {
  CBR_ERR_INVALID_ARGUMENT: { exit: 2, retryable: false, summary: 'A command-line argument or command field is missing or malformed.' },
  CBR_ERR_CONFIG: { exit: 2, retryable: false, summary: 'A profile or configuration file is missing, unreadable or invalid.' },
  CBR_ERR_JAVA_NOT_FOUND: { exit: 3, retryable: false, summary: 'No Java 11/17 runtime was found to run Cassandra or nodetool.' },
  CBR_ERR_CASSANDRA_FETCH_FAILED: { exit: 3, retryable: true, summary: 'Maven could not fetch the Cassandra jars.' },
  CBR_ERR_SANDBOX_EXISTS: { exit: 4, retryable: false, summary: 'A sandbox instance with this name already exists.' },
  CBR_ERR_SANDBOX_NOT_FOUND: { exit: 4, retryable: false, summary: 'No sandbox instance has this name.' },
  CBR_ERR_SANDBOX_START_FAILED: { exit: 5, retryable: true, summary: 'The Cassandra process exited or did not answer CQL in time.' },
  CBR_ERR_SERVICE_CONTROL_FAILED: { exit: 5, retryable: true, summary: 'Stopping or starting the Cassandra service failed.' },
  CBR_ERR_NODE_NOT_RUNNING: { exit: 5, retryable: true, summary: 'The Cassandra node is not running or does not answer.' },
  CBR_ERR_NODETOOL_FAILED: { exit: 6, retryable: true, summary: 'A JMX operation on the node failed (through the JMX client or nodetool).' },
  CBR_ERR_SNAPSHOT_FAILED: { exit: 6, retryable: true, summary: 'Taking, listing or clearing a snapshot failed.' },
  CBR_ERR_BACKUP_UNRESTORABLE: {
    exit: 6,
    retryable: false,
    summary: 'The snapshot holds a file a restore would refuse; the backup stopped before anything was recorded.',
  },
  CBR_ERR_CQL_FAILED: { exit: 6, retryable: true, summary: 'A CQL statement failed or the node could not be reached over CQL.' },
  CBR_ERR_INSUFFICIENT_SPACE: { exit: 7, retryable: false, summary: 'Free disk space is below the configured threshold.' },
  CBR_ERR_STORAGE_FAILED: { exit: 8, retryable: true, summary: 'Object storage failed to store, read or delete an object.' },
  CBR_ERR_OBJECT_EXISTS: { exit: 8, retryable: false, summary: 'A create-only write found the object already in storage.' },
  CBR_ERR_OBJECT_NOT_FOUND: { exit: 8, retryable: false, summary: 'The object does not exist in storage.' },
  CBR_ERR_BACKUP_NOT_FOUND: { exit: 9, retryable: false, summary: 'No backup has this id.' },
  CBR_ERR_BACKUP_EXISTS: {
    exit: 9,
    retryable: false,
    summary: 'The backup id is taken: storage holds objects under it or the node has a snapshot with that tag.',
  },
  CBR_ERR_PRUNE_POLICY_INVALID: {
    exit: 2,
    retryable: false,
    summary: 'The retention policy is malformed or keeps nothing (backup-prune needs at least one --keep-* option); nothing was deleted.',
  },
  CBR_ERR_CLUSTER_PART: {
    exit: 9,
    retryable: false,
    summary: "The backup is one host's part of a cluster backup: delete or prune the cluster backup, which drops its parts together.",
  },
  CBR_ERR_BACKUP_NOT_COMPLETE: { exit: 9, retryable: false, summary: 'The backup exists but is not COMPLETED, so it cannot be restored.' },
  CBR_ERR_RECORD_INVALID: { exit: 10, retryable: false, summary: 'The backup record fails its schema or its authentication (MAC); it is not trusted.' },
  CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH: {
    exit: 10,
    retryable: false,
    summary: 'The stored object does not match the checksum in its record (truncated or altered).',
  },
  CBR_ERR_ARCHIVE_CORRUPT: { exit: 10, retryable: false, summary: 'The archive could not be decompressed or parsed.' },
  CBR_ERR_ARCHIVE_HOSTILE_ENTRY: {
    exit: 10,
    retryable: false,
    summary: 'The archive holds an entry that may not be unpacked (absolute path, "..", link, device, or outside the data-dir layout).',
  },
  CBR_ERR_DECRYPT_FAILED: { exit: 10, retryable: false, summary: 'Decryption failed: wrong key, or the archive was altered.' },
  CBR_ERR_KEY_REQUIRED: { exit: 10, retryable: false, summary: 'The backup is encrypted and no key was given.' },
  CBR_ERR_KEY_INVALID: {
    exit: 2,
    retryable: false,
    summary:
      'The key file is unreadable or does not hold a 256-bit key (64 hex characters, base64 of 32 bytes, or 32 random bytes; never a passphrase): make one with `openssl rand -hex 32`.',
  },
  CBR_ERR_VERIFY_MISSING: { exit: 16, retryable: false, summary: 'backup-verify: objects the backup record names are missing from storage.' },
  CBR_ERR_VERIFY_CORRUPT: {
    exit: 17,
    retryable: false,
    summary: 'backup-verify: a stored object has another size, fails authentication or decompression, or its content differs from the record.',
  },
  CBR_ERR_TARGET_NOT_EMPTY: { exit: 11, retryable: false, summary: 'The restore target holds user data; pass --force to replace it.' },
  CBR_ERR_RESTORE_VERIFY_FAILED: { exit: 11, retryable: false, summary: 'The restored node did not answer with the new password or lacks a keyspace.' },
  CBR_ERR_IMPORT_FAILED: {
    exit: 11,
    retryable: false,
    summary: "Restoring a cluster backup into one node: nodetool import refused another host's SSTables (the restore rolls back).",
  },
  CBR_ERR_DRILL_FAILED: {
    exit: 16,
    retryable: false,
    summary: 'A restore drill restored the backup, but a check failed: a keyspace or table missing, a row count or a --check answer differing.',
  },
  CBR_ERR_WORKFLOW_NOT_FOUND: { exit: 12, retryable: false, summary: 'No workflow has this id.' },
  CBR_ERR_WORKFLOW_CONFLICT: { exit: 12, retryable: false, summary: 'Another workflow holds the resource (same backup id or same target).' },
  CBR_ERR_CLUSTER_BACKUP_FAILED: {
    exit: 12,
    retryable: true,
    summary: 'A host of a cluster backup failed; every host dropped its part. The message names each host and its own error.',
  },
  CBR_ERR_CLUSTER_INCOMPLETE: {
    exit: 12,
    retryable: false,
    summary:
      'The hosts of a cluster backup do not cover every node of the ring (a --hosts subset, or two hosts on one node); a restore would miss rows, so it is refused.',
  },
  CBR_ERR_CLUSTER_PART_MISMATCH: {
    exit: 12,
    retryable: false,
    summary: "A cluster backup part does not match its ring entry (another cluster's name, other tokens, or made before this run); it is not recorded.",
  },
  CBR_ERR_CLUSTER_RECORD_INVALID: {
    exit: 12,
    retryable: false,
    summary: 'The cluster record would not read back (schema over 16 MiB, a name too long, ...); it is not written and the cluster backup fails.',
  },
  CBR_ERR_CLUSTER_RESTORE_FAILED: {
    exit: 11,
    retryable: true,
    summary: 'A node of a restore as a new cluster failed; every target node was rolled back. The message names each node and its own error.',
  },
  CBR_ERR_HOLD_EXPIRED: {
    exit: 12,
    retryable: true,
    summary: 'A held snapshot (a cluster backup part) waited past its hold timeout without a release; the host cleared it and the part failed.',
  },
  CBR_ERR_HOST_TIMEOUT: {
    exit: 12,
    retryable: true,
    summary: "A host of a cluster backup did not answer, or did not take its snapshot, within the coordinator's deadline.",
  },
  CBR_ERR_COMMAND_INVALID: {
    exit: 14,
    retryable: false,
    summary: 'A bus command is malformed, unknown, oversized or addressed to another host; it was dead-lettered.',
  },
  CBR_ERR_COMMAND_UNAUTHORIZED: {
    exit: 14,
    retryable: false,
    summary:
      'While command signing is configured, a bus command lacks a valid signature (HMAC over the command and its bus prefix), is outside the 5-minute window, or replays a command id this agent already took; it was dead-lettered.',
  },
  CBR_ERR_BUS_UNAVAILABLE: { exit: 15, retryable: true, summary: 'The message broker cannot be reached or refused the connection.' },
  CBR_ERR_OUTCOME_UNKNOWN: {
    exit: 75,
    retryable: true,
    summary:
      'The command was sent but the broker stayed away past the deadline: the workflow may have completed or failed; ask its agent again (cbr status --workflow ID).',
  },
  CBR_ERR_RUN_LOST: {
    exit: 13,
    retryable: true,
    summary:
      'A verify, prune or drill the CLI waited for on the bus is no longer run by its agent: the agent died or restarted mid-run (its restart reports each run it lost, or its status no longer knows one seen running); no other result will come: run it again.',
  },
  CBR_ERR_ABORTED: { exit: 13, retryable: true, summary: 'The step was aborted (shutdown or cancel).' },
  CBR_ERR_WORKER_FAILED: {
    exit: 70,
    retryable: true,
    summary: 'A worker thread (the restore fetch) crashed or exited mid-file; nothing unverified was kept, and the restore can be resumed.',
  },
  CBR_ERR_INTERNAL: { exit: 70, retryable: false, summary: 'An unexpected internal error; the message says where.' },
} as const satisfies Record<string, { exit: number; retryable: boolean; summary: string }>;

export type ErrorCode = keyof typeof ERRORS;

/** The JSON-safe shape of an error, as kept in machine context and sent in events. */
export interface ErrorInfo {
  code: ErrorCode;
  message: string;
  retryable: boolean;
}

export class CbrError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  /** Machine-readable context the CLI adds to its `--json` error (e.g. the workflow id of an unknown outcome). */
  readonly details: Record<string, string> | undefined;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown; details?: Record<string, string> }) {
    super(message ?? ERRORS[code].summary, options);
    this.name = 'CbrError';
    this.code = code;
    this.retryable = ERRORS[code].retryable;
    this.details = options?.details;
  }

  get exitCode(): number {
    return ERRORS[this.code].exit;
  }

  toJSON(): ErrorInfo {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERRORS, value);
}

/** Any thrown value as ErrorInfo; unknown errors become CBR_ERR_INTERNAL with their message. */
export function toErrorInfo(err: unknown, fallback: ErrorCode = 'CBR_ERR_INTERNAL'): ErrorInfo {
  if (err instanceof CbrError) return err.toJSON();
  if (err && typeof err === 'object' && 'name' in err && err.name === 'AbortError') {
    return { code: 'CBR_ERR_ABORTED', message: 'aborted', retryable: true };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: fallback, message, retryable: ERRORS[fallback].retryable };
}

export function fromErrorInfo(info: ErrorInfo): CbrError {
  return new CbrError(info.code, info.message);
}
