import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, scratchDir } from './env.ts';

export const SWIFT_AUTH_URL = process.env['CBR_TEST_SWIFT_AUTH_URL'] ?? 'http://127.0.0.1:8080/auth/v1.0';

/** Starts the project's Swift all-in-one (idempotent) and returns a 0600 credentials file for test:tester. */
export function swiftUp(): string {
  execFileSync('bash', [join(REPO, 'deploy', 'swift', 'start.sh')], { stdio: 'ignore' });
  const file = join(scratchDir('swift'), 'credentials.json');
  writeFileSync(file, JSON.stringify({ username: 'test:tester', password: 'testing' }), { mode: 0o600 });
  return file;
}

/** Env for the CLI to use Swift with its own container (a namespace per test run). */
export function swiftEnv(base: NodeJS.ProcessEnv, credentialsFile: string, container: string, segmentSize?: string): NodeJS.ProcessEnv {
  return {
    ...base,
    CBR_STORAGE: 'swift',
    CBR_SWIFT_AUTH_URL: SWIFT_AUTH_URL,
    CBR_SWIFT_CREDENTIALS_FILE: credentialsFile,
    CBR_CONTAINER: container,
    ...(segmentSize ? { CBR_SWIFT_SEGMENT_SIZE: segmentSize } : {}),
  };
}

export async function swiftToken(): Promise<{ token: string; url: string }> {
  const res = await fetch(SWIFT_AUTH_URL, { headers: { 'X-Auth-User': 'test:tester', 'X-Auth-Key': 'testing' } });
  return { token: res.headers.get('x-auth-token')!, url: res.headers.get('x-storage-url')! };
}

/** Object names in a container (empty when the container does not exist). */
export async function swiftList(container: string, prefix = ''): Promise<string[]> {
  const { token, url } = await swiftToken();
  const res = await fetch(`${url}/${container}?format=json&prefix=${encodeURIComponent(prefix)}`, { headers: { 'X-Auth-Token': token } });
  if (res.status === 404 || res.status === 204) return [];
  return ((await res.json()) as { name: string }[]).map((o) => o.name);
}

export function killProxy(): void {
  execFileSync('pkill', ['-9', '-f', 'proxy-server.conf']);
}
