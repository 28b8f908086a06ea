import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type CqlSession, connectCql } from '../../../src/cassandra/cql.ts';
import { listLiveFiles, listSnapshotFiles, listTableDirs } from '../../../src/cassandra/layout.ts';
import { createNodetool } from '../../../src/cassandra/nodetool.ts';
import { loadCredentials, type Profile } from '../../../src/cassandra/profile.ts';
import { sharedNode } from '../../helpers/env.ts';

describe('Cassandra adapter on a real 5.0 node', () => {
  let profile: Profile;
  let cql: CqlSession;
  const ks = `adapter_${process.pid}`;
  const tag = `snap-${process.pid}`;

  before(async () => {
    profile = await sharedNode('source');
    cql = await connectCql({ ...profile.cql, credentials: await loadCredentials(profile.cql.credentialsFile) });
    await cql.execute(`CREATE KEYSPACE ${ks} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
    await cql.execute(`CREATE TABLE ${ks}.users (id int PRIMARY KEY, name text, city text)`);
    await cql.execute(`CREATE INDEX users_city ON ${ks}.users (city)`);
    for (let i = 0; i < 200; i++) {
      await cql.execute(`INSERT INTO ${ks}.users (id, name, city) VALUES (?, ?, ?)`, [i, `user-${i}`, `city-${i % 7}`]);
    }
  });

  after(async () => {
    await cql?.execute(`DROP KEYSPACE IF EXISTS ${ks}`).catch(() => {});
    await cql?.close();
  });

  it("reports the node Up/Normal, the same through cbr's JMX client and through nodetool", async () => {
    const builtin = createNodetool(profile);
    const status = await builtin.status();
    builtin.close();
    assert.equal(status.live, true);
    assert.equal(status.state, 'Normal');
    assert.equal(status.mode, 'NORMAL');
    assert.match(status.hostId, /^[0-9a-f-]{36}$/);
    const viaNodetool = await createNodetool({ ...profile, jmx: { ...profile.jmx, client: 'nodetool' } }).status();
    assert.deepEqual(viaNodetool, { ...status, mode: '' });
  });

  it('takes a snapshot, finds every file with the live bytes, and clears it', async () => {
    const nodetool = createNodetool(profile);
    await nodetool.clearSnapshot(tag);
    await nodetool.snapshot(tag);
    assert.ok((await nodetool.listSnapshots()).includes(tag));

    const files = await listSnapshotFiles(profile.dataDirs, tag);
    const mine = files.filter((f) => f.keyspace === ks);
    const names = mine.map((f) => f.archivePath);
    const table = (await listTableDirs(profile.dataDirs)).find((t) => t.keyspace === ks && t.table === 'users');
    assert.ok(table, 'users table directory exists');
    assert.ok(names.includes(`${ks}/${table.dirName}/manifest.json`), 'manifest.json in snapshot');
    assert.ok(names.includes(`${ks}/${table.dirName}/schema.cql`), 'schema.cql in snapshot');
    for (const component of ['Data.db', 'Statistics.db', 'TOC.txt', 'Digest.crc32', 'Filter.db']) {
      assert.ok(
        names.some((n) => n.endsWith(component) && !n.includes('/.')),
        `${component} in snapshot`,
      );
    }
    // The secondary index has its own SSTables in a '.users_city' subdirectory.
    assert.ok(
      names.some((n) => n.startsWith(`${ks}/${table.dirName}/.users_city/`) && n.endsWith('Data.db')),
      'index SSTables',
    );
    // System keyspaces come along (schema and roles are needed to restore).
    assert.ok(files.some((f) => f.keyspace === 'system_schema'));

    // Every SSTable component in the snapshot has the same bytes as the live file of that name.
    const live = new Map((await listLiveFiles(table)).map((p) => [p.slice(table.path.length + 1), p]));
    let compared = 0;
    for (const f of mine.filter((x) => x.table === 'users')) {
      const rel = f.archivePath.slice(`${ks}/${table.dirName}/`.length);
      if (rel === 'manifest.json' || rel === 'schema.cql') continue;
      const livePath = live.get(rel);
      assert.ok(livePath, `live file for ${rel}`);
      assert.deepEqual(await readFile(f.path), await readFile(livePath), `${rel} bytes`);
      compared++;
    }
    assert.ok(compared >= 10, `compared ${compared} files`);
    const manifest = JSON.parse(await readFile(join(table.path, 'snapshots', tag, 'manifest.json'), 'utf8'));
    assert.ok(Array.isArray(manifest.files) && manifest.files.length > 0);
    assert.ok(manifest.files.every((f: string) => names.some((n) => basename(n) === basename(f))));

    await nodetool.clearSnapshot(tag);
    assert.ok(!(await nodetool.listSnapshots()).includes(tag));
    assert.equal((await listSnapshotFiles(profile.dataDirs, tag)).length, 0);
  });

  it("turns a nodetool failure into a coded error with nodetool's reason", async () => {
    const nodetool = createNodetool(profile);
    await nodetool.snapshot(tag);
    await assert.rejects(nodetool.snapshot(tag), (err: { code: string; message: string }) => {
      assert.equal(err.code, 'CBR_ERR_SNAPSHOT_FAILED');
      assert.match(err.message, /already exists/);
      return true;
    });
    await nodetool.clearSnapshot(tag);
  });

  it('JMX down is the coded error of each operation, through the JMX client and through nodetool', async () => {
    const port = await closedPort();
    for (const client of ['builtin', 'nodetool'] as const) {
      const down = createNodetool({ ...profile, jmx: { ...profile.jmx, port, client } });
      try {
        await assert.rejects(down.status(), (err: { code: string; message: string }) => {
          assert.equal(err.code, 'CBR_ERR_NODETOOL_FAILED', client);
          assert.match(err.message, /Connection refused/, client);
          return true;
        });
        await assert.rejects(down.snapshot(tag), { code: 'CBR_ERR_SNAPSHOT_FAILED' });
        await assert.rejects(down.listSnapshots(), { code: 'CBR_ERR_SNAPSHOT_FAILED' });
      } finally {
        down.close();
      }
    }
  });
});

/** A local port nothing listens on: one the kernel just handed out and got back. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
