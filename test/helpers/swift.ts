import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
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

/**
 * A loopback proxy in front of the Swift all-in-one (v1 auth), for failures Swift itself will not give: `drop`
 * sees each request, and when it answers true the request still goes to Swift (which commits it) but its answer
 * never comes back (the client's socket is cut, as a lost response or a gateway's timeout would). The auth
 * answer's X-Storage-Url is rewritten to the proxy so every later request passes through it. `down()` stands for a
 * storage outage without stopping the Swift other tests share: every open connection is cut, and every request
 * until `up()` has its connection reset.
 */
export async function lossyProxy(
  drop: (method: string, url: string) => boolean = () => false,
): Promise<{ authUrl: string; down(): void; up(): void; close(): Promise<void> }> {
  const upstream = new URL(SWIFT_AUTH_URL);
  let outage = false;
  const server = createServer((req, res) => {
    if (outage) {
      req.socket.destroy();
      return;
    }
    const lose = drop(req.method ?? 'GET', req.url ?? '/');
    const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      if (lose) {
        up.resume();
        up.on('end', () => req.socket.destroy());
        return;
      }
      const headers = { ...up.headers };
      const storage = headers['x-storage-url'];
      if (typeof storage === 'string') headers['x-storage-url'] = storage.replace(upstream.origin, origin());
      res.writeHead(up.statusCode ?? 502, headers);
      up.pipe(res);
    });
    out.on('error', () => req.socket.destroy());
    req.pipe(out);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const origin = () => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    authUrl: `${origin()}${upstream.pathname}`,
    down() {
      outage = true;
      server.closeAllConnections();
    },
    up() {
      outage = false;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
