import { readFile } from 'node:fs/promises';
import { CbrError } from '../core/errors.ts';

/**
 * A profile tells every cbr command how to reach one Cassandra node and where its files are.
 * The sandbox writes one per instance; production nodes use the same format with a systemd unit.
 * Secrets are never inline: credentials live in files (mode 0600) that the profile points to.
 */
export interface Profile {
  /** Format version of this file. */
  version: 1;
  /** Instance name; also the default cluster_name of a sandbox. */
  name: string;
  /** Host id used on the bus; defaults to `name`. */
  hostId: string;
  cassandraVersion: string;
  cql: {
    host: string;
    port: number;
    localDc: string;
    /** JSON file {"username","password"}, mode 0600. */
    credentialsFile: string;
  };
  jmx: {
    host: string;
    port: number;
    /** Optional JMX username; the password comes from passwordFile ("user password" per line, nodetool's -pwf format). */
    user?: string;
    passwordFile?: string;
  };
  /** Java and classpath for nodetool (the sandbox: the cached Cassandra jars). */
  java: { home: string; libDir: string };
  dataDirs: string[];
  commitlogDir: string;
  savedCachesDir: string;
  hintsDir: string;
  cassandraYaml: string;
  /** OS user and group that own the data directories. */
  owner: { user: string; group: string; uid: number; gid: number };
  service: { kind: 'sandbox'; instanceDir: string } | { kind: 'systemd'; unit: string };
}

export async function loadProfile(path: string): Promise<Profile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CbrError('CBR_ERR_CONFIG', `cannot read profile ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CbrError('CBR_ERR_CONFIG', `profile ${path} is not valid JSON`);
  }
  return validateProfile(parsed, path);
}

export function validateProfile(value: unknown, source = 'profile'): Profile {
  const p = value as Partial<Profile> | null;
  const missing: string[] = [];
  if (!p || typeof p !== 'object') throw new CbrError('CBR_ERR_CONFIG', `${source} is not an object`);
  if (p.version !== 1) missing.push('version (must be 1)');
  for (const key of ['name', 'cassandraYaml', 'commitlogDir', 'savedCachesDir', 'hintsDir'] as const) {
    if (typeof p[key] !== 'string' || !p[key]) missing.push(key);
  }
  if (!Array.isArray(p.dataDirs) || p.dataDirs.length === 0) missing.push('dataDirs');
  if (!p.cql || typeof p.cql.port !== 'number' || typeof p.cql.host !== 'string') missing.push('cql.host/port');
  if (!p.cql || typeof p.cql.credentialsFile !== 'string') missing.push('cql.credentialsFile');
  if (!p.jmx || typeof p.jmx.port !== 'number') missing.push('jmx.port');
  if (!p.java || typeof p.java.libDir !== 'string') missing.push('java.libDir');
  if (!p.owner || typeof p.owner.uid !== 'number') missing.push('owner');
  if (!p.service || (p.service.kind !== 'sandbox' && p.service.kind !== 'systemd')) missing.push('service.kind');
  if (missing.length) throw new CbrError('CBR_ERR_CONFIG', `${source} is missing or has invalid: ${missing.join(', ')}`);
  return { ...(p as Profile), hostId: p.hostId || p.name! };
}

export interface Credentials {
  username: string;
  password: string;
}

export async function loadCredentials(path: string): Promise<Credentials> {
  try {
    const c = JSON.parse(await readFile(path, 'utf8')) as Partial<Credentials>;
    if (typeof c.username !== 'string' || typeof c.password !== 'string') throw new Error('needs username and password');
    return { username: c.username, password: c.password };
  } catch (err) {
    // Never echo the file's content: it holds a password.
    throw new CbrError('CBR_ERR_CONFIG', `credentials file ${path} is unreadable or invalid (${(err as Error).name})`);
  }
}
