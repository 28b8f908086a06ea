import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { classpath, JDK17_MODULE_OPTIONS } from '../../src/cassandra/java.ts';
import type { Profile } from '../../src/cassandra/profile.ts';

/** Cassandra's own `nodetool <args>` against a test node: the same JVM nodetool.ts runs, for verbs cbr has no use for (compact). */
export async function nodetool(profile: Profile, ...args: string[]): Promise<string> {
  const java = join(profile.java.home, 'bin', 'java');
  const { stdout } = await promisify(execFile)(java, [
    '-Xmx128m',
    '-XX:+UseSerialGC',
    ...JDK17_MODULE_OPTIONS,
    '-cp',
    classpath(profile.java.libDir),
    'org.apache.cassandra.tools.NodeTool',
    '-h',
    profile.jmx.host,
    '-p',
    String(profile.jmx.port),
    ...args,
  ]);
  return stdout;
}
