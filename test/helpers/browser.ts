import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { REPO } from './paths.ts';
import { provision } from './provision.ts';

/**
 * Debian's Chromium (apt package chromium), driven by playwright-core: no browser download. The first launch
 * installs it when it is missing (deploy/chromium/ensure.sh, as root), unless CBR_TEST_CHROMIUM names another.
 */
export const CHROMIUM = process.env['CBR_TEST_CHROMIUM'] ?? '/usr/bin/chromium';

/** Screenshots and measurements of browser tests; CI keeps the directory as artifacts. */
export const ARTIFACTS = join(REPO, 'test-artifacts');
mkdirSync(ARTIFACTS, { recursive: true });

/** `extraArgs`: more Chromium switches, e.g. `--host-resolver-rules=MAP name 127.0.0.1` to point a name at this machine. */
export async function launchBrowser(extraArgs: string[] = []): Promise<Browser> {
  if (!process.env['CBR_TEST_CHROMIUM']) provision('chromium/ensure.sh', [], 'CBR_TEST_CHROMIUM_MISSING');
  return chromium.launch({
    executablePath: CHROMIUM,
    // This machine's network is closed: without the background-networking flags Chromium keeps dialling out.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
  });
}
