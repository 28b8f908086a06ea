import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { blobKey, blobName, blobPrefix, fileNameOf, tableIdOf } from '../../../src/catalog/blobs.ts';
import { recordKey } from '../../../src/catalog/catalog.ts';
import { clusterRecordKey, pendingMarkerKey } from '../../../src/catalog/clusterRecord.ts';
import { filesDigest } from '../../../src/catalog/record.ts';
import type { CliIO } from '../../../src/cli/io.ts';
import { main } from '../../../src/cli/main.ts';
import { openStore } from '../../../src/storage/open.ts';

const HOST = 'node-1';
const TABLE = 'ks/t-0123456789abcdef0123456789abcdef';
const base = {
  description: '',
  state: 'COMPLETED',
  datastore: 'cassandra',
  sourceInstance: 'alpha',
  hostId: HOST,
  clusterName: 'c',
  cassandraVersion: '5.0.6',
  compression: 'zstd',
  encryption: null,
  keyspaces: ['ks'],
};

/** A full backup as written before strategies (format 1): no strategy, parent or byte split in the record. */
function fullRecord(id: string) {
  const files = [{ path: `${TABLE}/nb-1-big-Data.db`, size: 1000 }];
  return {
    ...base,
    format: 1,
    id,
    name: id,
    created: '2025-01-01T00:00:00.000Z',
    finished: '2025-01-01T00:01:00.000Z',
    object: `${id}/archive.tar.zst`,
    size: 400,
    sha256: 'a'.repeat(64),
    rawBytes: 1000,
    fileCount: 1,
    files,
  };
}

/** An incremental backup following `parent`: its Data.db was stored before (shared), its Index.db is new. */
function incrementalRecord(id: string, parent: string) {
  const file = (name: string, size: number, stored: number, shared: boolean) => {
    const path = `${TABLE}/${name}`;
    const sha256 = createHash('sha256').update(name).digest('hex');
    const blob = blobKey(HOST, blobName({ hostId: HOST, tableId: tableIdOf(path), fileName: fileNameOf(path), size, sha256, compression: 'zstd' }, null));
    return { path, size, sha256, blob, stored, shared };
  };
  const files = [file('nb-1-big-Data.db', 1000, 400, true), file('nb-2-big-Index.db', 200, 50, false)];
  return {
    ...base,
    format: 3,
    strategy: 'incremental',
    parent,
    id,
    name: id,
    created: '2025-01-02T00:00:00.000Z',
    finished: '2025-01-02T00:01:00.000Z',
    object: blobPrefix(HOST),
    size: 450,
    sha256: filesDigest(files),
    rawBytes: 1200,
    fileCount: 2,
    files,
    newBytes: 200,
    sharedBytes: 1000,
    newStoredBytes: 50,
  };
}

async function cbr(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const r = { out: '', err: '' };
  const io: CliIO = {
    stdout: (t) => {
      r.out += t;
    },
    stderr: (t) => {
      r.err += t;
    },
    env,
    isTTY: false,
  };
  return { code: await main(args, io), ...r };
}

describe('backup-list and backup-show: strategy, parent, new and shared bytes', () => {
  let dir = '';
  let env: NodeJS.ProcessEnv = {};
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cbr-incopt-list-'));
    env = { CBR_HOME: join(dir, 'home'), CBR_STORAGE_ROOT: join(dir, 'storage') };
    const store = openStore({ driver: 'local', root: join(dir, 'storage'), container: 'database_backups' });
    for (const r of [fullRecord('b-full'), incrementalRecord('b-inc', 'b-full')]) {
      await store.put(recordKey(r.id), Readable.from([Buffer.from(JSON.stringify(r))]), { ifAbsent: true });
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('--json: a record of format 1/2 is a full backup with all bytes new; an incremental one has its own split', async () => {
    const listed = await cbr(['backup-list', '--json'], env);
    assert.equal(listed.code, 0, listed.err);
    const rows = JSON.parse(listed.out) as Record<string, unknown>[];
    const pick = (r: Record<string, unknown>) => ({
      id: r['id'],
      strategy: r['strategy'],
      parent: r['parent'],
      newBytes: r['newBytes'],
      sharedBytes: r['sharedBytes'],
    });
    assert.deepEqual(rows.map(pick), [
      { id: 'b-full', strategy: 'full', parent: null, newBytes: 1000, sharedBytes: 0 },
      { id: 'b-inc', strategy: 'incremental', parent: 'b-full', newBytes: 200, sharedBytes: 1000 },
    ]);
    for (const id of ['b-full', 'b-inc']) {
      const shown = await cbr(['backup-show', id, '--json'], env);
      assert.equal(shown.code, 0, shown.err);
      assert.deepEqual(
        pick(JSON.parse(shown.out)),
        rows.map(pick).find((r) => r.id === id),
      );
    }
  });

  it('human: the list has STRATEGY, PARENT, NEW and SHARED columns; show says them in words', async () => {
    const listed = await cbr(['backup-list'], env);
    assert.equal(listed.code, 0, listed.err);
    const [header, full, inc] = listed.out
      .trimEnd()
      .split('\n')
      .map((l) => l.split(/\s{2,}/));
    assert.deepEqual(header, ['ID', 'NAME', 'STATE', 'CREATED', 'STRATEGY', 'PARENT', 'SIZE', 'NEW', 'SHARED', 'CLUSTER']);
    assert.deepEqual([full![4], full![5], inc![4], inc![5]], ['full', '-', 'incremental', 'b-full']);

    const shownInc = await cbr(['backup-show', 'b-inc'], env);
    assert.match(shownInc.out, /^strategy\s+incremental \(parent b-full\)$/m);
    assert.match(shownInc.out, /^new\s+200 B in 1 file \(50 B stored\)$/m);
    assert.match(shownInc.out, /^shared\s+1000 B in 1 file already stored by earlier backups$/m);
    const shownFull = await cbr(['backup-show', 'b-full'], env);
    assert.match(shownFull.out, /^strategy\s+full$/m);
    assert.match(shownFull.out, /^shared\s+0 B in 0 files already/m);
  });
});

describe('backup-list --clusters and backup-show of a cluster backup', () => {
  let dir = '';
  let env: NodeJS.ProcessEnv = {};
  const host = (i: number) => ({
    host: `node-${i}`,
    backupId: `cb-${i}`,
    hostId: `00000000-0000-0000-0000-00000000000${i}`,
    address: `127.0.0.${i}`,
    datacenter: 'dc1',
    rack: 'rack1',
    tokens: [String(i * 1000)],
  });
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cbr-cluster-list-'));
    env = { CBR_HOME: join(dir, 'home'), CBR_STORAGE_ROOT: join(dir, 'storage') };
    const store = openStore({ driver: 'local', root: join(dir, 'storage'), container: 'database_backups' });
    const put = (key: string, body: unknown) => store.put(key, Readable.from([Buffer.from(JSON.stringify(body))]), { ifAbsent: true });
    // Two parts of a recorded cluster backup (the record names a third part storage does not hold), one part of a
    // running one (its marker only), and a host backup of its own.
    for (const id of ['cb-1', 'cb-2', 'run-1', 'alone']) await put(recordKey(id), fullRecord(id));
    await put(clusterRecordKey('cb'), {
      format: 1,
      kind: 'cluster',
      id: 'cb',
      name: 'nightly',
      description: '',
      state: 'COMPLETED',
      clusterName: 'Ring',
      partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
      strategy: 'full',
      created: '2025-01-03T00:00:00.000Z',
      finished: '2025-01-03T00:05:00.000Z',
      schema: '',
      hosts: [host(1), host(2), host(3)],
    });
    await put(pendingMarkerKey('run'), { coordinator: 'node-1', started: '2025-01-04T00:00:00.000Z' });
    await put(clusterRecordKey('torn'), { format: 9 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('each host backup names the cluster backup it belongs to; --clusters lists them with state, size and missing parts', async () => {
    const listed = await cbr(['backup-list', '--json'], env);
    assert.equal(listed.code, 0, listed.err);
    const owners = Object.fromEntries((JSON.parse(listed.out) as { id: string; clusterBackup: string | null }[]).map((r) => [r.id, r.clusterBackup]));
    assert.deepEqual(owners, { 'cb-1': 'cb', 'cb-2': 'cb', 'run-1': 'run', alone: null });
    assert.match((await cbr(['backup-list'], env)).out, /^3 of these are parts of cluster backups/m);

    const clusters = await cbr(['backup-list', '--clusters', '--json'], env);
    assert.equal(clusters.code, 0, clusters.err);
    const rows = JSON.parse(clusters.out) as { id: string; state: string; size: number; hosts: unknown[]; missingParts: string[] }[];
    assert.deepEqual(
      rows.map((r) => [r.id, r.state, r.size, r.hosts.length, r.missingParts]),
      [
        ['cb', 'COMPLETED', 800, 3, ['cb-3']],
        ['run', 'RUNNING', 400, 0, []],
        ['torn', 'UNREADABLE', 0, 0, []],
      ],
    );
    const human = await cbr(['backup-list', '--clusters'], env);
    assert.match(human.out, /^cb\s+nightly\s+COMPLETED\s+\S+\s+full\s+3 \(missing cb-3\)\s+800 B\s+Ring$/m);
  });

  it('backup-show <cluster id> lists its parts, marks a missing one and exits 1 for it', async () => {
    const shown = await cbr(['backup-show', 'cb'], env);
    assert.equal(shown.code, 1, shown.err);
    assert.match(shown.out, /^kind\s+cluster backup of Ring, 3 hosts$/m);
    assert.match(shown.out, /^ {2}cb-1 {2}node-1 127\.0\.0\.1 \(dc1\/rack1\)$/m);
    assert.match(shown.out, /^ {2}cb-3 {2}node-3 127\.0\.0\.3 \(dc1\/rack1\) {2}MISSING$/m);
    const json = await cbr(['backup-show', 'cb', '--json'], env);
    assert.equal((JSON.parse(json.out) as { id: string }).id, 'cb');
    const none = await cbr(['backup-show', 'nope'], env);
    assert.notEqual(none.code, 0);
    assert.match(none.err, /CBR_ERR_BACKUP_NOT_FOUND/);
    const torn = await cbr(['backup-show', 'torn'], env);
    assert.notEqual(torn.code, 0);
    assert.match(torn.err, /CBR_ERR_RECORD_INVALID/);
  });

  it('backup-delete of a cluster backup without a record is refused; --force (its coordinator gone) deletes its parts, then its marker', async () => {
    const refused = await cbr(['backup-delete', 'run'], env);
    assert.notEqual(refused.code, 0);
    assert.match(refused.err, /CBR_ERR_WORKFLOW_CONFLICT.*coordinator node-1 started it at 2025-01-04T00:00:00\.000Z/s);
    const forced = await cbr(['backup-delete', 'run', '--force', '--json'], env);
    assert.equal(forced.code, 0, forced.err);
    assert.deepEqual(
      (JSON.parse(forced.out) as { parts: { id: string }[] }).parts.map((p) => p.id),
      ['run-1'],
    );
    const left = JSON.parse((await cbr(['backup-list', '--clusters', '--json'], env)).out) as { id: string }[];
    assert.deepEqual(
      left.map((r) => r.id),
      ['cb', 'torn'],
    );
    const ids = (JSON.parse((await cbr(['backup-list', '--json'], env)).out) as { id: string }[]).map((r) => r.id);
    assert.deepEqual(ids.sort(), ['alone', 'cb-1', 'cb-2']);
  });
});
