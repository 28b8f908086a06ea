import { removeAllSandboxes } from './helpers/env.ts';

// Nodes are started lazily by the tests that need them and shared across files; this stops them all at the end.
export async function globalSetup(): Promise<void> {
  await removeAllSandboxes();
}

export async function globalTeardown(): Promise<void> {
  if (process.env['CBR_KEEP_NODES']) return;
  await removeAllSandboxes();
}
