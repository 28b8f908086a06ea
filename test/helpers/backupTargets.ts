import { join } from 'node:path';
import { BLOBS_PREFIX } from '../../src/catalog/blobs.ts';
import { openStore } from '../../src/storage/open.ts';
import type { ObjectStore } from '../../src/storage/port.ts';
import { scratchDir, testEnv } from './env.ts';
import { SWIFT_AUTH_URL, swiftEnv, swiftUp } from './swift.ts';

/**
 * Where a backup test file stores its backups: local storage or the Swift all-in-one, each on a namespace of its
 * own for this run (a scratch directory, a container), with its own state database. `env` is what the CLI runs
 * with; `store` opens the same storage through the project's driver, to read what the CLI stored.
 */
export interface BackupTarget {
  name: string;
  setUp(extra?: NodeJS.ProcessEnv): { env: NodeJS.ProcessEnv; store: ObjectStore };
}

export function backupTargets(label: string): BackupTarget[] {
  return [
    {
      name: 'local storage',
      setUp(extra = {}) {
        const root = scratchDir(`${label}-storage`);
        const env = { ...testEnv, ...extra, CBR_STORAGE_ROOT: root, CBR_STATE_DB: join(scratchDir(`${label}-state`), 'state.db') };
        return { env, store: openStore({ driver: 'local', root, container: 'database_backups' }) };
      },
    },
    {
      name: 'Swift all-in-one',
      setUp(extra = {}) {
        const creds = swiftUp();
        const container = `cbr-${label}-${process.pid}`;
        const env = swiftEnv({ ...testEnv, ...extra, CBR_STATE_DB: join(scratchDir(`${label}-swift-state`), 'state.db') }, creds, container);
        return { env, store: openStore({ driver: 'swift', authUrl: SWIFT_AUTH_URL, authVersion: 1, credentialsFile: creds, container }) };
      },
    },
  ];
}

/** The blobs a store holds, by key: their sizes. */
export async function blobSizes(store: ObjectStore): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of store.list(BLOBS_PREFIX)) out.set(o.key, o.size);
  return out;
}

/** The blobs a store holds, by key: size and modification time, which a blob stored again would change. */
export async function blobIdentities(store: ObjectStore): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const o of store.list(BLOBS_PREFIX)) out.set(o.key, `${o.size}@${o.modified}`);
  return out;
}
