import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadProfile, type Profile } from '../../src/cassandra/profile.ts';
import { clusterProfiles, listClusters, removeCluster, startCluster } from '../../src/sandbox/cluster.ts';
import { listSandboxes, profilePath, removeSandbox, startSandbox } from '../../src/sandbox/sandbox.ts';

export { REPO } from './paths.ts';

import { REPO } from './paths.ts';

/** One CBR_HOME for the whole test run, so started nodes are shared between test files. */
export const TEST_HOME = process.env['CBR_TEST_HOME'] ?? join(REPO, '.cache', 'test-home');
mkdirSync(TEST_HOME, { recursive: true });

/**
 * Where the global setup notes the JVM options of the nodes' class-data-sharing archive (helpers/cds.ts), read by
 * every test file; empty when there is none.
 */
export const CDS_OPTIONS_FILE = join(TEST_HOME, 'cds-jvm-options');

function cdsOptions(): string {
  try {
    return readFileSync(CDS_OPTIONS_FILE, 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * Test nodes run with the C1 compiler only: a node's start (and every restore starts one twice) takes 13-16 s instead of
 * 24-26 s on 2 busy cores, since C2 compiling Cassandra's startup path competes for the CPU. Behaviour is the same;
 * benchmarks and `npm run demo` keep the JVM's default tiers.
 */

export const testEnv: NodeJS.ProcessEnv = {
  ...process.env,
  CBR_HOME: TEST_HOME,
  CBR_SANDBOX_HEAP: process.env['CBR_SANDBOX_HEAP'] ?? '768M',
  CBR_SANDBOX_JVM_OPTS: process.env['CBR_SANDBOX_JVM_OPTS'] ?? `-XX:TieredStopAtLevel=1 ${cdsOptions()}`.trim(),
};

/** A running sandbox node shared by every test file (started once, stopped by the global teardown). */
export async function sharedNode(name: string, clusterName?: string): Promise<Profile> {
  await startSandbox(name, { env: testEnv, ...(clusterName ? { clusterName } : {}) });
  return loadProfile(profilePath(name, testEnv));
}

/**
 * The running 3-node cluster shared by every test file that needs one (started once, by whichever file comes first;
 * stopped by the global teardown): its nodes' profiles, node 1 first. Files seed keyspaces of their own in it.
 */
export const SHARED_CLUSTER = 'ring';
export async function sharedCluster(): Promise<Profile[]> {
  await startCluster(SHARED_CLUSTER, 3, { env: testEnv });
  return clusterProfiles(SHARED_CLUSTER, testEnv);
}

export async function removeAllSandboxes(): Promise<void> {
  for (const name of await listClusters(testEnv)) await removeCluster(name, testEnv);
  for (const name of await listSandboxes(testEnv)) await removeSandbox(name, testEnv);
}

export function scratchDir(label: string): string {
  const dir = join(TEST_HOME, 'scratch', `${label}-${process.pid}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}
