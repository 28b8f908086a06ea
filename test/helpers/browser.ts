import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { REPO } from './paths.ts';

/** Debian's Chromium (apt package chromium), driven by playwright-core: no browser download. */
export const CHROMIUM = process.env['CBR_TEST_CHROMIUM'] ?? '/usr/bin/chromium';

/** Screenshots and measurements of browser tests; CI keeps the directory as artifacts. */
export const ARTIFACTS = join(REPO, 'test-artifacts');
mkdirSync(ARTIFACTS, { recursive: true });

/** `extraArgs`: more Chromium switches, e.g. `--host-resolver-rules=MAP name 127.0.0.1` to point a name at this machine. */
export function launchBrowser(extraArgs: string[] = []): Promise<Browser> {
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
