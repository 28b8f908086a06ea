import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CbrError } from '../core/errors.ts';

const run = promisify(execFile);

/** Finds a JDK 17 (or 11): $JAVA_HOME if it is one, else /usr/lib/jvm. Cassandra 5.0 runs on 11 and 17 only. */
export async function findJavaHome(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const candidates: string[] = [];
  if (env['CBR_JAVA_HOME']) candidates.push(env['CBR_JAVA_HOME']);
  if (env['JAVA_HOME']) candidates.push(env['JAVA_HOME']);
  if (existsSync('/usr/lib/jvm')) {
    const dirs = readdirSync('/usr/lib/jvm')
      .filter((d) => /17|11/.test(d))
      .sort((a, b) => rank(b) - rank(a));
    candidates.push(...dirs.map((d) => join('/usr/lib/jvm', d)));
  }
  for (const home of candidates) {
    const java = join(home, 'bin', 'java');
    if (!existsSync(java)) continue;
    const major = await javaMajor(java).catch(() => 0);
    if (major === 17 || major === 11) return home;
  }
  throw new CbrError('CBR_ERR_JAVA_NOT_FOUND', `no JDK 11 or 17 found (looked at: ${candidates.join(', ') || 'nothing'}); set CBR_JAVA_HOME`);
}

function rank(dir: string): number {
  return dir.includes('17') ? 2 : 1;
}

async function javaMajor(java: string): Promise<number> {
  const { stderr } = await run(java, ['-version']);
  const m = /version "(\d+)/.exec(stderr);
  return m ? Number(m[1]) : 0;
}

/**
 * JVM options Cassandra 5.0 needs on JDK 17: its conf/jvm17-server.options (the module exports and opens)
 * and conf/jvm-server.options. Shared by the server and by nodetool.
 */
export const JDK17_MODULE_OPTIONS: readonly string[] = [
  '-Djdk.attach.allowAttachSelf=true',
  ...[
    'java.base/jdk.internal.misc',
    'java.management.rmi/com.sun.jmx.remote.internal.rmi',
    'java.management/com.sun.jmx.remote.security',
    'java.rmi/sun.rmi.registry',
    'java.rmi/sun.rmi.server',
    'java.sql/java.sql',
    'java.base/java.lang.ref',
    'jdk.unsupported/sun.misc',
  ].map((m) => `--add-exports=${m}=ALL-UNNAMED`),
  ...[
    'java.base/java.lang.module',
    'java.base/jdk.internal.loader',
    'java.base/jdk.internal.ref',
    'java.base/jdk.internal.reflect',
    'java.base/jdk.internal.math',
    'java.base/jdk.internal.module',
    'java.base/jdk.internal.util.jar',
    'java.base/sun.nio.ch',
    'java.base/java.io',
    'java.base/java.lang.reflect',
    'java.base/java.lang',
    'java.base/java.util',
    'java.base/java.nio',
    'jdk.management/com.sun.management.internal',
  ].map((m) => `--add-opens=${m}=ALL-UNNAMED`),
  '-Dio.netty.tryReflectionSetAccessible=true',
  '-Djava.net.preferIPv4Stack=true',
];

export function classpath(libDir: string): string {
  return join(libDir, '*');
}
