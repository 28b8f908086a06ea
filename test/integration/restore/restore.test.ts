import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, globSync, mkdirSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { zstdCompressSync } from 'node:zlib';
import tar from 'tar-stream';
import { type CqlSession, connectCql } from '../../../src/cassandra/cql.ts';
import { loadCredentials, type Profile } from '../../../src/cassandra/profile.ts';
import type { BackupRecord } from '../../../src/catalog/catalog.ts';
import { sandboxesDir } from '../../../src/sandbox/sandbox.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, dumpKeyspaces, seedData } from '../../helpers/data.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';

const profilePathOf = (p: Profile) => join(p.service.kind === 'sandbox' ? p.service.instanceDir : '', 'profile.json');

describe('restore: a backup becomes a new, independent single-node instance', () => {
  let alpha: Profile;
  let target: Profile;
  let alphaCql: CqlSession;
  let keyspaces: string[];
  let env: NodeJS.ProcessEnv;
  let storageRoot: string;
  let backupId: string;
  let sealedId: string;
  let alphaDump: string;
  const alphaPassword = `alpha-${randomBytes(6).toString('hex')}`;
  const key = randomBytes(32);
  const keyFile = join(scratchDir('keys'), 'k.hex');

  before(async () => {
    storageRoot = scratchDir('restore-storage');
    env = { ...testEnv, CBR_STORAGE_ROOT: storageRoot, CBR_STATE_DB: join(scratchDir('restore-state'), 'state.db') };
    alpha = await sharedNode('alpha', 'Alpha Cluster');
    // A superuser password that is not the default.
    const first = await cqlFor(alpha);
    await first.execute(`ALTER ROLE cassandra WITH PASSWORD = '${alphaPassword}'`);
    await first.close();
    writeFileSync(alpha.cql.credentialsFile, JSON.stringify({ username: 'cassandra', password: alphaPassword }), { mode: 0o600 });
    alphaCql = await retry(() => cqlFor(alpha));
    keyspaces = await seedData(alphaCql, 'rs', { rows: 2000, blobKiB: 1 });
    alphaDump = await dumpKeyspaces(alphaCql, keyspaces);

    const plain = await cbr(['backup-create', 'alpha-full', '--config', profilePathOf(alpha), '--json'], env);
    assert.equal(plain.code, 0, plain.err);
    backupId = String(plain.json()['id']);
    writeFileSync(keyFile, key.toString('hex'), { mode: 0o600 });
    const sealed = await cbr(['backup-create', 'alpha-sealed', '--config', profilePathOf(alpha), '--encrypt-key-file', keyFile, '--json'], env);
    assert.equal(sealed.code, 0, sealed.err);
    sealedId = String(sealed.json()['id']);

    target = await sharedNode('target');
    const t = await cqlFor(target);
    await t.execute("CREATE KEYSPACE precious WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
    await t.execute('CREATE TABLE precious.t (id int PRIMARY KEY, v text)');
    for (let i = 0; i < 50; i++) await t.execute('INSERT INTO precious.t (id, v) VALUES (?, ?)', [i, `keep-${i}`]);
    await t.close();
  });

  after(async () => {
    await alphaCql?.close();
  });

  it('restores into a new sandbox: own cluster_name, new password (old refused), every row equal, source untouched', async () => {
    const pwFile = join(scratchDir('pw'), 'bravo.pw');
    const newPassword = `bravo-${randomBytes(8).toString('hex')}`;
    writeFileSync(pwFile, `${newPassword}\n`, { mode: 0o600 });
    const res = await cbr(['create', 'bravo', '--backup', backupId, '--sandbox', '--password-file', pwFile, '--json'], env);
    assert.equal(res.code, 0, res.err);
    const out = res.json();
    assert.equal(out['clusterName'], 'bravo');
    assert.ok(Number(out['cassandraStarts']) <= 2, `at most 2 starts (got ${out['cassandraStarts']})`);
    assert.ok(!res.out.includes(newPassword) && !res.err.includes(newPassword), 'password never printed');

    const bravoProfile = JSON.parse(readFileSync(String(out['profilePath']), 'utf8')) as Profile;
    const bravo = await connectCql({ ...bravoProfile.cql, credentials: { username: 'cassandra', password: newPassword } });
    try {
      const [local] = await bravo.execute('SELECT cluster_name FROM system.local');
      assert.equal(local?.['cluster_name'], 'bravo');
      assert.equal((await bravo.execute('SELECT peer FROM system.peers')).length, 0, 'no peers from the source cluster');
      assert.equal(await dumpKeyspaces(bravo, keyspaces), alphaDump, 'every row of every table equals the source');
    } finally {
      await bravo.close();
    }
    await assert.rejects(
      connectCql({ ...bravoProfile.cql, credentials: { username: 'cassandra', password: alphaPassword } }),
      /CBR_ERR_CQL_FAILED|password|Authentication/i,
      'the source password does not work on the restored node',
    );
    const yaml = readFileSync(bravoProfile.cassandraYaml, 'utf8');
    assert.match(yaml, /^cluster_name: "bravo"$/m);
    assert.match(yaml, /^authenticator: PasswordAuthenticator$/m);
    assert.deepEqual(await loadCredentials(bravoProfile.cql.credentialsFile), { username: 'cassandra', password: newPassword });

    // The source is untouched and still serving.
    const [alphaLocal] = await alphaCql.execute('SELECT cluster_name FROM system.local');
    assert.equal(alphaLocal?.['cluster_name'], 'Alpha Cluster');
    assert.equal(await dumpKeyspaces(alphaCql, keyspaces), alphaDump);
    await cbr(['sandbox', 'rm', 'bravo'], env);
  });

  // --- refusals: each leaves the target running with its data ------------------------------------------------

  async function targetIntact(): Promise<void> {
    const status = await cbr(['sandbox', 'status', 'target', '--json'], env);
    assert.equal(status.json()['running'], true, 'target still running');
    assert.equal(status.json()['clusterName'], 'target');
    const t = await cqlFor(target);
    try {
      const rows = await t.execute('SELECT v FROM precious.t');
      assert.equal(rows.length, 50, 'target data intact');
    } finally {
      await t.close();
    }
    const dir = join(sandboxesDir(testEnv), 'target');
    const leftovers = readdirSync(dir).filter((f) => f.includes('.cbr-'));
    const confLeftovers = readdirSync(join(dir, 'conf')).filter((f) => f.includes('.cbr-'));
    assert.deepEqual([...leftovers, ...confLeftovers], [], 'no staging or old directories left');
  }

  /** Copies a stored backup under a new id, letting the test damage the copy. */
  function copyBackup(id: string, damage: (archive: string, rec: BackupRecord) => void): string {
    const copy = randomUUID();
    const base = join(storageRoot, 'database_backups');
    const rec = JSON.parse(readFileSync(join(base, id, 'backup.json'), 'utf8')) as BackupRecord;
    const name = rec.object.split('/')[1]!;
    mkdirSync(join(base, copy));
    copyFileSync(join(base, id, name), join(base, copy, name));
    const moved = { ...rec, id: copy, object: `${copy}/${name}` };
    damage(join(base, copy, name), moved);
    writeFileSync(join(base, copy, 'backup.json'), JSON.stringify(moved));
    return copy;
  }

  async function refused(id: string, extra: string[] = []): Promise<string> {
    const res = await cbr(['create', 'target', '--backup', id, '--config', profilePathOf(target), '--force', '--json', ...extra], env);
    assert.notEqual(res.code, 0, 'restore refused');
    return String(res.json().error?.code);
  }

  it('refuses a target that holds user data without --force', async () => {
    const res = await cbr(['create', 'target', '--backup', backupId, '--config', profilePathOf(target), '--json'], env);
    assert.equal(res.json().error?.code, 'CBR_ERR_TARGET_NOT_EMPTY');
    await targetIntact();
  });

  it('refuses a wrong decryption key (and a missing one)', async () => {
    const wrong = join(scratchDir('keys'), 'wrong.hex');
    writeFileSync(wrong, randomBytes(32).toString('hex'), { mode: 0o600 });
    assert.equal(await refused(sealedId, ['--decrypt-key-file', wrong]), 'CBR_ERR_DECRYPT_FAILED');
    assert.equal(await refused(sealedId), 'CBR_ERR_KEY_REQUIRED');
    await targetIntact();
  });

  it('refuses records that fail their schema or their MAC, before touching the target', async () => {
    // The sealed backup's record and archive copied under another id: its MAC covers the id.
    const moved = copyBackup(sealedId, () => {});
    assert.equal(await refused(moved, ['--decrypt-key-file', keyFile]), 'CBR_ERR_RECORD_INVALID');
    // Plain backups have no MAC, but a record that does not hold together is refused all the same.
    assert.equal(
      await refused(
        copyBackup(backupId, (_a, rec) => {
          rec.rawBytes += 1;
        }),
      ),
      'CBR_ERR_RECORD_INVALID',
    );
    assert.equal(
      await refused(
        copyBackup(backupId, (_a, rec) => {
          rec.clusterName = 'x\nauthenticator: AllowAllAuthenticator';
        }),
      ),
      'CBR_ERR_RECORD_INVALID',
    );
    // An unsealed backup where the operator expects a sealed one (a key is given): not authenticated, refused.
    assert.equal(
      await refused(
        copyBackup(backupId, () => {}),
        ['--decrypt-key-file', keyFile],
      ),
      'CBR_ERR_RECORD_INVALID',
    );
    await targetIntact();
  });

  it('refuses a truncated object', async () => {
    const id = copyBackup(backupId, (archive) => truncateSync(archive, statSync(archive).size - 1000));
    assert.equal(await refused(id), 'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH');
    await targetIntact();
  });

  it('refuses an object with one flipped byte', async () => {
    const id = copyBackup(backupId, (archive) => {
      const b = readFileSync(archive);
      b[Math.floor(b.length / 2)]! ^= 0x20;
      writeFileSync(archive, b);
    });
    assert.match(await refused(id), /^CBR_ERR_ARCHIVE_(CORRUPT|CHECKSUM_MISMATCH)$/);
    // A sealed backup's record is bound to its id, so this one is damaged in place (and mended after).
    const sealedArchive = join(
      storageRoot,
      'database_backups',
      sealedId,
      readdirSync(join(storageRoot, 'database_backups', sealedId)).find((f) => f.startsWith('archive'))!,
    );
    const whole = readFileSync(sealedArchive);
    const flipped = Buffer.from(whole);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x01;
    writeFileSync(sealedArchive, flipped);
    try {
      assert.equal(await refused(sealedId, ['--decrypt-key-file', keyFile]), 'CBR_ERR_DECRYPT_FAILED');
    } finally {
      writeFileSync(sealedArchive, whole);
    }
    await targetIntact();
  });

  it('refuses a crafted archive with a ../ entry and a symlink, writing nothing outside the target', async () => {
    const table = 'rs_shop/users-0123456789abcdef0123456789abcdef';
    for (const hostile of [
      { name: `${table}/../../../../escaped-${process.pid}`, size: 4, type: 'file' as const },
      { name: `${table}/link`, type: 'symlink' as const, linkname: '/etc/passwd' },
    ]) {
      const pack = tar.pack();
      pack.entry({ name: `${table}/nb-1-big-Data.db`, size: 4 }, 'good');
      if (hostile.type === 'file') pack.entry(hostile, 'evil');
      else pack.entry(hostile);
      pack.finalize();
      const archive = zstdCompressSync(await buffer(pack));
      const id = copyBackup(backupId, (path, rec) => {
        writeFileSync(path, archive);
        rec.size = archive.length;
        rec.sha256 = createHash('sha256').update(archive).digest('hex');
        // The record is valid and lists the good file only: the hostile entry is in the archive alone.
        rec.files = [{ path: `${table}/nb-1-big-Data.db`, size: 4 }];
        rec.fileCount = 1;
        rec.rawBytes = 4;
      });
      assert.equal(await refused(id), 'CBR_ERR_ARCHIVE_HOSTILE_ENTRY');
      const root = join(sandboxesDir(testEnv), '..');
      assert.deepEqual(globSync(`**/escaped-${process.pid}`, { cwd: root }), [], 'nothing written outside the target');
      assert.ok(!existsSync(join(sandboxesDir(testEnv), `escaped-${process.pid}`)));
    }
    await targetIntact();
  });

  it('rolls back a cancelled restore after the swap: old data and config back, node running again', async () => {
    const yamlBefore = readFileSync(target.cassandraYaml, 'utf8');
    const child = spawn(
      join(REPO, 'node_modules', '.bin', 'node'),
      [join(REPO, 'bin', 'cbr.js'), 'create', 'target', '--backup', backupId, '--config', profilePathOf(target), '--force', '--json'],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    await waitForState(env, 'restore', (s) => s === 'resettingIdentity');
    child.kill('SIGTERM');
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 13, stdout);
    assert.equal(JSON.parse(stdout).error.code, 'CBR_ERR_ABORTED');
    assert.equal(readFileSync(target.cassandraYaml, 'utf8'), yamlBefore, 'cassandra.yaml as before');
    await targetIntact();
  });

  it('finishes a restore whose process was killed after the unpack', async () => {
    const child = spawn(
      join(REPO, 'node_modules', '.bin', 'node'),
      [join(REPO, 'bin', 'cbr.js'), 'create', 'charlie', '--backup', backupId, '--sandbox', '--json'],
      { env, stdio: 'ignore' },
    );
    await waitForState(env, 'restore', (s) => s === 'startingMaintenance');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const resumed = await cbr(['resume', '--json'], env);
    assert.equal(resumed.code, 0, resumed.err);
    const status = await cbr(['sandbox', 'status', 'charlie', '--json'], env);
    assert.equal(status.json()['running'], true);
    assert.equal(status.json()['clusterName'], 'charlie');
    const charlieProfile = JSON.parse(readFileSync(String(status.json()['profilePath']), 'utf8')) as Profile;
    const c = await cqlFor(charlieProfile);
    try {
      assert.equal(await dumpKeyspaces(c, keyspaces), alphaDump);
    } finally {
      await c.close();
    }
    await cbr(['sandbox', 'rm', 'charlie'], env);
  });
});

async function waitForState(env: NodeJS.ProcessEnv, kind: string, match: (state: string) => boolean): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (existsSync(String(env['CBR_STATE_DB']))) {
      const db = new StateDb(String(env['CBR_STATE_DB']));
      // Earlier restores have ended, so the one active restore is the spawned one.
      const state = db.list({ kind: kind as 'restore', status: 'active' })[0]?.state;
      db.close();
      if (state && match(state)) return;
    }
    await sleep(50);
  }
  throw new Error(`no ${kind} workflow reached the wanted state`);
}

async function retry<T>(fn: () => Promise<T>, tries = 40): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= tries) throw err;
      await sleep(250);
    }
  }
}
