import { CbrError } from '../core/errors.ts';
import { createLocalStore } from './local/localStore.ts';
import type { ObjectStore, StorageConfig } from './port.ts';
import { createS3Store } from './s3/s3Store.ts';
import { createSwiftStore } from './swift/swiftStore.ts';

export function openStore(config: StorageConfig): ObjectStore {
  switch (config.driver) {
    case 'local':
      return createLocalStore(config.root, config.container);
    case 'swift':
      return createSwiftStore(config);
    case 's3':
      return createS3Store(config);
    default:
      throw new CbrError('CBR_ERR_CONFIG', `unknown storage driver ${JSON.stringify((config as { driver: string }).driver)}`);
  }
}
