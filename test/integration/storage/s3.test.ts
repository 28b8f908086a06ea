import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { createS3Store } from '../../../src/storage/s3/s3Store.ts';
import { cqlFor, seedData } from '../../helpers/data.ts';
import { scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { storageRoundTrip } from '../../helpers/roundtrip.ts';
import { swiftUp } from '../../helpers/swift.ts';

describe('S3 storage (Swift s3api on loopback)', () => {
  let source: Profile;
  let env: NodeJS.ProcessEnv;
  let keyspaces: string[];
  let creds: string;
  const bucket = `cbr-s3-${process.pid}`;

  before(async () => {
    swiftUp();
    creds = join(scratchDir('s3'), 'credentials.json');
    writeFileSync(creds, JSON.stringify({ accessKeyId: 'test:tester', secretAccessKey: 'testing' }), { mode: 0o600 });
    env = {
      ...testEnv,
      CBR_STATE_DB: join(scratchDir('s3-state'), 's.db'),
      CBR_STORAGE: 's3',
      CBR_S3_ENDPOINT: 'http://127.0.0.1:8080',
      CBR_S3_CREDENTIALS_FILE: creds,
      CBR_S3_PART_SIZE: '5M',
      CBR_CONTAINER: bucket,
    };
    source = await sharedNode('source');
    const cql = await cqlFor(source);
    keyspaces = await seedData(cql, `s3${process.pid}`, { rows: 800, blobKiB: 8 });
    await cql.close();
  });

  it('backup-create (multipart), -list, -show, create --backup and backup-delete work with --storage s3', async () => {
    await storageRoundTrip({
      env,
      source,
      keyspaces,
      instance: 'from-s3',
      afterCreate: async (_id, made) => {
        assert.ok(Number(made['size']) > 5 * 2 ** 20, 'large enough for a multipart upload');
      },
      afterDelete: async (id) => {
        const store = createS3Store({
          driver: 's3',
          container: bucket,
          region: 'us-east-1',
          endpoint: 'http://127.0.0.1:8080',
          forcePathStyle: true,
          credentialsFile: creds,
        });
        const left: string[] = [];
        for await (const o of store.list(`${id}/`)) left.push(o.key);
        assert.deepEqual(left, []);
      },
    });
  });
});
