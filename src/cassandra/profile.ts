import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { CbrError } from '../core/errors.ts';

/**
 * A profile tells every cbr command how to reach one Cassandra node and where its files are.
 * The sandbox writes one per instance; production nodes use the same format with a systemd unit.
 * Secrets are never inline: credentials live in files (mode 0600) that the profile points to.
 * Fields it does not know are ignored (and dropped).
 */
const nonEmpty = z.string().min(1);
const port = z.number().int().min(1).max(65535);

export const profileSchema = z
  .object({
    /** Format version of this file. */
    version: z.literal(1),
    /** Instance name; also the default cluster_name of a sandbox. */
    name: z.string().min(1),
    /** Host id used on the bus; defaults to `name`. */
    hostId: z.string().optional(),
    /** Shown and recorded when the node cannot be asked; profiles written by hand may leave it out. */
    cassandraVersion: z.string().default(''),
    cql: z.object({
      host: z.string(),
      port,
      localDc: z.string(),
      /** JSON file {"username","password"}, mode 0600. */
      credentialsFile: z.string(),
    }),
    jmx: z.object({
      /** nodetool's -h; the local JMX port when left out. */
      host: z.string().default('127.0.0.1'),
      port,
      /** Optional JMX username; the password comes from passwordFile ("user password" per line, nodetool's -pwf format). */
      user: z.string().optional(),
      passwordFile: z.string().optional(),
      /** Which JMX client cbr uses: `builtin` (default; its own JDK-only client, one light JVM for all calls) or `nodetool` (Cassandra's, a JVM with the node's jars per call: for JMX over SSL). CBR_JMX_CLIENT overrides it. */
      client: z.enum(['builtin', 'nodetool']).default('builtin'),
    }),
    /** Java and classpath for nodetool (the sandbox: the cached Cassandra jars). */
    java: z.object({ home: z.string(), libDir: z.string() }),
    dataDirs: z.array(nonEmpty).min(1),
    commitlogDir: nonEmpty,
    savedCachesDir: nonEmpty,
    hintsDir: nonEmpty,
    cassandraYaml: nonEmpty,
    /** OS user and group that own the data directories. */
    /** Only the uid was ever required: names are informational, the gid defaults to the uid. */
    owner: z
      .object({
        user: z.string().default(''),
        group: z.string().default(''),
        uid: z.number().int().nonnegative(),
        gid: z.number().int().nonnegative().optional(),
      })
      .transform((o) => ({ ...o, gid: o.gid ?? o.uid })),
    service: z.discriminatedUnion('kind', [
      z.object({ kind: z.literal('sandbox'), instanceDir: z.string() }),
      z.object({ kind: z.literal('systemd'), unit: z.string() }),
    ]),
    /** How this node's backups are taken when the command does not say: a flag wins over it, it wins over CBR_BACKUP_STRATEGY. */
    backupStrategy: z.enum(['full', 'incremental']).optional(),
  })
  .transform((p) => ({ ...p, hostId: p.hostId || p.name }));

export type Profile = z.output<typeof profileSchema>;

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

/** A profile's fields as the refusal names them: `cql.port`, `dataDirs.0`; the version says what it must be. */
function fieldName(path: readonly PropertyKey[]): string {
  const name = path.map(String).join('.');
  return name === 'version' ? 'version (must be 1)' : name;
}

export function validateProfile(value: unknown, source = 'profile'): Profile {
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new CbrError('CBR_ERR_CONFIG', `${source} is not an object`);
  const parsed = profileSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const fields = [...new Set(parsed.error.issues.map((i) => fieldName(i.path)))];
  throw new CbrError('CBR_ERR_CONFIG', `${source} is missing or has invalid: ${fields.join(', ')}`);
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
