import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';

import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, seedData } from '../../helpers/data.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { storageRoundTrip } from '../../helpers/roundtrip.ts';
import { killProxy, SWIFT_AUTH_URL, swiftEnv, swiftList, swiftUp } from '../../helpers/swift.ts';

describe('Swift storage (a real Swift all-in-one on loopback)', () => {
  let source: Profile;
  let creds: string;
  let keyspaces: string[];
  const container = `cbr-test-${process.pid}`;

  before(async () => {
    creds = swiftUp();
    source = await sharedNode('source');
    const cql = await cqlFor(source);
    keyspaces = await seedData(cql, `sw${process.pid}`, { rows: 300, blobKiB: 8 });
    await cql.close();
  });

  it('backup-create, -list, -show, create --backup and backup-delete work with --storage swift (segmented)', async () => {
    await storageRoundTrip({
      env: swiftEnv({ ...testEnv, CBR_STATE_DB: join(scratchDir('swift-state'), 's.db') }, creds, container, '1M'),
      source,
      keyspaces,
      instance: 'from-swift',
      afterCreate: async (id) => {
        const segments = await swiftList(`${container}_segments`, `${id}/`);
        assert.ok(segments.length >= 2, `the archive went up as segments (${segments.length})`);
      },
      afterDelete: async (id) => {
        assert.deepEqual(await swiftList(container, `${id}/`), []);
        assert.deepEqual(await swiftList(`${container}_segments`, `${id}/`), [], 'delete removed the segments');
      },
    });
  });

  it('killing the proxy mid-upload fails the backup with a coded error, clears the snapshot, leaves no segment', async () => {
    const stateDb = join(scratchDir('swift-kill'), 's.db');
    // A short outage window: the proxy stays dead, so the backup fails once 5 s of retries have not brought it back.
    const env = { ...swiftEnv({ ...testEnv, CBR_STATE_DB: stateDb }, creds, container, '1M'), CBR_SWIFT_OUTAGE_WINDOW: '5s' };
    const id = randomUUID();
    const child = spawn(
      join(REPO, 'node_modules', '.bin', 'node'),
      [
        join(REPO, 'bin', 'cbr.js'),
        'backup-create',
        'proxy-dies',
        '--config',
        profilePath('source', testEnv),
        '--id',
        id,
        '--compression',
        'none',
        '--rate-limit',
        '512K',
        '--json',
      ],
      { env, stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const deadline = Date.now() + 60_000;
    for (;;) {
      let stored = 0;
      try {
        const db = new StateDb(stateDb);
        const w = db.get(id);
        db.close();
        stored = (w?.snapshot as { context?: { progress?: { storedBytes: number } | null } })?.context?.progress?.storedBytes ?? 0;
      } catch {
        /* not created yet */
      }
      if (stored > 1.5 * 2 ** 20) break;
      assert.ok(Date.now() < deadline, 'the upload got going');
      await sleep(50);
    }
    killProxy();
    try {
      assert.equal(await exited, 8, out);
      assert.equal(JSON.parse(out).error.code, 'CBR_ERR_STORAGE_FAILED');
      assert.ok(!(await createNodetool(source).listSnapshots()).includes(id), 'snapshot cleared');
    } finally {
      swiftUp();
    }
    // The failed upload could not clean up while the proxy was down; backup-delete finds its segments.
    await cbr(['backup-delete', id], env);
    assert.deepEqual(await swiftList(`${container}_segments`, `${id}/`), [], 'no segment left behind');
    assert.deepEqual(await swiftList(container, `${id}/`), []);
    assert.ok(!((await cbr(['backup-list', '--json'], env)).json() as unknown as { id: string }[]).some((b) => b.id === id));
  });

  it('streams 6 GiB through 1 GiB segments and back with the same SHA-256, under 200 MB of RSS', { timeout: 900_000 }, () => {
    const gib = process.env['CBR_TEST_BIG_GIB'] ?? '6';
    const out = execFileSync(
      join(REPO, 'node_modules', '.bin', 'node'),
      [join(REPO, 'test', 'helpers', 'swift-6g.ts'), creds, SWIFT_AUTH_URL, container, gib],
      { encoding: 'utf8', timeout: 900_000 },
    );
    const r = JSON.parse(out.trim().split('\n').pop()!) as { up: string; down: string; size: number; got: number; maxRssMiB: number; seconds: number };
    assert.equal(r.size, Number(gib) * 2 ** 30);
    assert.equal(r.got, r.size);
    assert.equal(r.down, r.up, 'same SHA-256 back');
    assert.ok(r.maxRssMiB < 200, `peak RSS ${r.maxRssMiB.toFixed(0)} MiB`);
    process.stdout.write(`# 6 GiB through Swift: ${r.seconds.toFixed(0)} s up and down, peak RSS ${r.maxRssMiB.toFixed(0)} MiB\n`);
  });
});
