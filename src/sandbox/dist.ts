import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CbrError } from '../core/errors.ts';
import { cbrCache } from '../core/paths.ts';

const run = promisify(execFile);

/** The Cassandra release the sandbox runs unless told otherwise. */
export const DEFAULT_CASSANDRA_VERSION = '5.0.6';

const POM = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'deploy', 'cassandra', 'pom.xml');

export interface Distribution {
  version: string;
  libDir: string;
  jammJar: string;
}

export function distributionDir(version: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(cbrCache(env), `cassandra-${version}`);
}

/**
 * Makes sure cassandra-all and its runtime dependencies sit in the cache, fetching them with Maven once.
 * A marker file is written last, so a fetch interrupted half-way is redone rather than trusted.
 */
export async function ensureDistribution(
  version = DEFAULT_CASSANDRA_VERSION,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Distribution & { fetched: boolean }> {
  const dir = distributionDir(version, env);
  const libDir = join(dir, 'lib');
  const marker = join(dir, '.complete');
  let fetched = false;
  if (!existsSync(marker)) {
    const staging = `${libDir}.partial-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    try {
      await run(
        'mvn',
        ['-q', '-B', '-f', POM, `-Dcassandra.version=${version}`, 'dependency:copy-dependencies', '-DincludeScope=runtime', `-DoutputDirectory=${staging}`],
        { maxBuffer: 16 * 1024 * 1024 },
      );
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      const e = err as { stdout?: string; stderr?: string; message: string };
      const tail = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n').slice(-5).join('\n') || e.message;
      throw new CbrError('CBR_ERR_CASSANDRA_FETCH_FAILED', `mvn could not fetch cassandra-all ${version}: ${tail}`);
    }
    await rm(libDir, { recursive: true, force: true });
    await rename(staging, libDir);
    await writeFile(marker, `${new Date().toISOString()}\n`);
    fetched = true;
  }
  const jamm = readdirSync(libDir).find((f) => /^jamm-.*\.jar$/.test(f));
  if (!jamm) throw new CbrError('CBR_ERR_CASSANDRA_FETCH_FAILED', `no jamm jar in ${libDir}`);
  return { version, libDir, jammJar: join(libDir, jamm), fetched };
}
