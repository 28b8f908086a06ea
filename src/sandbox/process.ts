import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { classpath, JDK17_MODULE_OPTIONS } from '../cassandra/java.ts';
import { loadCredentials, type Profile } from '../cassandra/profile.ts';
import { waitForCql } from '../cassandra/ready.ts';
import { CbrError } from '../core/errors.ts';
import type { SandboxOptions } from './sandbox.ts';

/**
 * The CassandraDaemon process of one sandbox folder: spawned detached with the JVM options of Cassandra's
 * jvm17-server.options, found again through /proc (never by pid file alone), stopped with SIGTERM then SIGKILL.
 */

/**
 * Starts the Cassandra process of an instance folder, unless it already runs, and waits for CQL. A process found
 * running that was not started here (left by a killed cbr) may be on its way down (it had been told to stop):
 * if it exits while waited for, it is waited out and the node started once more.
 */
export async function startInstance(profile: Profile, opts: SandboxOptions = {}): Promise<void> {
  if (profile.service.kind !== 'sandbox') throw new CbrError('CBR_ERR_CONFIG', 'not a sandbox profile');
  const dir = profile.service.instanceDir;
  const inherited = runningPid(dir);
  if (inherited === null) {
    opts.signal?.throwIfAborted();
    await spawnInstance(profile, dir, opts);
    await waitForInstance(profile, dir, opts);
    return;
  }
  try {
    await waitForInstance(profile, dir, opts);
  } catch (err) {
    if (!(err instanceof CbrError && err.code === 'CBR_ERR_SANDBOX_START_FAILED' && /exited/.test(err.message))) throw err;
    while (runningPid(dir) !== null) await sleep(100);
    // A rollback that stops the node while a cancelled step still waits for it here must not see it come back.
    opts.signal?.throwIfAborted();
    await spawnInstance(profile, dir, opts);
    await waitForInstance(profile, dir, opts);
  }
}

async function waitForInstance(profile: Profile, dir: string, opts: SandboxOptions): Promise<void> {
  const requireAuth = opts.requireAuth ?? true;
  await waitForCql(
    { ...profile.cql, ...opts.cql, credentials: requireAuth ? await loadCredentials(profile.cql.credentialsFile) : undefined },
    { timeoutMs: opts.timeoutMs ?? 180_000, requireAuth, alive: () => runningPid(dir) !== null, diagnose: () => logTail(dir) },
  );
}

async function spawnInstance(profile: Profile, dir: string, opts: SandboxOptions): Promise<void> {
  // A cluster node keeps its own heap (conf/heap, written at creation) through every later restart.
  const heap = opts.heap ?? instanceHeap(dir) ?? opts.env?.['CBR_SANDBOX_HEAP'] ?? process.env['CBR_SANDBOX_HEAP'] ?? '768M';
  const libDir = profile.java.libDir;
  const jamm = (await readdir(libDir)).find((f) => /^jamm-.*\.jar$/.test(f));
  if (!jamm) throw new CbrError('CBR_ERR_SANDBOX_START_FAILED', `no jamm jar in ${libDir}`);
  const args = [
    `-Xms${heap}`,
    `-Xmx${heap}`,
    '-Xss256k',
    '-XX:+UseG1GC',
    '-XX:+HeapDumpOnOutOfMemoryError',
    `-XX:HeapDumpPath=${join(dir, 'logs')}`,
    `-javaagent:${join(libDir, jamm)}`,
    ...JDK17_MODULE_OPTIONS,
    `-Dcassandra.jmx.local.port=${profile.jmx.port}`,
    '-Dcassandra-foreground=yes',
    `-Dcassandra.config=file://${profile.cassandraYaml}`,
    `-Dcassandra.storagedir=${dir}`,
    `-Dcassandra.logdir=${join(dir, 'logs')}`,
    `-Dlogback.configurationFile=${join(dir, 'conf', 'logback.xml')}`,
    '-Dcassandra.skip_wait_for_gossip_to_settle=0',
    '-Dcassandra.superuser_setup_delay_ms=0',
    '-Dcassandra.ring_delay_ms=1000',
    // A stop (SIGTERM, so Cassandra drains) takes about 1 s instead of 5: Cassandra waits 2 s after announcing
    // its shutdown to its peers (over loopback they have it in well under 200 ms), then up to 2 s more for
    // in-flight internode requests to settle; the flushes of the drain that make the stop clean are unchanged.
    '-Dcassandra.shutdown_announce_in_ms=200',
    '-Dcassandra.test.messagingService.nonGracefulShutdown=true',
    ...extraJvmOptions(opts.env ?? process.env),
    '-cp',
    classpath(libDir),
    'org.apache.cassandra.service.CassandraDaemon',
  ];
  const out = openSync(join(dir, 'logs', 'stdout.log'), 'a');
  const child = spawn(join(profile.java.home, 'bin', 'java'), args, {
    cwd: dir,
    detached: true,
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  if (child.pid === undefined) throw new CbrError('CBR_ERR_SANDBOX_START_FAILED', 'java did not start');
  await writeFile(join(dir, 'cassandra.pid'), `${child.pid}\n`);
  child.unref();
}

/** `CBR_SANDBOX_JVM_OPTS`: more JVM options for sandbox nodes (space-separated), e.g. GC logging or a CDS archive. */
function extraJvmOptions(env: NodeJS.ProcessEnv): string[] {
  return (env['CBR_SANDBOX_JVM_OPTS'] ?? '').split(/\s+/).filter((o) => o !== '');
}

function instanceHeap(dir: string): string | undefined {
  try {
    return readFileSync(join(dir, 'conf', 'heap'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Stops the instance: SIGTERM, then SIGKILL after the grace period. Idempotent. */
export async function stopInstance(dir: string, graceMs = 60_000): Promise<void> {
  const pid = runningPid(dir);
  if (pid === null) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (runningPid(dir) === null) return;
    await sleep(50);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
  while (runningPid(dir) !== null) await sleep(100);
}

/**
 * The pid of the instance's CassandraDaemon, or null; checks /proc so a recycled pid is not mistaken for it. A
 * process started by a cbr that was killed before it wrote the pid file is found too (by its command line):
 * whatever a crash left running or booting on these directories is seen, waited for or stopped, never doubled.
 */
export function runningPid(dir: string): number | null {
  let pid = Number.NaN;
  try {
    pid = Number(readFileSync(join(dir, 'cassandra.pid'), 'utf8').trim());
  } catch {
    /* no pid file: look for the process itself */
  }
  if (Number.isInteger(pid) && pid > 0 && isInstanceProcess(pid, dir)) return pid;
  return findInstanceProcess(dir);
}

function isInstanceProcess(pid: number, dir: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!cmdline.includes('CassandraDaemon') || !cmdline.split('\0').includes(`-Dcassandra.storagedir=${dir}`)) return false;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

function findInstanceProcess(dir: string): number | null {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return null;
  }
  for (const e of entries) {
    if (!/^[0-9]+$/.test(e)) continue;
    const pid = Number(e);
    if (pid !== process.pid && isInstanceProcess(pid, dir)) return pid;
  }
  return null;
}

async function logTail(dir: string, lines = 15): Promise<string> {
  const out: string[] = [];
  for (const f of ['system.log', 'stdout.log']) {
    try {
      const text = await readFile(join(dir, 'logs', f), 'utf8');
      const tail = text
        .trimEnd()
        .split('\n')
        .filter((l) => /ERROR|Exception|WARN|Caused|Error/.test(l))
        .slice(-lines);
      if (tail.length) out.push(`[${f}]`, ...tail);
    } catch {
      /* no such log yet */
    }
  }
  return out.join('\n') || '(no log output)';
}
