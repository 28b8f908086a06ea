/**
 * The names cbr gives or takes that travel between processes: in storage keys, bus routing keys, file names and
 * CQL. One pattern each, so the CLI, the bus, the catalog and the record schema can never disagree on what is valid.
 */

/** Backup, workflow and command ids (a backup id is its workflow's id): storage prefixes, routing keys, snapshot tags. */
export const ID_PATTERN = '[A-Za-z0-9][A-Za-z0-9_-]{0,63}';
export const ID_RE = new RegExp(`^${ID_PATTERN}$`);

/** Instance names (a sandbox, the instance a restore creates): folder and file names, the default cluster_name. */
export const INSTANCE_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,47}$/;

/** A Cassandra role name cbr writes into CQL unquoted (the restore's superuser). */
export const ROLE_RE = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;

/** Keyspaces Cassandra makes itself: never user data, always in a backup (schema and roles live there). */
export const SYSTEM_KEYSPACES: ReadonlySet<string> = new Set([
  'system',
  'system_schema',
  'system_auth',
  'system_distributed',
  'system_traces',
  'system_views',
  'system_virtual_schema',
]);
