import { writeFileSync } from 'node:fs';
import { DEFAULT_CASSANDRA_VERSION, ensureDistribution } from '../src/sandbox/dist.ts';
import { cdsJvmOptions, ensureCdsArchive } from './helpers/cds.ts';
import { CDS_OPTIONS_FILE, removeAllSandboxes, testEnv } from './helpers/env.ts';
import { provision } from './helpers/provision.ts';

// `npm test` on a fresh machine provisions what every test file needs, through the deploy/ scripts .ci/run calls:
// the JDK, Maven, zstd, curl and procps, the Cassandra jars, and RabbitMQ (unless the tests are pointed at another
// broker). Services only some files use are provisioned by their helpers: Swift (helpers/swift.ts), Keystone (its
// test), Chromium (helpers/browser.ts). Nodes are started lazily by the tests that need them and shared across
// files; this stops them all at the end.
export async function globalSetup(): Promise<void> {
  provision('tools/ensure.sh');
  if (!process.env['CBR_TEST_BUS_URL']) provision('rabbitmq/ensure.sh');
  await ensureDistribution(DEFAULT_CASSANDRA_VERSION, testEnv);
  await removeAllSandboxes();
  // Every node start of the run loads Cassandra's classes from one archive made here once (helpers/cds.ts).
  const archive = process.env['CBR_SANDBOX_JVM_OPTS'] === undefined ? await ensureCdsArchive(testEnv) : null;
  writeFileSync(CDS_OPTIONS_FILE, archive ? `${cdsJvmOptions(archive)}\n` : '');
}

export async function globalTeardown(): Promise<void> {
  if (process.env['CBR_KEEP_NODES']) return;
  await removeAllSandboxes();
}
