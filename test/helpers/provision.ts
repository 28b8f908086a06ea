import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from './paths.ts';

/**
 * Runs one of the deploy/ scripts that make a test's dependency present (the same ones .ci/run calls), so a test
 * run on a fresh machine provisions what it needs. They are idempotent and instant when all is there. A failure
 * throws with `code` and the script's own explanation (exit 3: missing, and not root to install it).
 */
export function provision(script: string, args: string[] = [], code = 'CBR_TEST_PROVISION_FAILED'): void {
  try {
    execFileSync('bash', [join(REPO, 'deploy', script), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as { status?: number | null; stderr?: Buffer; message: string };
    const why = e.stderr?.toString().trim() || e.message;
    throw Object.assign(new Error(`${code}: deploy/${script} ${args.join(' ')} failed (exit ${e.status ?? '?'}): ${why}`), { code });
  }
}
