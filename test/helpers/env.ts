import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadProfile, type Profile } from '../../src/cassandra/profile.ts';
import { listSandboxes, profilePath, removeSandbox, startSandbox } from '../../src/sandbox/sandbox.ts';

export { REPO } from './paths.ts';

import { REPO } from './paths.ts';

/** One CBR_HOME for the whole test run, so started nodes are shared between test files. */
export const TEST_HOME = process.env['CBR_TEST_HOME'] ?? join(REPO, '.cache', 'test-home');
mkdirSync(TEST_HOME, { recursive: true });

export const testEnv: NodeJS.ProcessEnv = { ...process.env, CBR_HOME: TEST_HOME, CBR_SANDBOX_HEAP: process.env['CBR_SANDBOX_HEAP'] ?? '768M' };

/** A running sandbox node shared by every test file (started once, stopped by the global teardown). */
export async function sharedNode(name: string, clusterName?: string): Promise<Profile> {
  await startSandbox(name, { env: testEnv, ...(clusterName ? { clusterName } : {}) });
  return loadProfile(profilePath(name, testEnv));
}

export async function removeAllSandboxes(): Promise<void> {
  for (const name of await listSandboxes(testEnv)) await removeSandbox(name, testEnv);
}

export function scratchDir(label: string): string {
  const dir = join(TEST_HOME, 'scratch', `${label}-${process.pid}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}
