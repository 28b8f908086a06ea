import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { sandboxYaml } from '../cassandra/configFiles.ts';
import { connectCql } from '../cassandra/cql.ts';
import { findJavaHome } from '../cassandra/java.ts';
import { loadCredentials, loadProfile, type Profile } from '../cassandra/profile.ts';
import { checkClusterName, parseSetting } from '../cassandra/yaml.ts';
import { CbrError } from '../core/errors.ts';
import { INSTANCE_NAME_RE } from '../core/ids.ts';
import { cbrHome } from '../core/paths.ts';
import { DEFAULT_CASSANDRA_VERSION, ensureDistribution } from './dist.ts';
import { runningPid, startInstance, stopInstance } from './process.ts';

export { runningPid, startInstance, stopInstance };

/**
 * Throwaway real Cassandra nodes, the way ccm or testcontainers give one, without Docker: the Maven Central
 * jars run as `CassandraDaemon` on JDK 17, one folder per instance under $CBR_HOME/sandboxes.
 */

const PORT_BASE = 21000;
const PORTS_PER_SLOT = 10;
/** A slot's ports: storage at its base, CQL at +2, then one JMX port per node from +3 (JMX binds 127.0.0.1 only). */
export const MAX_SLOT_NODES = PORTS_PER_SLOT - 3;

export function slotStoragePort(slot: number): number {
  return PORT_BASE + slot * PORTS_PER_SLOT;
}

export interface SandboxOptions {
  /** A cancelled workflow's signal: no new Cassandra process is spawned once it is aborted. */
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  version?: string;
  /** cluster_name of a new instance; default: the instance name. */
  clusterName?: string;
  /** JVM heap, e.g. "768M". Default: $CBR_SANDBOX_HEAP or 768M. */
  heap?: string;
  /** How long start waits for CQL. Default 180 s. */
  timeoutMs?: number;
  /** Wait until the profile's credentials log in (default), or only until CQL answers. */
  requireAuth?: boolean;
  /** A whole cassandra.yaml to start from (e.g. the stock 5.0 file) instead of cbr's sandbox defaults. */
  yamlFile?: string;
  /** cassandra.yaml settings (`--set key=value`, dotted keys nest), applied before the per-instance settings. */
  settings?: readonly string[];
  /** Where CQL answers when the instance runs on another configuration than its profile's (a restore's maintenance start). */
  cql?: { host: string; port: number };
  /** How many data_file_directories the node gets (default 1). */
  dataDirs?: number;
  /** The loopback address the node listens and answers CQL on (default 127.0.0.1). */
  address?: string;
  /** A node of a sandbox cluster (src/sandbox/cluster.ts): the cluster's port slot, the node's index, the seeds. */
  clusterNode?: { slot: number; index: number; seeds: string };
}

export interface SandboxStatus {
  name: string;
  running: boolean;
  pid: number | null;
  cqlHost: string;
  cqlPort: number;
  jmxPort: number;
  clusterName?: string;
  releaseVersion?: string;
  profilePath: string;
  instanceDir: string;
  logFile: string;
}

export function sandboxesDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cbrHome(env), 'sandboxes');
}

export function instanceDir(name: string, env: NodeJS.ProcessEnv = process.env): string {
  checkName(name);
  return join(sandboxesDir(env), name);
}

export function profilePath(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(instanceDir(name, env), 'profile.json');
}

function checkName(name: string): void {
  if (!INSTANCE_NAME_RE.test(name)) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `sandbox name must match ${INSTANCE_NAME_RE} (got ${JSON.stringify(name)})`);
  }
}

/** Creates the instance folder, cassandra.yaml, logback.xml, credentials and profile. Does not start it. */
export async function createSandbox(name: string, opts: SandboxOptions = {}): Promise<Profile> {
  const env = opts.env ?? process.env;
  const dir = instanceDir(name, env);
  if (existsSync(join(dir, 'profile.json'))) throw new CbrError('CBR_ERR_SANDBOX_EXISTS', `sandbox ${name} already exists at ${dir}`);
  if (existsSync(join(dir, 'cluster.json'))) throw new CbrError('CBR_ERR_SANDBOX_EXISTS', `${name} is a sandbox cluster (${dir})`);
  const settings = (opts.settings ?? []).map(parseSetting);
  const baseYaml = opts.yamlFile === undefined ? undefined : await readYamlFile(opts.yamlFile);
  const address = opts.address ?? '127.0.0.1';
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address))
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--address must be a loopback IPv4 address (got ${JSON.stringify(address)})`);
  const dataDirCount = opts.dataDirs ?? 1;
  if (!Number.isInteger(dataDirCount) || dataDirCount < 1 || dataDirCount > 16) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--data-dirs must be 1 to 16');
  const clusterName = checkClusterName(opts.clusterName ?? name);
  const dist = await ensureDistribution(opts.version ?? DEFAULT_CASSANDRA_VERSION, env);
  const javaHome = await findJavaHome(env);
  const node = opts.clusterNode;
  const slot = node?.slot ?? (await freeSlot(dir, env));
  const base = PORT_BASE + slot * PORTS_PER_SLOT;
  const ports = { storage: base, cql: base + 2, jmx: base + 3 + (node?.index ?? 0) };
  const dataDirs = dataDirCount === 1 ? [join(dir, 'data')] : Array.from({ length: dataDirCount }, (_, i) => join(dir, `data${i + 1}`));
  const paths = {
    commitlog: join(dir, 'commitlog'),
    savedCaches: join(dir, 'saved_caches'),
    hints: join(dir, 'hints'),
    cdc: join(dir, 'cdc_raw'),
    conf: join(dir, 'conf'),
    logs: join(dir, 'logs'),
  };
  const yamlText = sandboxYaml(
    {
      clusterName,
      dataDirs,
      commitlogDir: paths.commitlog,
      savedCachesDir: paths.savedCaches,
      hintsDir: paths.hints,
      cdcDir: paths.cdc,
      address,
      cqlPort: ports.cql,
      storagePort: ports.storage,
      ...(node ? { seeds: node.seeds } : {}),
    },
    baseYaml,
    settings,
  );
  for (const p of [...dataDirs, ...Object.values(paths)]) await mkdir(p, { recursive: true });
  const yamlPath = join(paths.conf, 'cassandra.yaml');
  await writeFile(yamlPath, yamlText);
  await writeFile(join(paths.conf, 'logback.xml'), logbackXml(paths.logs));
  // The default superuser, as Cassandra creates it on first start; restore replaces the password.
  const credentialsFile = join(paths.conf, 'credentials.json');
  await writeFile(credentialsFile, JSON.stringify({ username: 'cassandra', password: 'cassandra' }), { mode: 0o600 });
  await chmod(credentialsFile, 0o600);
  const me = userInfo();
  const profile: Profile = {
    version: 1,
    name,
    hostId: name,
    cassandraVersion: dist.version,
    cql: { host: address, port: ports.cql, localDc: 'datacenter1', credentialsFile },
    jmx: { host: '127.0.0.1', port: ports.jmx, client: 'builtin' },
    java: { home: javaHome, libDir: dist.libDir },
    dataDirs,
    commitlogDir: paths.commitlog,
    savedCachesDir: paths.savedCaches,
    hintsDir: paths.hints,
    cassandraYaml: yamlPath,
    owner: { user: me.username, group: me.username, uid: me.uid, gid: me.gid },
    service: { kind: 'sandbox', instanceDir: dir },
  };
  await writeFile(join(dir, 'profile.json'), `${JSON.stringify(profile, null, 2)}\n`);
  return profile;
}

/** Starts the instance (creating it first if needed) and waits until CQL answers with its credentials. */
export async function startSandbox(name: string, opts: SandboxOptions = {}): Promise<SandboxStatus> {
  const env = opts.env ?? process.env;
  const path = profilePath(name, env);
  let profile: Profile;
  if (existsSync(path)) {
    if (opts.yamlFile !== undefined || opts.settings?.length || opts.dataDirs !== undefined || opts.address !== undefined) {
      throw new CbrError(
        'CBR_ERR_SANDBOX_EXISTS',
        `sandbox ${name} exists; --yaml, --set, --data-dirs and --address shape a new instance (rm it first, or edit ${join(instanceDir(name, env), 'conf', 'cassandra.yaml')})`,
      );
    }
    profile = await loadProfile(path);
  } else {
    profile = await createSandbox(name, opts);
  }
  await startInstance(profile, opts);
  return sandboxStatus(name, { env, probe: true });
}

export async function stopSandbox(name: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const dir = instanceDir(name, env);
  if (!existsSync(join(dir, 'profile.json'))) throw new CbrError('CBR_ERR_SANDBOX_NOT_FOUND', `no sandbox named ${name}`);
  await stopInstance(dir);
}

export async function removeSandbox(name: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const dir = instanceDir(name, env);
  if (!existsSync(dir)) throw new CbrError('CBR_ERR_SANDBOX_NOT_FOUND', `no sandbox named ${name}`);
  await stopInstance(dir);
  await rm(dir, { recursive: true, force: true });
  await releaseSlots(dir);
}

export async function sandboxStatus(name: string, opts: { env?: NodeJS.ProcessEnv; probe?: boolean } = {}): Promise<SandboxStatus> {
  const env = opts.env ?? process.env;
  const path = profilePath(name, env);
  if (!existsSync(path)) throw new CbrError('CBR_ERR_SANDBOX_NOT_FOUND', `no sandbox named ${name}`);
  const profile = await loadProfile(path);
  const dir = instanceDir(name, env);
  const pid = runningPid(dir);
  const status: SandboxStatus = {
    name,
    running: pid !== null,
    pid,
    cqlHost: profile.cql.host,
    cqlPort: profile.cql.port,
    jmxPort: profile.jmx.port,
    profilePath: path,
    instanceDir: dir,
    logFile: join(dir, 'logs', 'system.log'),
  };
  if (pid !== null && opts.probe !== false) {
    try {
      const s = await connectCql({ ...profile.cql, credentials: await loadCredentials(profile.cql.credentialsFile) }, { timeoutMs: 3000 });
      try {
        const [row] = await s.execute('SELECT cluster_name, release_version FROM system.local');
        status.clusterName = String(row?.['cluster_name']);
        status.releaseVersion = String(row?.['release_version']);
      } finally {
        await s.close();
      }
    } catch {
      status.running = false;
    }
  }
  return status;
}

export async function listSandboxes(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const root = sandboxesDir(env);
  if (!existsSync(root)) return [];
  const names = await readdir(root);
  return names.filter((n) => existsSync(join(root, n, 'profile.json'))).sort();
}

/** A free port slot, claimed machine-wide for `owner` (an instance folder); `jmxPorts` nodes get a JMX port each. */
export async function freeSlot(owner: string, env: NodeJS.ProcessEnv, jmxPorts = 1): Promise<number> {
  const used = new Set<number>();
  for (const name of await listSandboxes(env)) {
    try {
      const p = await loadProfile(profilePath(name, env));
      used.add(Math.floor((p.cql.port - PORT_BASE) / PORTS_PER_SLOT));
    } catch {
      /* a broken profile holds no slot */
    }
  }
  for (let slot = 0; slot < 400; slot++) {
    if (used.has(slot)) continue;
    const base = PORT_BASE + slot * PORTS_PER_SLOT;
    let free = (await portFree(base)) && (await portFree(base + 2));
    for (let j = 0; free && j < jmxPorts; j++) free = await portFree(base + 3 + j);
    if (!free) continue;
    if (await claimSlot(slot, owner)) return slot;
  }
  throw new CbrError('CBR_ERR_SANDBOX_START_FAILED', 'no free loopback port range for a new sandbox');
}

/**
 * Ports are the machine's, not one $CBR_HOME's: two homes creating sandboxes at once (parallel test runs) would
 * both find a stopped slot free. A create-only file per slot in the machine's temp folder names the instance
 * folder holding it; a slot whose holder folder is gone (removed, or never made after a minute) is taken over.
 */
export const SLOTS_DIR = join(tmpdir(), 'cbr-port-slots');

/** Claims port slot `slot` for the instance folder `owner`: true when it is (now) this folder's. */
export async function claimSlot(slot: number, owner: string): Promise<boolean> {
  await slotsDir();
  const file = join(SLOTS_DIR, String(slot));
  if (await createOnly(file, owner)) return true;
  const holder = await readFile(file, 'utf8').catch(() => '');
  if (holder === owner) return true;
  if (!(await stale(file, holder))) return false;
  // Taking over a stale claim: one taker at a time (a second one moves on to the next slot), so two takers never
  // both remove the stale file and then each other's fresh claim.
  const lock = `${file}.takeover`;
  if (!(await createOnly(lock, owner))) {
    if (await stale(lock, '')) await rm(lock, { force: true }).catch(() => {});
    return false;
  }
  try {
    if (!(await stale(file, await readFile(file, 'utf8').catch(() => '')))) return false;
    await rm(file, { force: true });
    return await createOnly(file, owner);
  } finally {
    await rm(lock, { force: true }).catch(() => {});
  }
}

/** A claim whose instance folder is gone (or never came) for a minute. */
async function stale(file: string, holder: string): Promise<boolean> {
  const age = Date.now() - ((await stat(file).catch(() => undefined))?.mtimeMs ?? 0);
  return !(holder !== '' && existsSync(holder)) && age >= 60_000;
}

/** Writes a new file; false when it exists already or this user may not write there (another user's slot). */
async function createOnly(file: string, content: string): Promise<boolean> {
  try {
    await writeFile(file, content, { flag: 'wx' });
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'EACCES' || code === 'EPERM') return false;
    throw new CbrError('CBR_ERR_SANDBOX_START_FAILED', `cannot claim port slot file ${file}: ${code ?? (err as Error).message}`);
  }
}

/** The slots folder, shared by every user of the machine (sticky, like /tmp: each removes only their own claims). */
async function slotsDir(): Promise<void> {
  const made = await mkdir(SLOTS_DIR, { recursive: true, mode: 0o1777 }).catch((err: NodeJS.ErrnoException) => {
    throw new CbrError('CBR_ERR_SANDBOX_START_FAILED', `cannot make ${SLOTS_DIR}: ${err.code ?? err.message}`);
  });
  // mkdir's mode goes through the umask; the folder's maker widens it once.
  if (made !== undefined) await chmod(SLOTS_DIR, 0o1777).catch(() => {});
}

export async function releaseSlots(owner: string): Promise<void> {
  const files = await readdir(SLOTS_DIR).catch(() => [] as string[]);
  for (const f of files) {
    const file = join(SLOTS_DIR, f);
    if ((await readFile(file, 'utf8').catch(() => '')) === owner) await rm(file, { force: true }).catch(() => {});
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

async function readYamlFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new CbrError('CBR_ERR_CONFIG', `cannot read --yaml ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function logbackXml(logDir: string): string {
  return `<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${logDir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.cassandra" level="INFO"/>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
`;
}
