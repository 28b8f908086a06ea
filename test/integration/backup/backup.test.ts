import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { unpackArchive } from '../../../src/archive/unpack.ts';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import { listLiveFiles, listSnapshotFiles, listTableDirs } from '../../../src/cassandra/layout.ts';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import type { BackupRecord } from '../../../src/catalog/catalog.ts';
import { recordBinding } from '../../../src/catalog/record.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, seedData } from '../../helpers/data.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';

describe('backup on a real node (local storage)', () => {
  let profile: Profile;
  let cql: CqlSession;
  let keyspaces: string[];
  let env: NodeJS.ProcessEnv;
  let storageRoot: string;
  const prefix = `bk${process.pid}`;

  before(async () => {
    profile = await sharedNode('source');
    cql = await cqlFor(profile);
    keyspaces = await seedData(cql, prefix, { rows: 300, blobKiB: 8 });
    storageRoot = scratchDir('storage');
    env = { ...testEnv, CBR_STORAGE_ROOT: storageRoot, CBR_STATE_DB: join(scratchDir('state'), 'state.db') };
  });

  after(async () => {
    for (const ks of keyspaces ?? []) await cql.execute(`DROP KEYSPACE IF EXISTS ${ks}`).catch(() => {});
    await cql?.close();
  });

  const archivePath = (rec: { object: string }) => join(storageRoot, 'database_backups', ...rec.object.split('/'));

  async function archiveEntries(rec: BackupRecord, key?: Buffer): Promise<string> {
    const target = await mkdtemp(join(scratchDir('unpack'), 'x-'));
    await unpackArchive(Readable.from([readFileSync(archivePath(rec))]), target, {
      compression: rec.compression,
      key,
      // A sealed archive opens only under its backup's identity.
      binding: key && rec.encryption?.bound ? recordBinding(rec) : undefined,
      sha256: rec.sha256,
      expected: new Map(rec.files.map((f) => [f.path, f.size])),
    });
    return target;
  }

  it('backs up every snapshot file under rewritten paths, then clears the snapshot', async () => {
    const res = await cbr(['backup-create', 'nightly', '--config', profilePathOf(profile), '--description', 'first', '--json'], env);
    assert.equal(res.code, 0, res.err);
    const id = String(res.json()['id']);

    assert.ok(!(await createNodetool(profile).listSnapshots()).includes(id), 'snapshot cleared');
    assert.equal((await listSnapshotFiles(profile.dataDirs, id)).length, 0);

    const show = await cbr(['backup-show', id, '--files', '--json'], env);
    assert.equal(show.code, 0, show.err);
    const rec = show.json() as unknown as BackupRecord;
    const stored = readFileSync(archivePath(rec));
    assert.equal(rec.size, stored.length, 'size');
    assert.equal(rec.sha256, createHash('sha256').update(stored).digest('hex'), 'checksum');
    assert.equal(rec.state, 'COMPLETED');
    assert.equal(rec.clusterName, 'source');
    assert.deepEqual(
      rec.keyspaces.filter((k) => k.startsWith(prefix)),
      [...keyspaces].sort(),
    );

    const human = await cbr(['backup-show', id], env);
    assert.match(human.out, new RegExp(`checksum\\s+sha256:${rec.sha256}`));

    // Unpacked, the archive is a data directory: each user table's live SSTables, byte for byte, plus the
    // snapshot's manifest.json and schema.cql, and the secondary index's own subdirectory.
    const unpacked = await archiveEntries(rec);
    const tables = (await listTableDirs(profile.dataDirs)).filter((t) => keyspaces.includes(t.keyspace));
    assert.equal(tables.length, 3);
    for (const t of tables) {
      const live = (await listLiveFiles(t)).map((p) => p.slice(t.path.length + 1));
      assert.ok(
        live.some((f) => f.endsWith('-Data.db')),
        `${t.dirName} has SSTables`,
      );
      const inArchive = rec.files
        .map((f) => f.path)
        .filter((p) => p.startsWith(`${t.keyspace}/${t.dirName}/`))
        .map((p) => p.slice(`${t.keyspace}/${t.dirName}/`.length));
      assert.deepEqual(inArchive.filter((f) => f !== 'manifest.json' && f !== 'schema.cql').sort(), live.sort(), `${t.dirName}: every file`);
      assert.ok(inArchive.includes('manifest.json') && inArchive.includes('schema.cql'));
      for (const f of live) {
        assert.deepEqual(await readFile(join(unpacked, t.keyspace, t.dirName, f)), await readFile(join(t.path, f)), `${t.dirName}/${f}`);
      }
    }
    assert.ok(
      rec.files.some((f) => /\/\.users_city\/.*-Data\.db$/.test(f.path)),
      'secondary index SSTables',
    );
    assert.ok(
      rec.files.some((f) => f.path.startsWith('system_schema/')),
      'schema keyspace',
    );
    assert.ok(
      rec.files.some((f) => f.path.startsWith('system_auth/roles-')),
      'roles',
    );

    const list = await cbr(['backup-list', '--json'], env);
    assert.ok((list.json() as unknown as { id: string; state: string }[]).some((b) => b.id === id && b.state === 'COMPLETED'));
  });

  it('encrypts with a key file, records its fingerprint, and the archive opens only with that key', async () => {
    const dir = scratchDir('keys');
    const keyFile = join(dir, 'backup.key');
    const key = randomBytes(32);
    writeFileSync(keyFile, key.toString('hex'), { mode: 0o600 });
    const res = await cbr(
      ['backup-create', 'sealed', '--config', profilePathOf(profile), '--encrypt-key-file', keyFile, '--compression', 'gzip', '--json'],
      env,
    );
    assert.equal(res.code, 0, res.err);
    assert.ok(!res.out.includes(key.toString('hex')) && !res.err.includes(key.toString('hex')), 'key never printed');
    const rec = (await cbr(['backup-show', String(res.json()['id']), '--files', '--json'], env)).json() as unknown as BackupRecord;
    assert.equal(rec.encryption?.algorithm, 'aes-256-gcm-chunked');
    assert.match(rec.object, /\.tar\.gz\.enc$/);
    await archiveEntries(rec, key);
    await assert.rejects(archiveEntries(rec, randomBytes(32)), { code: 'CBR_ERR_DECRYPT_FAILED' });
  });

  it('runs two backups of one node at once (distinct tags)', async () => {
    const [a, b] = await Promise.all([
      cbr(['backup-create', 'twin-a', '--config', profilePathOf(profile), '--json'], env),
      cbr(['backup-create', 'twin-b', '--config', profilePathOf(profile), '--compression', 'none', '--json'], env),
    ]);
    assert.equal(a.code, 0, a.err);
    assert.equal(b.code, 0, b.err);
    assert.notEqual(a.json()['id'], b.json()['id']);
    const snaps = await createNodetool(profile).listSnapshots();
    assert.ok(!snaps.includes(String(a.json()['id'])) && !snaps.includes(String(b.json()['id'])));
  });

  it('refuses to snapshot when free space is under the threshold', async () => {
    const res = await cbr(['backup-create', 'full', '--config', profilePathOf(profile), '--min-free-percent', '100', '--json'], env);
    assert.equal(res.code, 7);
    assert.equal(res.json().error?.code, 'CBR_ERR_INSUFFICIENT_SPACE');
    assert.match(res.json().error?.message ?? '', /free on/);
  });

  it('storage failing mid-stream (a full disk) ends FAILED with a coded error, snapshot cleared, nothing listed', async () => {
    const mnt = scratchDir('tiny-fs');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
    try {
      const full = { ...env, CBR_STORAGE_ROOT: mnt };
      const id = randomUUID();
      const res = await cbr(['backup-create', 'doomed', '--config', profilePathOf(profile), '--id', id, '--compression', 'none', '--json'], full);
      assert.equal(res.code, 8, res.err);
      assert.equal(res.json().error?.code, 'CBR_ERR_STORAGE_FAILED');
      assert.match(res.json().error?.message ?? '', /no space left/);
      assert.ok(!(await createNodetool(profile).listSnapshots()).includes(id), 'snapshot cleared');
      const list = await cbr(['backup-list', '--json'], full);
      assert.deepEqual(list.json(), []);
      assert.deepEqual(readdirSync(join(mnt, 'database_backups')), [], 'no partial object left');
      const show = await cbr(['backup-show', id, '--json'], full);
      assert.equal(show.json()['state'], 'FAILED');
      assert.equal((show.json()['error'] as { code: string }).code, 'CBR_ERR_STORAGE_FAILED');
    } finally {
      execFileSync('umount', [mnt]);
    }
  });

  it('a process killed mid-stream resumes and completes, leaving no snapshot', async () => {
    const id = randomUUID();
    const child = spawn(
      join(REPO, 'node_modules', '.bin', 'node'),
      [
        join(REPO, 'bin', 'cbr.js'),
        'backup-create',
        'killed',
        '--config',
        profilePathOf(profile),
        '--id',
        id,
        '--rate-limit',
        '300K',
        '--compression',
        'none',
        '--json',
      ],
      { env, stdio: 'ignore' },
    );
    // Wait until the persisted state says it is streaming and has reported progress, then kill -9.
    const db = new StateDb(String(env['CBR_STATE_DB']));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const w = db.get(id);
      const progress = (w?.snapshot as { context?: { progress?: { storedBytes: number } | null } } | undefined)?.context?.progress;
      if (w?.state === 'streaming' && progress && progress.storedBytes > 0) break;
      assert.ok(Date.now() < deadline, `backup did not reach streaming (state ${w?.state})`);
      await sleep(100);
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    db.close();
    assert.ok((await createNodetool(profile).listSnapshots()).includes(id), 'killed mid-stream: the snapshot is still there');
    const listed = (await cbr(['backup-list', '--json'], env)).json() as unknown as { id: string }[];
    assert.ok(!listed.some((b) => b.id === id), 'the killed backup is not listed');

    const resumed = await cbr(['resume', '--json'], env);
    assert.equal(resumed.code, 0, resumed.err);
    const outcome = (resumed.json() as unknown as { id: string; from: string; state: string }[]).find((o) => o.id === id);
    assert.deepEqual({ from: outcome?.from, state: outcome?.state }, { from: 'streaming', state: 'completed' });
    assert.ok(!(await createNodetool(profile).listSnapshots()).includes(id), 'snapshot cleared after resume');
    const rec = (await cbr(['backup-show', id, '--files', '--json'], env)).json() as unknown as BackupRecord;
    await archiveEntries(rec);
    const dir = join(storageRoot, 'database_backups', id);
    assert.deepEqual(readdirSync(dir).sort(), ['archive.tar', 'backup.json'], 'no partial file left');
  });

  it('refuses a backup id that storage or an operator snapshot already holds, touching neither', async () => {
    const first = await cbr(['backup-create', 'keep-me', '--config', profilePathOf(profile), '--json'], env);
    assert.equal(first.code, 0, first.err);
    const id = String(first.json()['id']);
    const recordFile = join(storageRoot, 'database_backups', id, 'backup.json');
    const recordBefore = readFileSync(recordFile, 'utf8');
    const rec = JSON.parse(recordBefore) as BackupRecord;
    const archiveBefore = createHash('sha256')
      .update(readFileSync(archivePath(rec)))
      .digest('hex');
    // Another host's state database: nothing there knows the id, only storage does.
    const otherHost = { ...env, CBR_STATE_DB: join(scratchDir('state-other'), 'state.db') };
    const again = await cbr(['backup-create', 'intruder', '--config', profilePathOf(profile), '--id', id, '--json'], otherHost);
    assert.equal(again.json().error?.code, 'CBR_ERR_BACKUP_EXISTS', again.out);
    assert.equal(readFileSync(recordFile, 'utf8'), recordBefore, 'the stored record is untouched');
    assert.equal(
      createHash('sha256')
        .update(readFileSync(archivePath(rec)))
        .digest('hex'),
      archiveBefore,
      'the archive is untouched',
    );

    const nodetool = createNodetool(profile);
    await nodetool.snapshot('operator-tag');
    try {
      const tagged = await cbr(['backup-create', 'tagged', '--config', profilePathOf(profile), '--id', 'operator-tag', '--json'], env);
      assert.equal(tagged.json().error?.code, 'CBR_ERR_BACKUP_EXISTS', tagged.out);
      assert.ok((await nodetool.listSnapshots()).includes('operator-tag'), "the operator's snapshot is still there");
    } finally {
      await nodetool.clearSnapshot('operator-tag');
    }
  });

  it('deletes a backup: record first, then the archive', async () => {
    const list = (await cbr(['backup-list', '--json'], env)).json() as unknown as { id: string }[];
    const id = list[0]!.id;
    const del = await cbr(['backup-delete', id], env);
    assert.equal(del.code, 0, del.err);
    assert.ok(!existsSync(join(storageRoot, 'database_backups', id)));
    const again = await cbr(['backup-delete', id, '--json'], env);
    assert.equal(again.code, 9);
    assert.equal(again.json().error?.code, 'CBR_ERR_BACKUP_NOT_FOUND');
  });
});

function profilePathOf(p: Profile): string {
  if (p.service.kind !== 'sandbox') throw new Error('sandbox profile expected');
  return join(p.service.instanceDir, 'profile.json');
}
