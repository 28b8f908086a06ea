import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { CbrError, type ErrorCode } from '../core/errors.ts';
import { cbrCache } from '../core/paths.ts';
import { classpath, JDK17_MODULE_OPTIONS } from './java.ts';
import { JMX_MAIN, jmxClasses } from './jmx/compile.ts';
import { JmxSession, JmxSessionError } from './jmx/session.ts';
import type { Profile } from './profile.ts';

/** This node as `nodetool status` shows its own row: Up (live in gossip) and its state, plus its operation mode. */
export interface NodeStatus {
  hostId: string;
  /** Up in gossip: the U of `UN`. */
  live: boolean;
  /** The N/J/L/M of `UN`. */
  state: 'Normal' | 'Joining' | 'Leaving' | 'Moving';
  /** StorageService.OperationMode (NORMAL, JOINING, DRAINED, ...); empty when the nodetool client does not read it. */
  mode: string;
}

/** The node operations cbr uses, on the node's JMX port (cbr's own JMX client by default, or nodetool). */
export interface Nodetool {
  /**
   * Starts the JMX client's JVM now, without waiting for it (a ping whose failure is ignored: the first real call
   * reports it), so its start-up overlaps what the caller does before its first call. Absent: nothing to start.
   */
  warm?(): void;
  /** This node's status; throws CBR_ERR_NODETOOL_FAILED when JMX does not answer. */
  status(signal?: AbortSignal): Promise<NodeStatus>;
  snapshot(tag: string, signal?: AbortSignal): Promise<void>;
  clearSnapshot(tag: string, signal?: AbortSignal): Promise<void>;
  listSnapshots(signal?: AbortSignal): Promise<string[]>;
  flush(keyspace?: string, table?: string, signal?: AbortSignal): Promise<void>;
  drain(signal?: AbortSignal): Promise<void>;
  /**
   * `nodetool import <keyspace> <table> <dirs...>`: moves the SSTables found in each directory into the live table,
   * each under a new SSTable id of the table's own kind (sequential or UUID), verified and its tokens checked to
   * be owned by this node. Answers the directories that failed (empty: all imported).
   */
  importSSTables(keyspace: string, table: string, dirs: string[], signal?: AbortSignal): Promise<string[]>;
  /** Ends the JMX client process, if one is running (it also ends by itself when idle, and with this process). */
  close(): void;
}

const TAG_RE = /^[A-Za-z0-9_-]{1,64}$/;
const IDENT_RE = /^[A-Za-z0-9_]{1,48}$/;

/**
 * The profile's JMX client (`jmx.client`, overridden by CBR_JMX_CLIENT): `builtin`, cbr's own (one light JVM for
 * every call), or `nodetool`, Cassandra's (a JVM with the node's jars per call; it supports JMX over SSL).
 */
export function createNodetool(profile: Profile, env: NodeJS.ProcessEnv = process.env): Nodetool {
  return jmxClientKind(profile, env) === 'nodetool' ? createNodetoolCli(profile, env) : sharedJmxClient(profile, env);
}

/** How long an idle JMX client JVM stays up when CBR_JMX_IDLE does not say: the CLI's; the agent sets its own. */
export const DEFAULT_JMX_IDLE_MS = 30_000;

/** CBR_JMX_IDLE (`30s`, `15m`, `1h`, `500ms`; a bare number is seconds), else 30 s. */
export function jmxIdleMs(env: NodeJS.ProcessEnv = process.env): number {
  const text = env['CBR_JMX_IDLE'];
  if (text === undefined || text === '') return DEFAULT_JMX_IDLE_MS;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new CbrError('CBR_ERR_CONFIG', `CBR_JMX_IDLE must be a duration like 30s, 15m or 1h (got ${JSON.stringify(text.slice(0, 40))})`);
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h']);
}

/**
 * One builtin JMX client per node and process: every workflow of a long-lived process (the agent) on the same node
 * talks through the same JVM while it lives (CBR_JMX_IDLE), instead of starting one per workflow. Its requests are
 * served one at a time, in order.
 */
const sharedClients = new Map<string, Nodetool>();

function sharedJmxClient(profile: Profile, env: NodeJS.ProcessEnv): Nodetool {
  const idleMs = jmxIdleMs(env);
  const { host, port, user, passwordFile } = profile.jmx;
  const key = JSON.stringify([profile.java.home, host, port, user ?? null, passwordFile ?? null, cbrCache(env), idleMs]);
  const known = sharedClients.get(key);
  if (known) return known;
  const client = createJmxClient(profile, env, idleMs);
  const shared: Nodetool = {
    ...client,
    close() {
      if (sharedClients.get(key) === shared) sharedClients.delete(key);
      client.close();
    },
  };
  sharedClients.set(key, shared);
  return shared;
}

/**
 * Which client createNodetool uses. The builtin one is compiled at first use, so it needs a JDK; on a node with only
 * a Java runtime (javac missing at java.home) it is nodetool, as before the builtin client existed, instead of
 * every backup failing.
 */
export function jmxClientKind(profile: Profile, env: NodeJS.ProcessEnv = process.env): 'builtin' | 'nodetool' {
  const client = env['CBR_JMX_CLIENT'] || profile.jmx.client;
  if (client === 'nodetool') return 'nodetool';
  if (client !== 'builtin') throw new CbrError('CBR_ERR_CONFIG', `CBR_JMX_CLIENT must be builtin or nodetool, not ${client}`);
  return existsSync(join(profile.java.home, 'bin', 'javac')) ? 'builtin' : 'nodetool';
}

/**
 * Runs org.apache.cassandra.tools.NodeTool in a JVM with the node's jars. JMX credentials go by password file
 * (`-pwf`), never on the command line.
 */
export function createNodetoolCli(profile: Profile, env: NodeJS.ProcessEnv = process.env): Nodetool {
  const java = join(profile.java.home, 'bin', 'java');
  const run = async (args: string[], code: ErrorCode, signal?: AbortSignal): Promise<string> => {
    const logback = await toolsLogback(env);
    const auth = profile.jmx.user && profile.jmx.passwordFile ? ['-u', profile.jmx.user, '-pwf', profile.jmx.passwordFile] : [];
    const full = [
      '-Xmx128m',
      '-XX:+UseSerialGC',
      '-XX:TieredStopAtLevel=1',
      ...JDK17_MODULE_OPTIONS,
      `-Dlogback.configurationFile=${logback}`,
      '-cp',
      classpath(profile.java.libDir),
      'org.apache.cassandra.tools.NodeTool',
      '-h',
      profile.jmx.host,
      '-p',
      String(profile.jmx.port),
      ...auth,
      ...args,
    ];
    return new Promise((resolve, reject) => {
      execFile(java, full, { signal, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err) {
          if ((err as { name?: string }).name === 'AbortError') {
            reject(new CbrError('CBR_ERR_ABORTED', `nodetool ${args[0]} aborted`));
            return;
          }
          const msg = nodetoolMessage(`${stderr}\n${stdout}`);
          reject(new CbrError(code, `nodetool ${args[0]} failed: ${msg || err.message}`));
          return;
        }
        resolve(stdout);
      });
    });
  };
  return {
    async status(signal) {
      // `info` names this node's host id, `status` has its row.
      const [info, status] = await Promise.all([run(['info'], 'CBR_ERR_NODETOOL_FAILED', signal), run(['status'], 'CBR_ERR_NODETOOL_FAILED', signal)]);
      return parseStatus(status, parseInfoId(info));
    },
    async snapshot(tag, signal) {
      checkTag(tag);
      await run(['snapshot', '-t', tag], 'CBR_ERR_SNAPSHOT_FAILED', signal);
    },
    async clearSnapshot(tag, signal) {
      checkTag(tag);
      await run(['clearsnapshot', '-t', tag], 'CBR_ERR_SNAPSHOT_FAILED', signal);
    },
    async listSnapshots(signal) {
      const out = await run(['listsnapshots'], 'CBR_ERR_SNAPSHOT_FAILED', signal);
      return parseListSnapshots(out);
    },
    async flush(keyspace, table, signal) {
      const args = ['flush'];
      checkIdents(keyspace, table);
      if (keyspace) {
        args.push('--', keyspace);
        if (table) args.push(table);
      }
      await run(args, 'CBR_ERR_NODETOOL_FAILED', signal);
    },
    async drain(signal) {
      await run(['drain'], 'CBR_ERR_NODETOOL_FAILED', signal);
    },
    async importSSTables(keyspace, table, dirs, signal) {
      checkIdents(keyspace, table);
      checkDirs(dirs);
      // nodetool import prints the directories that failed and exits non-zero: a coded failure here.
      await run(['import', '--', keyspace, table, ...dirs], 'CBR_ERR_IMPORT_FAILED', signal);
      return [];
    },
    close() {},
  };
}

/** The `ID : <host id>` line of `nodetool info`. */
export function parseInfoId(info: string): string {
  const m = /^ID\s*:\s*(\S+)/m.exec(info);
  if (!m?.[1]) throw new CbrError('CBR_ERR_NODETOOL_FAILED', 'nodetool info printed no host ID');
  return m[1];
}

const STATES = { N: 'Normal', J: 'Joining', L: 'Leaving', M: 'Moving' } as const;

/** This node's row of `nodetool status` (`UN  127.0.0.1  1 MiB  16  100.0%  <host id>  rack1`), found by host id. */
export function parseStatus(out: string, hostId: string): NodeStatus {
  for (const line of out.split('\n')) {
    const m = /^([UD?])([NJLM])\s/.exec(line);
    if (m && line.split(/\s+/).includes(hostId)) {
      return { hostId, live: m[1] === 'U', state: STATES[m[2] as keyof typeof STATES], mode: '' };
    }
  }
  throw new CbrError('CBR_ERR_NODETOOL_FAILED', `nodetool status has no row for this node (host id ${hostId})`);
}

/**
 * cbr's JMX client (src/cassandra/jmx/CbrJmx.java): the StorageService operations nodetool would call, with the
 * same options, in one JDK-only JVM that serves every call of this Nodetool. The password goes on the child's
 * stdin, never on its command line.
 */
export function createJmxClient(profile: Profile, env: NodeJS.ProcessEnv = process.env, idleMs?: number): Nodetool {
  const session = new JmxSession(async () => {
    const classes = await jmxClasses(profile.java.home, env);
    const user = profile.jmx.user && profile.jmx.passwordFile ? profile.jmx.user : undefined;
    return {
      command: join(profile.java.home, 'bin', 'java'),
      args: [...JMX_CLIENT_JVM, '-cp', classes, JMX_MAIN],
      hello: {
        host: profile.jmx.host,
        port: profile.jmx.port,
        ...(user && profile.jmx.passwordFile ? { user, password: await readJmxPassword(profile.jmx.passwordFile, user) } : {}),
      },
    };
  }, idleMs);
  return jmxNodetool(session);
}

/** The Nodetool operations over a JMX client session, each failure with its operation's coded error. */
export function jmxNodetool(session: JmxSession): Nodetool {
  const call = async (op: string, params: Record<string, unknown>, code: ErrorCode, signal?: AbortSignal): Promise<unknown> => {
    try {
      return await session.request(op, params, signal);
    } catch (err) {
      if (err instanceof CbrError) throw err;
      if (err instanceof JmxSessionError && err.aborted) throw new CbrError('CBR_ERR_ABORTED', `JMX ${op} aborted`);
      throw new CbrError(code, `JMX ${op} failed: ${(err as Error).message}`);
    }
  };
  return {
    warm() {
      session.request('ping').catch(() => {});
    },
    async status(signal) {
      return parseJmxStatus(await call('status', {}, 'CBR_ERR_NODETOOL_FAILED', signal));
    },
    async snapshot(tag, signal) {
      checkTag(tag);
      await call('snapshot', { tag }, 'CBR_ERR_SNAPSHOT_FAILED', signal);
    },
    async clearSnapshot(tag, signal) {
      checkTag(tag);
      await call('clearSnapshot', { tag }, 'CBR_ERR_SNAPSHOT_FAILED', signal);
    },
    async listSnapshots(signal) {
      const tags = await call('listSnapshots', {}, 'CBR_ERR_SNAPSHOT_FAILED', signal);
      if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) {
        throw new CbrError('CBR_ERR_SNAPSHOT_FAILED', 'JMX listSnapshots answered something else than a list of tags');
      }
      return [...tags].sort();
    },
    async flush(keyspace, table, signal) {
      checkIdents(keyspace, table);
      await call('flush', { ...(keyspace ? { keyspace, tables: table ? [table] : [] } : {}) }, 'CBR_ERR_NODETOOL_FAILED', signal);
    },
    async drain(signal) {
      await call('drain', {}, 'CBR_ERR_NODETOOL_FAILED', signal);
    },
    async importSSTables(keyspace, table, dirs, signal) {
      checkIdents(keyspace, table);
      checkDirs(dirs);
      const failed = await call('import', { keyspace, table, dirs }, 'CBR_ERR_IMPORT_FAILED', signal);
      if (!Array.isArray(failed)) throw new CbrError('CBR_ERR_IMPORT_FAILED', 'JMX import answered something else than a list of directories');
      return failed.map(String);
    },
    close: () => session.close(),
  };
}

/** A small heap and a quick start: the client holds one JMX connection and a few strings. */
const JMX_CLIENT_JVM = ['-Xmx64m', '-Xss512k', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-XX:-UsePerfData', '-Djava.net.preferIPv4Stack=true'];

const jmxStatusSchema = z.object({
  hostId: z.string(),
  live: z.boolean(),
  state: z.enum(['Normal', 'Joining', 'Leaving', 'Moving']),
  mode: z.string(),
});

/** The client's `status` answer, checked. */
export function parseJmxStatus(value: unknown): NodeStatus {
  const parsed = jmxStatusSchema.safeParse(value);
  if (!parsed.success) throw new CbrError('CBR_ERR_NODETOOL_FAILED', 'JMX status answered an unexpected shape');
  return parsed.data;
}

/** The password of `user` in a nodetool -pwf file ("user password" per line); the file's content never goes into an error. */
export async function readJmxPassword(path: string, user: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CbrError('CBR_ERR_CONFIG', `cannot read JMX password file ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*(\S+)\s+(.*?)\s*$/.exec(line);
    if (m && m[1] === user && !line.trimStart().startsWith('#')) return m[2] ?? '';
  }
  throw new CbrError('CBR_ERR_CONFIG', `JMX password file ${path} has no line for user ${user}`);
}

function checkIdents(keyspace?: string, table?: string): void {
  if (keyspace !== undefined && !IDENT_RE.test(keyspace)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `bad keyspace name ${keyspace}`);
  if (table !== undefined && !IDENT_RE.test(table)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `bad table name ${table}`);
}

function checkDirs(dirs: string[]): void {
  if (dirs.length === 0 || !dirs.every((d) => d.startsWith('/') && !d.includes('\n')))
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'import takes one or more absolute directories');
}

export function checkTag(tag: string): void {
  if (!TAG_RE.test(tag)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `snapshot tag must match ${TAG_RE}`);
}

/** Snapshot tags from `nodetool listsnapshots` (the first column of each data row). */
export function parseListSnapshots(out: string): string[] {
  const tags = new Set<string>();
  let inTable = false;
  for (const line of out.split('\n')) {
    if (/^Snapshot name/.test(line)) {
      inTable = true;
      continue;
    }
    if (!inTable) continue;
    if (!line.trim() || /^Total/.test(line)) continue;
    const tag = line.trim().split(/\s+/)[0];
    if (tag) tags.add(tag);
  }
  return [...tags];
}

/** A quiet logback config for the nodetool JVM (otherwise logback prints DEBUG lines into its output). */
export async function toolsLogback(env: NodeJS.ProcessEnv): Promise<string> {
  const path = join(cbrCache(env), 'logback-tools.xml');
  if (!existsSync(path)) {
    await mkdir(cbrCache(env), { recursive: true });
    await writeFile(
      path,
      '<configuration><appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender"><target>System.err</target>' +
        '<encoder><pattern>%-5level %msg%n</pattern></encoder></appender><root level="WARN"><appender-ref ref="STDERR"/></root></configuration>\n',
    );
  }
  return path;
}

/** nodetool prints "error: <reason>" and then a stack trace; keep the reason, else the last lines that are not a trace. */
export function nodetoolMessage(output: string): string {
  const lines = output.split('\n').map((l) => l.trim());
  const error = lines.find((l) => /^error:/i.test(l));
  if (error) return error.replace(/^error:\s*/i, '');
  return lines
    .filter((l) => l && !l.startsWith('WARNING') && !l.startsWith('at ') && !l.startsWith('-- StackTrace'))
    .slice(-3)
    .join(' | ');
}
