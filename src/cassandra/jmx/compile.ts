import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CbrError } from '../../core/errors.ts';
import { cbrCache } from '../../core/paths.ts';

/** The client's source, shipped in the repository: a fresh clone compiles it at first use. */
export const JMX_SOURCE = fileURLToPath(new URL('./CbrJmx.java', import.meta.url));
export const JMX_MAIN = 'CbrJmx';

const compiled = new Map<string, Promise<string>>();

/**
 * The folder holding the compiled client: `<cache>/jmx-<hash of the source>`, so an edited source compiles anew.
 * javac writes into a temporary folder that is then renamed into place, so a reader never sees half a build, and
 * two processes compiling at once both end with the same complete folder (the loser of the rename drops its own).
 */
export function jmxClasses(javaHome: string, env: NodeJS.ProcessEnv = process.env, source = JMX_SOURCE): Promise<string> {
  const key = `${javaHome}\0${cbrCache(env)}\0${source}`;
  let p = compiled.get(key);
  if (!p) {
    p = compileJmxClient(javaHome, cbrCache(env), source);
    compiled.set(key, p);
    p.catch(() => compiled.delete(key));
  }
  return p;
}

export async function compileJmxClient(javaHome: string, cache: string, source: string): Promise<string> {
  const text = await readFile(source);
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 16);
  const dir = join(cache, `jmx-${hash}`);
  if (existsSync(join(dir, `${JMX_MAIN}.class`))) return dir;
  const javac = join(javaHome, 'bin', 'javac');
  if (!existsSync(javac)) {
    throw new CbrError(
      'CBR_ERR_JAVA_NOT_FOUND',
      `${javac} not found: cbr's JMX client needs a JDK (not a JRE) at profile java.home, or set jmx.client to "nodetool"`,
    );
  }
  await mkdir(cache, { recursive: true });
  const tmp = await mkdtemp(join(cache, `.jmx-${hash}-`));
  try {
    // --release 11: the same classes run on the JDK 11 or 17 that runs Cassandra 5.0.
    await promisify(execFile)(javac, ['--release', '11', '-nowarn', '-d', tmp, source]);
    await rename(tmp, dir).catch((err: NodeJS.ErrnoException) => {
      // Another process got there first with the same source: its folder is as good as ours.
      if (!existsSync(join(dir, `${JMX_MAIN}.class`))) throw err;
    });
  } catch (err) {
    if (err instanceof CbrError) throw err;
    const e = err as { stderr?: string; message: string };
    throw new CbrError('CBR_ERR_NODETOOL_FAILED', `cannot compile cbr's JMX client: ${(e.stderr || e.message).trim().split('\n').slice(0, 3).join(' | ')}`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return dir;
}
