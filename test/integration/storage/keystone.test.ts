import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, seedData } from '../../helpers/data.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { storageRoundTrip } from '../../helpers/roundtrip.ts';

describe('Swift behind a real Keystone v3 (Debian keystone, authtoken + keystoneauth)', () => {
  let source: Profile;
  let keyspaces: string[];
  let env: NodeJS.ProcessEnv;
  const container = `cbr-ks-${process.pid}`;

  before(async () => {
    execFileSync('bash', [join(REPO, 'deploy', 'keystone', 'start.sh')], { stdio: 'ignore' });
    const dir = process.env['CBR_KEYSTONE_DIR'] ?? '/var/tmp/cbr-keystone';
    const creds = join(scratchDir('keystone'), 'credentials.json');
    writeFileSync(creds, JSON.stringify({ username: 'cbr', password: readFileSync(join(dir, 'cbr.password'), 'utf8') }), { mode: 0o600 });
    env = {
      ...testEnv,
      CBR_STATE_DB: join(scratchDir('keystone-state'), 's.db'),
      CBR_STORAGE: 'swift',
      CBR_SWIFT_AUTH_URL: 'http://127.0.0.1:5000/v3',
      CBR_SWIFT_CREDENTIALS_FILE: creds,
      CBR_SWIFT_PROJECT: 'backups',
      CBR_SWIFT_REGION: 'RegionOne',
      CBR_SWIFT_INTERFACE: 'internal',
      CBR_SWIFT_SEGMENT_SIZE: '1M',
      CBR_CONTAINER: container,
    };
    source = await sharedNode('source');
    const cql = await cqlFor(source);
    keyspaces = await seedData(cql, `ks${process.pid}`, { rows: 200, blobKiB: 8 });
    await cql.close();
  });

  it('the Trove verbs work end to end with Keystone v3 auth and the catalog endpoint', async () => {
    await storageRoundTrip({
      env,
      source,
      keyspaces,
      instance: 'from-keystone',
      afterCreate: async (_id, made) => {
        assert.ok(Number(made['size']) > 2 ** 20, 'segmented (1 MiB segments)');
      },
      afterDelete: async () => {
        assert.deepEqual((await cbr(['backup-list', '--json'], env)).json(), []);
      },
    });
  });
});
