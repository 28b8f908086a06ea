import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { classpath, findJavaHome } from '../../src/cassandra/java.ts';
import { DEFAULT_CASSANDRA_VERSION, distributionDir } from '../../src/sandbox/dist.ts';
import { removeSandbox, startSandbox, stopSandbox } from '../../src/sandbox/sandbox.ts';

const run = promisify(execFile);

/**
 * An AppCDS archive of the classes a Cassandra node loads while it starts, for the test nodes (the tests pass it
 * through CBR_SANDBOX_JVM_OPTS): the JVM maps them parsed and verified instead of reading ~10,000 classes from the
 * jars at every start. Measured (2026-12-01, 2 cores, load 13-16): a start took 4.4-5.2 s of CPU instead of
 * 6.4 (wall 9-15.6 s instead of 12.9-17.9). Behaviour is the same: with -Xshare:auto a JVM that cannot use the
 * archive (another JDK, other jars) loads from the jars as before.
 *
 * The archive is keyed by the JDK and the jars (names and times, which the JVM checks too), so a changed JDK or
 * distribution makes a new one rather than one every node would quietly refuse.
 */
export function cdsArchivePath(javaHome: string, version = DEFAULT_CASSANDRA_VERSION, env: NodeJS.ProcessEnv = process.env): string {
  const libDir = join(distributionDir(version, env), 'lib');
  const modules = join(javaHome, 'lib', 'modules');
  const key = createHash('sha256')
    .update(`${javaHome}\n${existsSync(modules) ? statSync(modules).mtimeMs : 0}\n`)
    .update(
      existsSync(libDir)
        ? readdirSync(libDir)
            .sort()
            .map((jar) => `${jar} ${statSync(join(libDir, jar)).mtimeMs}\n`)
            .join('')
        : '',
    )
    .digest('hex')
    .slice(0, 16);
  return join(distributionDir(version, env), 'cds', `nodes-${key}.jsa`);
}

/** The JVM options that use an archive. */
export function cdsJvmOptions(archive: string): string {
  return `-XX:SharedArchiveFile=${archive} -Xshare:auto`;
}

/**
 * Makes the archive once (about 10 s of CPU): a throwaway node started with its class list written out, then
 * `java -Xshare:dump` over that list, written under a temporary name and renamed, so two test runs making it at
 * once each leave a whole file. A failure leaves no archive, and the nodes load their classes from the jars.
 */
export async function ensureCdsArchive(env: NodeJS.ProcessEnv): Promise<string | null> {
  const javaHome = await findJavaHome(env);
  const archive = cdsArchivePath(javaHome, DEFAULT_CASSANDRA_VERSION, env);
  if (existsSync(archive)) return archive;
  mkdirSync(join(archive, '..'), { recursive: true });
  const list = `${archive}.classes-${process.pid}`;
  const temp = `${archive}.partial-${process.pid}`;
  const name = `cds-${process.pid}`;
  const nodeEnv = { ...env, CBR_SANDBOX_JVM_OPTS: `-XX:TieredStopAtLevel=1 -XX:DumpLoadedClassList=${list}` };
  try {
    await startSandbox(name, { env: nodeEnv });
    await stopSandbox(name, nodeEnv);
    const libDir = join(distributionDir(DEFAULT_CASSANDRA_VERSION, env), 'lib');
    await run(
      join(javaHome, 'bin', 'java'),
      ['-Xshare:dump', `-XX:SharedClassListFile=${list}`, `-XX:SharedArchiveFile=${temp}`, '-Xlog:cds=off', '-Xlog:cds+dynamic=off', '-cp', classpath(libDir)],
      { maxBuffer: 16 * 1024 * 1024 },
    );
    await rename(temp, archive);
    return archive;
  } catch (err) {
    process.stderr.write(`[test] no CDS archive for the test nodes (they load their classes from the jars): ${(err as Error).message}\n`);
    return null;
  } finally {
    await removeSandbox(name, nodeEnv).catch(() => {});
    await rm(list, { force: true });
    await rm(temp, { force: true });
  }
}
