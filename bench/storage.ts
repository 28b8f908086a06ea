// npm run bench:storage — upload and download MB/s through each storage driver, beside curl (Swift) and cp
// (local) on the same 1 GiB object, in one run. Needs the Swift all-in-one (deploy/swift/start.sh).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createLocalStore } from '../src/storage/local/localStore.ts';
import type { ObjectStore } from '../src/storage/port.ts';
import { createS3Store } from '../src/storage/s3/s3Store.ts';
import { createSwiftStore } from '../src/storage/swift/swiftStore.ts';
import { BENCH_DIR, REPO, sh, table } from './lib.ts';

const SIZE = Number(process.env['CBR_BENCH_STORAGE_MIB'] ?? 1024) * 2 ** 20;
const dir = join(BENCH_DIR, 'storage');
mkdirSync(dir, { recursive: true });
const file = join(dir, 'object.bin');
if (!existsSync(file)) {
  const out = createWriteStream(file);
  for (let n = 0; n < SIZE; n += 1 << 20) out.write(randomBytes(1 << 20));
  await new Promise((r) => out.end(r));
}
execFileSync('bash', [join(REPO, 'deploy', 'swift', 'start.sh')], { stdio: 'ignore' });
const creds = join(dir, 'swift.json');
writeFileSync(creds, JSON.stringify({ username: 'test:tester', password: 'testing' }), { mode: 0o600 });
const auth = await fetch('http://127.0.0.1:8080/auth/v1.0', { headers: { 'X-Auth-User': 'test:tester', 'X-Auth-Key': 'testing' } });
const token = auth.headers.get('x-auth-token')!;
const url = auth.headers.get('x-storage-url')!;

const time = async (fn: () => Promise<unknown>) => {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
};
const mbps = (s: number) => (SIZE / 1e6 / s).toFixed(0);
const rows: string[][] = [];
const run = async (name: string, store: ObjectStore) => {
  const up = await time(() => store.put('bench/object', createReadStream(file, { highWaterMark: 1 << 20 })));
  const down = await time(async () => pipeline(await store.get('bench/object'), createWriteStream('/dev/null')));
  await store.delete('bench/object');
  rows.push([name, up.toFixed(2), mbps(up), down.toFixed(2), mbps(down)]);
};
await run('cbr local driver', createLocalStore(join(dir, 'root'), 'database_backups'));
const cpUp = sh(`mkdir -p '${dir}/cp' && cp '${file}' '${dir}/cp/object' && sync`).seconds;
const cpDown = sh(`cat '${dir}/cp/object' > /dev/null`).seconds;
rows.push(['cp / cat (local)', cpUp.toFixed(2), mbps(cpUp), cpDown.toFixed(2), mbps(cpDown)]);
await run(
  'cbr swift driver (1 GiB segments)',
  createSwiftStore({ driver: 'swift', authUrl: 'http://127.0.0.1:8080/auth/v1.0', authVersion: 1, credentialsFile: creds, container: 'bench' }),
);
await run(
  'cbr swift driver (256 MiB segments, SLO)',
  createSwiftStore({
    driver: 'swift',
    authUrl: 'http://127.0.0.1:8080/auth/v1.0',
    authVersion: 1,
    credentialsFile: creds,
    container: 'bench',
    segmentSize: 256 << 20,
  }),
);
const s3creds = join(dir, 's3.json');
writeFileSync(s3creds, JSON.stringify({ accessKeyId: 'test:tester', secretAccessKey: 'testing' }), { mode: 0o600 });
await run(
  'cbr s3 driver (s3api, 16 MiB parts)',
  createS3Store({
    driver: 's3',
    container: 'bench-s3',
    region: 'us-east-1',
    endpoint: 'http://127.0.0.1:8080',
    forcePathStyle: true,
    credentialsFile: s3creds,
  }),
);
sh(`curl -sf -X PUT -H 'X-Auth-Token: ${token}' '${url}/bench' -o /dev/null`);
const curlUp = sh(`curl -sf -T '${file}' -H 'X-Auth-Token: ${token}' '${url}/bench/curl-object' -o /dev/null`).seconds;
const curlDown = sh(`curl -sf -H 'X-Auth-Token: ${token}' '${url}/bench/curl-object' -o /dev/null`).seconds;
sh(`curl -sf -X DELETE -H 'X-Auth-Token: ${token}' '${url}/bench/curl-object' -o /dev/null`);
rows.push(['curl (Swift, one object)', curlUp.toFixed(2), mbps(curlUp), curlDown.toFixed(2), mbps(curlDown)]);
rmSync(join(dir, 'cp'), { recursive: true, force: true });
const report = `## Storage benchmark (${new Date().toISOString().slice(0, 10)}, 2 cores, Swift all-in-one on loopback)

${(SIZE / 2 ** 30).toFixed(2)} GiB of random bytes, one object, upload then download to /dev/null.
The Swift driver spools each segment to disk (for MD5 and per-segment retries) while the previous one uploads.

${table(['path', 'up s', 'up MB/s', 'down s', 'down MB/s'], rows)}
`;
writeFileSync(join(BENCH_DIR, 'storage.md'), report);
process.stdout.write(report);
