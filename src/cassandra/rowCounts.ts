import { SYSTEM_KEYSPACES } from '../core/ids.ts';
import type { CqlSession } from './cql.ts';
import type { SnapshotFile } from './layout.ts';

/**
 * Per-table row counts of a snapshot, recorded at backup time so a restore drill can compare what the restored
 * node serves with what was backed up.
 *
 * Method: `SELECT count(*)` over CQL right after the snapshot, bracketed by the table's local write counter
 * (`system_views.local_write_latency.count`, incremented after each mutation is in the memtable). The count
 * reads memtable and SSTables, the snapshot holds what was flushed; when no write reached the table between
 * the first reading (before the snapshot's flush) and the second (after the count), the count is exactly the
 * live rows of the snapshot. A table written to in between is recorded without a count, saying why: a number
 * that might be off is not recorded as exact. Counting scans the table, so only tables whose snapshot holds at
 * most `maxDataBytes` of Data.db are counted (the rest say so). On a node with peers a CQL count spans the
 * cluster while the snapshot holds this node's replicas: no counts there.
 */
export interface TableCount {
  keyspace: string;
  table: string;
  /** Live CQL rows of the snapshot, exact; null when not counted (see note). */
  rows: number | null;
  /** Why rows is null. */
  note?: string;
  /**
   * The table's `default_time_to_live` in seconds, when it has one: its rows expire, so a drill later finds at
   * most `rows` of them (compared with <=). Rows written `USING TTL` into a table without a default are not seen here.
   */
  defaultTtl?: number;
}

/** Tables whose snapshot holds more Data.db bytes than this are not counted (a count scans the table). */
export const COUNT_MAX_DATA_BYTES = 64 * 1024 * 1024;

const IDENT = /^[A-Za-z0-9_]{1,48}$/;

export type WriteCounts = Map<string, number>;

/** The local write counter of every table (`ks.table` → mutations applied); null when the node has no such table. */
export async function readWriteCounts(cql: CqlSession): Promise<WriteCounts> {
  const rows = await cql.execute('SELECT keyspace_name, table_name, count FROM system_views.local_write_latency');
  return new Map(rows.map((r) => [`${String(r['keyspace_name'])}.${String(r['table_name'])}`, Number(String(r['count'] ?? 0))]));
}

/** The user tables of a snapshot and the Data.db bytes each holds (index subdirectories belong to their table). */
export function snapshotTables(files: readonly Pick<SnapshotFile, 'archivePath' | 'keyspace' | 'table' | 'size'>[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of files) {
    if (SYSTEM_KEYSPACES.has(f.keyspace)) continue;
    const key = `${f.keyspace}.${f.table}`;
    const parts = f.archivePath.split('/');
    const data = parts.length === 3 && parts[2]!.endsWith('-Data.db') ? f.size : 0;
    out.set(key, (out.get(key) ?? 0) + data);
  }
  return out;
}

/** `SELECT count(*)` of one table, quoted (names are case-sensitive). */
export async function countRows(cql: CqlSession, keyspace: string, table: string): Promise<number> {
  if (!IDENT.test(keyspace) || !IDENT.test(table)) throw new Error(`bad table name ${keyspace}.${table}`);
  const [row] = await cql.execute(`SELECT count(*) FROM "${keyspace}"."${table}"`);
  return Number(String(row?.['count'] ?? 0));
}

/**
 * Counts the snapshot's tables after it was taken. `before` is the write counters read before the snapshot;
 * each count failure is noted, never thrown (the counts are evidence for a drill, not a condition of the backup).
 */
export async function countSnapshotRows(
  cql: CqlSession,
  files: readonly Pick<SnapshotFile, 'archivePath' | 'keyspace' | 'table' | 'size'>[],
  before: WriteCounts | null,
  opts: { maxDataBytes?: number; signal?: AbortSignal } = {},
): Promise<TableCount[]> {
  const max = opts.maxDataBytes ?? COUNT_MAX_DATA_BYTES;
  const tables = [...snapshotTables(files)].sort(([a], [b]) => (a < b ? -1 : 1));
  const split = (key: string) => {
    const [keyspace, table] = key.split('.') as [string, string];
    return { keyspace, table };
  };
  const none = (note: string) => tables.map(([key]) => ({ ...split(key), rows: null, note }));
  if (!before) return none('not counted: the write counters could not be read');
  const peers = await cql.execute('SELECT peer FROM system.peers').catch(() => null);
  if (peers === null) return none('not counted: system.peers could not be read');
  if (peers.length > 0) return none("not counted: the node has peers (a CQL count spans the cluster, the snapshot holds this node's replicas)");
  // Tables whose rows expire by default: a missing answer only loses the <= leniency (the drill compares exactly).
  const ttls = new Map<string, number>();
  for (const r of await cql.execute('SELECT keyspace_name, table_name, default_time_to_live FROM system_schema.tables').catch(() => [])) {
    const ttl = Number(r['default_time_to_live'] ?? 0);
    if (ttl > 0) ttls.set(`${String(r['keyspace_name'])}.${String(r['table_name'])}`, ttl);
  }
  const out: TableCount[] = [];
  for (const [key, dataBytes] of tables) {
    opts.signal?.throwIfAborted();
    const { keyspace, table } = split(key);
    if (dataBytes > max) {
      out.push({ keyspace, table, rows: null, note: `not counted: ${dataBytes} bytes of data, over the ${max}-byte counting limit` });
      continue;
    }
    try {
      const ttl = ttls.get(key);
      out.push({ keyspace, table, rows: await countRows(cql, keyspace, table), ...(ttl ? { defaultTtl: ttl } : {}) });
    } catch (err) {
      out.push({ keyspace, table, rows: null, note: `not counted: ${(err as Error).message.slice(0, 200)}` });
    }
  }
  const after = await readWriteCounts(cql).catch(() => null);
  return out.map((t) => {
    if (t.rows === null) return t;
    const k = `${t.keyspace}.${t.table}`;
    if (!after) return { keyspace: t.keyspace, table: t.table, rows: null, note: 'not counted: the write counters could not be read again' };
    if (!before.has(k) || !after.has(k))
      return { keyspace: t.keyspace, table: t.table, rows: null, note: 'not counted: the node keeps no write counter for it' };
    if (after.get(k) !== before.get(k)) return { keyspace: t.keyspace, table: t.table, rows: null, note: 'not counted: written to while it was counted' };
    return t;
  });
}
