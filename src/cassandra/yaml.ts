import { type Document, isMap, isNode, isScalar, parse, parseDocument, Scalar, YAMLMap } from 'yaml';
import { CbrError } from '../core/errors.ts';
import type { DataSettings } from './dataSettings.ts';

/**
 * Structural edits of cassandra.yaml that keep the operator's comments and layout: the file is parsed into a
 * YAML document (the `yaml` package's Document API), changed node by node and printed again. The schema is
 * YAML 1.1, the one Cassandra's SnakeYAML reads, so a string such as `yes`, `null` or `2024` is quoted where
 * 1.1 would read it as a boolean, null or number.
 */
export class CassandraYaml {
  private readonly doc: Document;

  private constructor(doc: Document) {
    this.doc = doc;
  }

  static parse(text: string, source = 'cassandra.yaml'): CassandraYaml {
    const doc = parseDocument(text, { version: '1.1', keepSourceTokens: false });
    const problem = doc.errors[0];
    if (problem) throw new CbrError('CBR_ERR_CONFIG', `${source} is not valid YAML: ${problem.message.split('\n')[0]}`);
    if (doc.contents !== null && !isMap(doc.contents)) throw new CbrError('CBR_ERR_CONFIG', `${source} is not a YAML mapping`);
    if (doc.contents === null) doc.contents = new YAMLMap() as unknown as typeof doc.contents;
    return new CassandraYaml(doc);
  }

  /** The value at a dotted path (`sstable.selected_format`) as plain JS, or undefined when absent. */
  get(path: string): unknown {
    const node = this.doc.getIn(splitPath(path), true);
    if (node === undefined || node === null) return node;
    if (isScalar(node)) return node.value;
    return isNode(node) ? node.toJSON() : node;
  }

  has(path: string): boolean {
    return this.doc.hasIn(splitPath(path));
  }

  /** Sets a value at a dotted path, turning a missing, null or scalar parent into a mapping. */
  set(path: string, value: unknown): void {
    const keys = splitPath(path);
    for (let i = 1; i < keys.length; i++) {
      const parent = this.doc.getIn(keys.slice(0, i), true);
      if (!isMap(parent)) this.doc.setIn(keys.slice(0, i), new YAMLMap());
    }
    this.doc.setIn(keys, this.doc.createNode(value));
  }

  /** Sets a value inside existing sequences (`['seed_provider', 0, ...]`); the path must exist up to the last key. */
  setSeq(keys: readonly (string | number)[], value: string): void {
    const node = new Scalar(value);
    node.type = Scalar.QUOTE_DOUBLE;
    this.doc.setIn(keys, node);
  }

  /** A string written double-quoted, whatever it holds (names, addresses, paths). */
  setString(path: string, value: string): void {
    const node = new Scalar(value);
    node.type = Scalar.QUOTE_DOUBLE;
    this.set(path, node);
  }

  delete(path: string): void {
    this.doc.deleteIn(splitPath(path));
  }

  /**
   * The class of a pluggable component (`authenticator`, `authorizer`, `role_manager`, ...), written either flat
   * (`authenticator: PasswordAuthenticator`) or as a block with `class_name:` (the stock 5.0 file).
   */
  componentClass(key: string): string | undefined {
    const v = this.get(key);
    if (typeof v === 'string') return v;
    if (v && typeof v === 'object' && 'class_name' in v) return String((v as { class_name: unknown }).class_name);
    return undefined;
  }

  /** Sets a component's class in the form the file already uses; the old class's parameters go with it. */
  setComponentClass(key: string, className: string): void {
    const node = this.doc.get(key, true);
    if (isMap(node)) {
      node.set('class_name', className);
      node.delete('parameters');
    } else {
      this.doc.set(key, className);
    }
  }

  toString(): string {
    return this.doc.toString({ lineWidth: 0 });
  }
}

function splitPath(path: string): string[] {
  const keys = path.split('.');
  if (keys.some((k) => !/^[A-Za-z0-9_]+$/.test(k))) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `invalid cassandra.yaml key ${JSON.stringify(path)}`);
  return keys;
}

/**
 * `key=value` from `--set`: the key a dotted path, the value read as YAML 1.1 (so `true`, `256`, `[a, b]` and
 * `{k: v}` have their types); an empty value removes the key.
 */
export function parseSetting(arg: string): { path: string; value: unknown; remove: boolean } {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--set needs key=value (got ${JSON.stringify(arg.slice(0, 80))})`);
  const path = arg.slice(0, eq).trim();
  splitPath(path);
  const text = arg.slice(eq + 1);
  if (text.trim() === '') return { path, value: undefined, remove: true };
  let value: unknown;
  try {
    value = parse(text, { version: '1.1' });
  } catch (err) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--set ${path}: the value is not valid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  return { path, value, remove: false };
}

export function applySettings(y: CassandraYaml, settings: readonly { path: string; value: unknown; remove: boolean }[]): void {
  for (const s of settings) {
    if (s.remove) y.delete(s.path);
    else y.set(s.path, s.value);
  }
}

/** A cluster name Cassandra, cqlsh and a YAML file all take: printable, one line, at most 256 characters. */
export function checkClusterName(name: string): string {
  if (name.length === 0 || name.length > 256 || /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(name)) {
    throw new CbrError(
      'CBR_ERR_INVALID_ARGUMENT',
      `cluster name ${JSON.stringify(name.slice(0, 80))} is empty, too long or holds a newline or control character`,
    );
  }
  return name;
}

export interface InstanceSettings {
  clusterName: string;
  dataDirs: readonly string[];
  commitlogDir: string;
  savedCachesDir: string;
  hintsDir: string;
  cdcDir: string;
  address: string;
  cqlPort: number;
  storagePort: number;
}

/** cbr's defaults for a sandbox node: a single-node cluster, authentication on, small caches. */
const SANDBOX_DEFAULTS = `# Generated by cbr sandbox. cbr's per-instance settings (directories, addresses, ports) are applied on top.
cluster_name: sandbox
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
start_native_transport: true
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB
authenticator: PasswordAuthenticator
authorizer: CassandraAuthorizer
role_manager: CassandraRoleManager
# No auth caches in a sandbox: a changed password works at once.
credentials_validity: 0ms
roles_validity: 0ms
permissions_validity: 0ms
auto_snapshot: false
snapshot_before_compaction: false
concurrent_compactors: 1
memtable_heap_space: 128MiB
key_cache_size: 8MiB
`;

/**
 * The cassandra.yaml of a sandbox instance: `base` (cbr's defaults, or a whole file such as the stock 5.0
 * cassandra.yaml), then the `--set` settings, then the instance's own directories, addresses and ports.
 */
export function sandboxYaml(o: InstanceSettings, base?: string, settings: readonly { path: string; value: unknown; remove: boolean }[] = []): string {
  const y = CassandraYaml.parse(base ?? SANDBOX_DEFAULTS, base === undefined ? 'the sandbox defaults' : 'the --yaml file');
  if (base === undefined && settings.some((s) => s.path === 'num_tokens') && !settings.some((s) => s.path === 'initial_token')) {
    // cbr's single token at 0 only fits num_tokens: 1.
    y.delete('initial_token');
  }
  applySettings(y, settings);
  y.setString('cluster_name', checkClusterName(o.clusterName));
  y.set('data_file_directories', [...o.dataDirs]);
  y.setString('commitlog_directory', o.commitlogDir);
  y.setString('saved_caches_directory', o.savedCachesDir);
  y.setString('hints_directory', o.hintsDir);
  y.setString('cdc_raw_directory', o.cdcDir);
  y.set('listen_address', o.address);
  y.set('rpc_address', o.address);
  for (const key of ['listen_interface', 'rpc_interface', 'broadcast_address', 'broadcast_rpc_address']) y.delete(key);
  y.set('storage_port', o.storagePort);
  y.set('native_transport_port', o.cqlPort);
  y.set('start_native_transport', true);
  setSimpleSeeds(y, `${o.address}:${o.storagePort}`);
  return y.toString();
}

/**
 * The node as its own only seed, through Cassandra's SimpleSeedProvider: only the `seeds` value changes where
 * the file already uses that provider (its comments stay), any other provider is replaced.
 */
function setSimpleSeeds(y: CassandraYaml, seeds: string): void {
  const provider = y.get('seed_provider') as { class_name?: unknown; parameters?: { seeds?: unknown }[] }[] | undefined;
  const first = Array.isArray(provider) ? provider[0] : undefined;
  if (provider?.length === 1 && /(^|\.)SimpleSeedProvider$/.test(String(first?.class_name)) && first?.parameters?.length === 1) {
    y.setSeq(['seed_provider', 0, 'parameters', 0, 'seeds'], seeds);
    return;
  }
  y.set('seed_provider', [{ class_name: 'org.apache.cassandra.locator.SimpleSeedProvider', parameters: [{ seeds }] }]);
}

/** The classes that turn authentication and authorization off, per component key. */
const ALLOW_ALL: Record<string, string> = {
  authenticator: 'AllowAllAuthenticator',
  authorizer: 'AllowAllAuthorizer',
  network_authorizer: 'AllowAllNetworkAuthorizer',
  cidr_authorizer: 'AllowAllCIDRAuthorizer',
};

/**
 * The configuration of a restore's maintenance start: the source's cluster_name (Cassandra refuses to start
 * when it differs from the restored system.local), no authentication, and nothing reachable from outside:
 * loopback only, on ports chosen for this start (never the configured ones, so no client finds the node
 * while it runs without authentication), itself as its only seed, no client TLS (cbr connects in plain).
 */
export function maintenanceYaml(original: string, o: { clusterName: string; nativePort: number; storagePort: number; data: DataSettings | null }): string {
  const y = CassandraYaml.parse(original);
  y.setString('cluster_name', checkClusterName(o.clusterName));
  for (const [key, cls] of Object.entries(ALLOW_ALL)) {
    if (key === 'authenticator' || key === 'authorizer' || y.has(key)) y.setComponentClass(key, cls);
  }
  y.set('listen_address', '127.0.0.1');
  y.set('rpc_address', '127.0.0.1');
  for (const key of ['listen_interface', 'rpc_interface', 'broadcast_address', 'broadcast_rpc_address', 'listen_on_broadcast_address']) y.delete(key);
  y.set('native_transport_port', o.nativePort);
  y.delete('native_transport_port_ssl');
  y.set('storage_port', o.storagePort);
  y.set('start_native_transport', true);
  if (y.has('client_encryption_options.enabled')) y.set('client_encryption_options.enabled', false);
  setSimpleSeeds(y, `127.0.0.1:${o.storagePort}`);
  if (o.data) applyDataSettings(y, o.data);
  return y.toString();
}

/** The operator's file again with the new cluster_name and the settings the restored data needs. */
export function finalYaml(original: string, clusterName: string, data: DataSettings | null): { text: string; changes: SettingChange[] } {
  const y = CassandraYaml.parse(original);
  y.setString('cluster_name', checkClusterName(clusterName));
  const changes = data ? applyDataSettings(y, data) : [];
  return { text: y.toString(), changes };
}

/** The addresses and ports a maintenance yaml listens on (read back after a crash, when the step re-runs). */
export function maintenanceEndpoint(text: string): { host: string; port: number } {
  const y = CassandraYaml.parse(text);
  return { host: String(y.get('rpc_address') ?? '127.0.0.1'), port: Number(y.get('native_transport_port') ?? 9042) };
}

export interface SettingChange {
  key: string;
  from: unknown;
  to: unknown;
}

/** Cassandra 5.0's values when cassandra.yaml leaves a setting out. */
const DEFAULTS = { num_tokens: 1, uuid_sstable_identifiers_enabled: false, 'sstable.selected_format': 'big', storage_compatibility_mode: 'CASSANDRA_4' };

export function applyDataSettings(y: CassandraYaml, d: DataSettings): SettingChange[] {
  const changes: SettingChange[] = [];
  const put = (key: string, want: unknown, current: unknown) => {
    if (current === want) return;
    changes.push({ key, from: current ?? null, to: want });
    y.set(key, want);
  };
  put('num_tokens', d.numTokens, numberOr(y.get('num_tokens'), DEFAULTS.num_tokens));
  const initial = y.get('initial_token');
  if (initial !== undefined && initial !== null && d.tokens.length > 0) {
    const tokens = d.tokens.join(',');
    if (String(initial).replace(/\s+/g, '') !== tokens) {
      changes.push({
        key: 'initial_token',
        from: String(initial).length > 60 ? `${String(initial).slice(0, 60)}…` : initial,
        to: `${d.tokens.length} tokens of the source`,
      });
      y.set('initial_token', tokens);
    }
  }
  put('partitioner', d.partitioner, shortPartitioner(y.get('partitioner'), d.partitioner));
  // UUID identifiers: needed to read UUID-named SSTables; a target that already has them on keeps them.
  if (d.uuidSstableIdentifiers)
    put('uuid_sstable_identifiers_enabled', true, y.get('uuid_sstable_identifiers_enabled') ?? DEFAULTS.uuid_sstable_identifiers_enabled);
  put('sstable.selected_format', d.sstableFormat, y.get('sstable.selected_format') ?? DEFAULTS['sstable.selected_format']);
  put('storage_compatibility_mode', d.storageCompatibilityMode, y.get('storage_compatibility_mode') ?? DEFAULTS.storage_compatibility_mode);
  return changes;
}

function numberOr(v: unknown, fallback: number): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : Number.NaN;
  return Number.isFinite(n) ? n : fallback;
}

/** `Murmur3Partitioner` and `org.apache.cassandra.dht.Murmur3Partitioner` name the same class. */
function shortPartitioner(current: unknown, wanted: string): unknown {
  if (typeof current !== 'string') return current;
  const simple = (s: string) => s.replace(/^org\.apache\.cassandra\.dht\./, '');
  return simple(current) === simple(wanted) ? wanted : current;
}
