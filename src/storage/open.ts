import { CbrError } from '../core/errors.ts';
import { createLocalStore } from './local/localStore.ts';
import type { ObjectInfo, ObjectStore, S3Config, StorageConfig } from './port.ts';
import { createSwiftStore } from './swift/swiftStore.ts';

export function openStore(config: StorageConfig): ObjectStore {
  switch (config.driver) {
    case 'local':
      return createLocalStore(config.root, config.container);
    case 'swift':
      return createSwiftStore(config);
    case 's3':
      return lazyS3Store(config);
    default:
      throw new CbrError('CBR_ERR_CONFIG', `unknown storage driver ${JSON.stringify((config as { driver: string }).driver)}`);
  }
}

/**
 * The S3 store, with the AWS SDK (~35 MiB of resident memory once loaded) imported on first use only: commands
 * that open a store they never call, and every process using another driver, do not pay for it.
 */
function lazyS3Store(config: S3Config): ObjectStore {
  let loaded: Promise<ObjectStore> | undefined;
  const store = () => {
    loaded ??= import('./s3/s3Store.ts').then((m) => m.createS3Store(config));
    return loaded;
  };
  return {
    description: `s3:${config.endpoint ?? config.region}/${config.container}`,
    put: async (key, body, opts) => (await store()).put(key, body, opts),
    get: async (key, opts) => (await store()).get(key, opts),
    head: async (key, opts) => (await store()).head(key, opts),
    async *list(prefix, opts): AsyncIterable<ObjectInfo> {
      yield* (await store()).list(prefix, opts);
    },
    delete: async (key, opts) => (await store()).delete(key, opts),
    purge: async (prefix, opts) => (await store()).purge(prefix, opts),
  };
}
