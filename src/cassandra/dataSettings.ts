import type { CqlSession } from './cql.ts';

/**
 * Settings the data on disk depends on, read from the running source node at backup time (system.local and
 * the system_views.settings virtual table: the values in force, not what a file says). A node refuses to start
 * on saved tokens whose count differs from num_tokens, on UUID-named SSTables without
 * uuid_sstable_identifiers_enabled, and on data written under another partitioner.
 */
export interface DataSettings {
  numTokens: number;
  /** The source node's tokens; written as initial_token only where the target's file names initial_token. */
  tokens: string[];
  partitioner: string;
  uuidSstableIdentifiers: boolean;
  sstableFormat: string;
  storageCompatibilityMode: string;
}

const NAMES = ['num_tokens', 'partitioner', 'uuid_sstable_identifiers_enabled', 'sstable.selected_format', 'storage_compatibility_mode'];

export async function readDataSettings(cql: CqlSession): Promise<DataSettings> {
  const [local] = await cql.execute('SELECT tokens, partitioner FROM system.local');
  const rows = await cql.execute(`SELECT name, value FROM system_views.settings WHERE name IN (${NAMES.map(() => '?').join(', ')})`, NAMES);
  const setting = new Map(rows.map((r) => [String(r['name']), r['value'] === null ? null : String(r['value'])]));
  const tokens = [...((local?.['tokens'] as Iterable<unknown> | null | undefined) ?? [])].map(String).sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
  return {
    numTokens: tokens.length || Number(setting.get('num_tokens') ?? 1),
    tokens,
    partitioner: String(local?.['partitioner'] ?? setting.get('partitioner') ?? 'org.apache.cassandra.dht.Murmur3Partitioner'),
    uuidSstableIdentifiers: setting.get('uuid_sstable_identifiers_enabled') === 'true',
    sstableFormat: setting.get('sstable.selected_format') ?? 'big',
    storageCompatibilityMode: setting.get('storage_compatibility_mode') ?? 'CASSANDRA_4',
  };
}

/** One line per setting, for `backup-show`. */
export function describeDataSettings(d: DataSettings): string[] {
  return [
    `num_tokens ${d.numTokens}`,
    `partitioner ${d.partitioner.replace(/^org\.apache\.cassandra\.dht\./, '')}`,
    `uuid_sstable_identifiers_enabled ${d.uuidSstableIdentifiers}`,
    `sstable.selected_format ${d.sstableFormat}`,
    `storage_compatibility_mode ${d.storageCompatibilityMode}`,
  ];
}
