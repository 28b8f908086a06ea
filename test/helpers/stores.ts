import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { basename, join, sep } from 'node:path';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { openStore } from '../../src/storage/open.ts';
import type { ObjectStore, StorageConfig } from '../../src/storage/port.ts';
import { keystoneBody, objectStoreEndpoint } from '../../src/storage/swift/keystone.ts';
import { REPO, scratchDir } from './env.ts';
import { SWIFT_AUTH_URL, swiftToken, swiftUp } from './swift.ts';

const MiB = 1 << 20;

/**
 * One store the contract suite runs against, on a container of its own for this run, with a back door to what
 * the driver keeps out of `list()` (Swift segments, S3 multipart uploads, local partial files): the suite puts
 * such debris there to stand for a put killed with its process, and checks that failed puts leave none.
 */
export interface StoreUnderTest {
  store: ObjectStore;
  /** A store on a container nobody has written to (never created). */
  untouched: ObjectStore;
  /** Bytes per Swift segment or S3 part the store was opened with (local: any size will do). */
  segment: number;
  /**
   * Two racing create-only puts of one key: does the store let exactly one win? Local (link(2)) does. Swift checks
   * If-None-Match when a PUT starts, not when it lands, and Swift's s3api refuses conditional PUTs (the driver
   * falls back to HEAD then PUT): there both racers may win, one whole body replacing the other.
   */
  atomicCreateOnly: boolean;
  /** Leaves what a put of `key` killed mid-way leaves: one Swift segment, one S3 multipart upload, one partial file. */
  leaveDebris(key: string): Promise<void>;
  /** The driver's own things under `prefix` that list() does not show. */
  hidden(prefix: string): Promise<string[]>;
  tearDown(): Promise<void>;
}

export interface StoreTarget {
  name: string;
  /** Why this store skips the cases marked `scale` (the Swift all-in-one takes some 80 requests a second). */
  skipScale?: string;
  setUp(): Promise<StoreUnderTest>;
}

const runId = `${process.pid}-${Date.now().toString(36)}`;

export const localTarget: StoreTarget = {
  name: 'local',
  async setUp() {
    const root = scratchDir('contract-local');
    const base = join(root, 'c');
    return {
      store: openStore({ driver: 'local', root, container: 'c' }),
      untouched: openStore({ driver: 'local', root, container: 'never' }),
      segment: MiB,
      atomicCreateOnly: true,
      async leaveDebris(key) {
        const dir = join(base, ...key.split('/').slice(0, -1));
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, `.partial-${randomUUID()}`), 'half');
      },
      async hidden(prefix) {
        const all = await readdir(base, { recursive: true }).catch(() => [] as string[]);
        return all.map((p) => p.split(sep).join('/')).filter((p) => p.startsWith(prefix) && basename(p).startsWith('.partial-'));
      },
      tearDown: () => rm(root, { recursive: true, force: true }),
    };
  },
};

type SwiftAuth = () => Promise<{ token: string; url: string }>;

function swiftTarget(name: string, start: () => { auth: SwiftAuth; config: (container: string) => StorageConfig }, skipScale?: string): StoreTarget {
  return {
    name,
    ...(skipScale ? { skipScale } : {}),
    async setUp() {
      const { auth, config } = start();
      const container = `cbr-contract-${name.replace(/\W+/g, '-')}-${runId}`;
      const segments = `${container}_segments`;
      const call = async (method: string, path: string, body?: string) => {
        const { token, url } = await auth();
        const res = await fetch(`${url}/${path}`, { method, headers: { 'X-Auth-Token': token }, ...(body !== undefined ? { body } : {}) });
        if (res.status >= 300 && res.status !== 404) throw new Error(`${method} ${path}: Swift answered ${res.status}`);
        return res;
      };
      const names = async (c: string, prefix = '') => {
        const res = await call('GET', `${c}?format=json&prefix=${encodeURIComponent(prefix)}`);
        if (res.status !== 200) return [];
        return ((await res.json()) as { name: string }[]).map((o) => o.name);
      };
      const drop = async (c: string) => {
        for (let left = await names(c); left.length > 0; left = await names(c)) {
          await inParallel(left, 16, async (n) => void (await call('DELETE', `${c}/${n.split('/').map(encodeURIComponent).join('/')}`)));
        }
        await call('DELETE', c);
      };
      return {
        store: openStore(config(container)),
        untouched: openStore(config(`${container}-never`)),
        segment: MiB,
        atomicCreateOnly: false,
        async leaveDebris(key) {
          await call('PUT', segments);
          await call('PUT', `${segments}/${key}/${randomUUID()}/00000000`, 'half');
        },
        hidden: (prefix) => names(segments, prefix),
        async tearDown() {
          await drop(container);
          await drop(segments);
        },
      };
    },
  };
}

export const swiftV1Target = swiftTarget('Swift (v1 tempauth)', () => {
  const credentialsFile = swiftUp();
  return {
    auth: swiftToken,
    config: (container) => ({ driver: 'swift', authUrl: SWIFT_AUTH_URL, authVersion: 1, credentialsFile, container, segmentSize: MiB }),
  };
});

export const swiftKeystoneTarget = swiftTarget(
  'Swift (Keystone v3)',
  () => {
    execFileSync('bash', [join(REPO, 'deploy', 'keystone', 'start.sh')], { stdio: 'ignore' });
    const dir = process.env['CBR_KEYSTONE_DIR'] ?? '/var/tmp/cbr-keystone';
    const creds = { username: 'cbr', password: readFileSync(join(dir, 'cbr.password'), 'utf8') };
    const credentialsFile = join(scratchDir('contract-keystone'), 'credentials.json');
    writeFileSync(credentialsFile, JSON.stringify(creds), { mode: 0o600 });
    const authUrl = 'http://127.0.0.1:5000/v3';
    const settings = { projectName: 'backups', region: 'RegionOne', interface: 'internal' as const };
    let session: { token: string; url: string } | null = null;
    return {
      async auth() {
        if (session) return session;
        const res = await fetch(`${authUrl}/auth/tokens`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(keystoneBody({ driver: 'swift', authUrl, authVersion: 3, credentialsFile, container: '', ...settings }, creds)),
        });
        if (!res.ok) throw new Error(`Keystone answered ${res.status}`);
        session = { token: res.headers.get('x-subject-token')!, url: objectStoreEndpoint((await res.json()) as never, settings) };
        return session;
      },
      config: (container) => ({ driver: 'swift', authUrl, authVersion: 3, credentialsFile, container, segmentSize: MiB, ...settings }),
    };
  },
  'the same driver and requests as Swift v1, which runs it; only the authentication differs',
);

export const s3Target: StoreTarget = {
  name: 'S3 (Swift s3api)',
  async setUp() {
    swiftUp();
    const endpoint = 'http://127.0.0.1:8080';
    const credentialsFile = join(scratchDir('contract-s3'), 'credentials.json');
    writeFileSync(credentialsFile, JSON.stringify({ accessKeyId: 'test:tester', secretAccessKey: 'testing' }), { mode: 0o600 });
    const Bucket = `cbr-contract-s3-${runId}`;
    const client = new S3Client({
      region: 'us-east-1',
      endpoint,
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      credentials: { accessKeyId: 'test:tester', secretAccessKey: 'testing' },
    });
    const config = (container: string): StorageConfig => ({ driver: 's3', container, region: 'us-east-1', endpoint, credentialsFile, partSize: 5 * MiB });
    const uploads = async (prefix: string) => {
      try {
        return (await client.send(new ListMultipartUploadsCommand({ Bucket, Prefix: prefix }))).Uploads ?? [];
      } catch {
        return [];
      }
    };
    return {
      store: openStore(config(Bucket)),
      untouched: openStore(config(`${Bucket}-never`)),
      segment: 5 * MiB,
      atomicCreateOnly: false,
      async leaveDebris(key) {
        await client.send(new CreateBucketCommand({ Bucket })).catch(() => {});
        const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket, Key: key }));
        await client.send(new UploadPartCommand({ Bucket, Key: key, UploadId, PartNumber: 1, Body: Buffer.from('half') }));
      },
      hidden: async (prefix) => (await uploads(prefix)).map((u) => `${u.Key} (upload ${u.UploadId})`),
      async tearDown() {
        for (const u of await uploads('')) await client.send(new AbortMultipartUploadCommand({ Bucket, Key: u.Key!, UploadId: u.UploadId! }));
        for (;;) {
          const page = await client.send(new ListObjectsV2Command({ Bucket })).catch(() => ({ Contents: [] }));
          if (!page.Contents?.length) break;
          await inParallel(page.Contents, 16, async (o) => void (await client.send(new DeleteObjectCommand({ Bucket, Key: o.Key! }))));
        }
        await client.send(new DeleteBucketCommand({ Bucket })).catch(() => {});
        client.destroy();
      },
    };
  },
};

/** Runs `fn` over `items`, at most `limit` at a time. */
export async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
