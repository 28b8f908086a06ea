import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CbrError, type ErrorCode } from '../core/errors.ts';
import { cbrCache } from '../core/paths.ts';
import { classpath, JDK17_MODULE_OPTIONS } from './java.ts';
import type { Profile } from './profile.ts';

/** The nodetool commands cbr uses, on the node's JMX port. */
export interface Nodetool {
  /** Raw `nodetool status` output; throws CBR_ERR_NODETOOL_FAILED when JMX does not answer. */
  status(signal?: AbortSignal): Promise<string>;
  snapshot(tag: string, signal?: AbortSignal): Promise<void>;
  clearSnapshot(tag: string, signal?: AbortSignal): Promise<void>;
  listSnapshots(signal?: AbortSignal): Promise<string[]>;
  flush(keyspace?: string, table?: string, signal?: AbortSignal): Promise<void>;
  drain(signal?: AbortSignal): Promise<void>;
}

const TAG_RE = /^[A-Za-z0-9_-]{1,64}$/;
const IDENT_RE = /^[A-Za-z0-9_]{1,48}$/;

/**
 * Runs org.apache.cassandra.tools.NodeTool in a JVM with the node's jars. JMX credentials go by password file
 * (`-pwf`), never on the command line.
 */
export function createNodetool(profile: Profile, env: NodeJS.ProcessEnv = process.env): Nodetool {
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
    status: (signal) => run(['status'], 'CBR_ERR_NODETOOL_FAILED', signal),
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
      if (keyspace) {
        if (!IDENT_RE.test(keyspace)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `bad keyspace name ${keyspace}`);
        args.push('--', keyspace);
        if (table) {
          if (!IDENT_RE.test(table)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `bad table name ${table}`);
          args.push(table);
        }
      }
      await run(args, 'CBR_ERR_NODETOOL_FAILED', signal);
    },
    async drain(signal) {
      await run(['drain'], 'CBR_ERR_NODETOOL_FAILED', signal);
    },
  };
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
async function toolsLogback(env: NodeJS.ProcessEnv): Promise<string> {
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
