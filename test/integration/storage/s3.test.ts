import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { loadProfile, type Profile } from '../../../src/profile.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { createS3Store } from '../../../src/storage/s3.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, dumpKeyspaces, seedData } from '../../helpers/data.ts';
import { scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
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
    const made = await cbr(['backup-create', 'to-s3', '--config', profilePath('source', testEnv), '--compression', 'none', '--json'], env);
    assert.equal(made.code, 0, made.err);
    const id = String(made.json()['id']);
    assert.ok(Number(made.json()['size']) > 5 * 2 ** 20, 'large enough for a multipart upload');
    const list = (await cbr(['backup-list', '--json'], env)).json() as unknown as { id: string; state: string }[];
    assert.ok(list.some((b) => b.id === id && b.state === 'COMPLETED'));
    const show = await cbr(['backup-show', id, '--json'], env);
    assert.equal(show.json()['sha256'], made.json()['sha256']);

    const restored = await cbr(['create', 'from-s3', '--backup', id, '--sandbox', '--json'], env);
    assert.equal(restored.code, 0, restored.err);
    const target = await loadProfile(String(restored.json()['profilePath']));
    const [a, b] = [await cqlFor(source), await cqlFor(target)];
    try {
      assert.equal(await dumpKeyspaces(b, keyspaces), await dumpKeyspaces(a, keyspaces));
    } finally {
      await a.close();
      await b.close();
    }
    await cbr(['sandbox', 'rm', 'from-s3'], env);

    assert.equal((await cbr(['backup-delete', id], env)).code, 0);
    const store = createS3Store({ driver: 's3', container: bucket, region: 'us-east-1', endpoint: 'http://127.0.0.1:8080', forcePathStyle: true, credentialsFile: creds });
    const left: string[] = [];
    for await (const o of store.list(`${id}/`)) left.push(o.key);
    assert.deepEqual(left, []);
  });
});
