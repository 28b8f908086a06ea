import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import { loadProfile, type Profile } from '../../../src/cassandra/profile.ts';
import { type BackupRecord, readRecord } from '../../../src/catalog/catalog.ts';
import { leaseKey, leasePrefix } from '../../../src/catalog/leases.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import type { ObjectStore } from '../../../src/storage/port.ts';
import { backupTargets, blobSizes } from '../../helpers/backupTargets.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, dumpKeyspaces } from '../../helpers/data.ts';
import { REPO, sharedNode, testEnv } from '../../helpers/env.ts';

/**
 * Deleting incremental backups on a real node, on local storage and on the Swift all-in-one: deleting a backup in
 * the middle of a chain frees exactly the blobs only it referenced and leaves the others restorable; a delete while
 * another backup of the node runs collects nothing (the running backup's blobs are referenced by no record yet),
 * the running backup completes and restores, and a later delete collects what was left. On local storage: a delete
 * of the very backup a restore is fetching collects nothing while the restore's read lease lives; the restore
 * completes with the backup's rows, and the next delete collects.
 */

const targets = backupTargets('inc-delete');

const blobsOf = (...records: BackupRecord[]) => new Set(records.flatMap((r) => r.files.map((f) => f.blob!)));

for (const [n, target] of targets.entries()) {
  describe(`deleting incremental backups (${target.name})`, () => {
    const ks = `incdel${process.pid}_${n}`;
    let source: Profile;
    let cql: CqlSession;
    let env: NodeJS.ProcessEnv;
    let store: ObjectStore;
    const ids: Record<string, string> = {};

    before(async () => {
      ({ env, store } = target.setUp());
      source = await sharedNode('source');
      cql = await cqlFor(source);
      await cql.execute(`CREATE KEYSPACE IF NOT EXISTS ${ks} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
      for (const t of ['kept', 'only_b1', 'only_b2']) await cql.execute(`CREATE TABLE IF NOT EXISTS ${ks}.${t} (id int PRIMARY KEY, payload blob)`);
    });

    after(async () => {
      await cql?.execute(`DROP KEYSPACE IF EXISTS ${ks}`).catch(() => {});
      await cql?.close();
    });

    const insert = async (table: string, from: number, count: number, kib: number) => {
      for (let i = from; i < from + count; i++) await cql.execute(`INSERT INTO ${ks}.${table} (id, payload) VALUES (?, ?)`, [i, randomBytes(kib * 1024)]);
    };

    const backup = async (name: string) => {
      const res = await cbr(['backup-create', name, '--config', profilePath('source', testEnv), '--incremental', '--json'], env);
      assert.equal(res.code, 0, res.err);
      return String(res.json()['id']);
    };

    /** Restores `id` into a new sandbox and returns its rows of the test keyspace. */
    const restoredRows = async (id: string, instance: string) => {
      const res = await cbr(['create', instance, '--backup', id, '--sandbox', '--json'], env);
      assert.equal(res.code, 0, res.err);
      const restored = await cqlFor(await loadProfile(String(res.json()['profilePath'])));
      try {
        return await dumpKeyspaces(restored, [ks]);
      } finally {
        await restored.close();
        await cbr(['sandbox', 'rm', instance], env);
      }
    };

    it('deleting the middle of a chain frees exactly the bytes only it referenced; the last backup restores', async () => {
      await insert('kept', 0, 30, 4);
      await insert('only_b1', 0, 30, 4);
      ids['b1'] = await backup('b1');
      await cql.execute(`DROP TABLE ${ks}.only_b1`);
      await insert('kept', 30, 30, 4);
      await insert('only_b2', 0, 30, 4);
      ids['b2'] = await backup('b2');
      await cql.execute(`DROP TABLE ${ks}.only_b2`);
      await insert('kept', 60, 30, 4);
      const rows3 = await dumpKeyspaces(cql, [ks]);
      ids['b3'] = await backup('b3');

      const [b1, b2, b3] = await Promise.all(['b1', 'b2', 'b3'].map((k) => readRecord(store, ids[k]!)));
      assert.deepEqual([b1!.strategy, b2!.strategy, b3!.strategy], ['incremental', 'incremental', 'incremental']);
      assert.equal(b2!.parent, b1!.id);
      const others = blobsOf(b1!, b3!);
      const onlyB2 = [...blobsOf(b2!)].filter((b) => !others.has(b));
      assert.ok(onlyB2.length > 0, 'b2 has blobs of its own (its dropped table)');
      const before = await blobSizes(store);
      const expectedBytes = onlyB2.reduce((s, b) => s + before.get(b)!, 0);

      const del = await cbr(['backup-delete', b2!.id, '--json'], env);
      assert.equal(del.code, 0, del.err);
      assert.deepEqual(
        { freedBytes: del.json()['freedBytes'], deletedBlobs: del.json()['deletedBlobs'], gcSkipped: del.json()['gcSkipped'] },
        { freedBytes: expectedBytes, deletedBlobs: onlyB2.length, gcSkipped: null },
      );
      const afterDelete = await blobSizes(store);
      assert.deepEqual([...afterDelete.keys()].sort(), [...before.keys()].filter((k) => !onlyB2.includes(k)).sort());
      for (const b of others) assert.ok(afterDelete.has(b), `${b} of b1 or b3 is still there`);
      assert.deepEqual(((await cbr(['backup-list', '--json'], env)).json() as unknown as { id: string }[]).map((b) => b.id).sort(), [b1!.id, b3!.id].sort());

      assert.equal(await restoredRows(b3!.id, `incdel-last-${n}`), rows3, 'the last backup restores the rows it took');
    });

    it('a delete while another backup of the node runs collects nothing; that backup completes and restores; a later delete collects', async () => {
      await insert('kept', 1000, 200, 8);
      const rows4 = await dumpKeyspaces(cql, [ks]);
      const id = randomUUID();
      const hostId = (await readRecord(store, ids['b1']!)).hostId;
      const child = spawn(
        join(REPO, 'node_modules', '.bin', 'node'),
        [
          join(REPO, 'bin', 'cbr.js'),
          'backup-create',
          'slow',
          '--config',
          profilePath('source', testEnv),
          '--incremental',
          '--id',
          id,
          '--concurrency',
          '1',
          '--rate-limit',
          '64K',
          '--json',
        ],
        { env, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => {
        out += d;
      });
      child.stderr.on('data', (d) => {
        err += d;
      });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      while (!(await store.head(leaseKey(hostId, 'backup', id)))) {
        assert.equal(child.exitCode, null, `the slow backup ended before its lease was seen: ${out} ${err}`);
        await sleep(100);
      }
      const before = await blobSizes(store);

      const del = await cbr(['backup-delete', ids['b1']!, '--json'], env);
      assert.equal(del.code, 0, del.err);
      assert.equal(del.json()['gcSkipped'], 'backup-running');
      assert.equal(del.json()['deletedBlobs'], 0);
      const during = await blobSizes(store);
      for (const k of before.keys()) assert.ok(during.has(k), `${k} was not collected under the running backup`);

      assert.equal(await exited, 0, `${out} ${err}`);
      assert.equal(JSON.parse(out)['id'], id);
      const b4 = await readRecord(store, id);
      assert.ok((b4.newBytes ?? 0) > 0 && (b4.sharedBytes ?? 0) > 0, 'b4 stored some files and shared others');
      for (const b of blobsOf(b4)) assert.ok((await store.head(b)) !== null, `${b} of the finished backup is there`);
      assert.deepEqual(await store.head(leaseKey(hostId, 'backup', id)), null, 'the finished backup released its lease');
      assert.equal(await restoredRows(id, `incdel-running-${n}`), rows4, 'the backup that ran during the delete restores');

      // b1's own blobs (its dropped table) were left by the skipped collection; deleting b3 collects them too.
      const b3 = await readRecord(store, ids['b3']!);
      const beforeLast = await blobSizes(store);
      const last = await cbr(['backup-delete', b3.id, '--json'], env);
      assert.equal(last.code, 0, last.err);
      const remaining = blobsOf(b4);
      const gone = [...beforeLast.keys()].filter((k) => !remaining.has(k));
      assert.ok(gone.length > 0);
      assert.deepEqual(
        { freedBytes: last.json()['freedBytes'], deletedBlobs: last.json()['deletedBlobs'], gcSkipped: last.json()['gcSkipped'] },
        { freedBytes: gone.reduce((s, k) => s + beforeLast.get(k)!, 0), deletedBlobs: gone.length, gcSkipped: null },
      );
      assert.deepEqual([...(await blobSizes(store)).keys()].sort(), [...remaining].sort(), 'only the last backup’s blobs remain');

      const final = await cbr(['backup-delete', id, '--json'], env);
      assert.equal(final.code, 0, final.err);
      assert.deepEqual([...(await blobSizes(store)).keys()], [], 'deleting every backup leaves no blob');
      const leases: string[] = [];
      for await (const o of store.list(leasePrefix(hostId))) leases.push(o.key);
      assert.deepEqual(leases, [], 'and no lease');
    });

    // The lease logic is the same on every store (unit-tested on memory and local); one real restore is enough.
    it('deleting the backup a restore is fetching collects nothing under its read lease; the restore completes; the next delete collects', {
      skip: n !== 0,
    }, async () => {
      await cql.execute(`CREATE TABLE IF NOT EXISTS ${ks}.only_b5 (id int PRIMARY KEY, payload blob)`);
      await insert('kept', 2000, 60, 8);
      await insert('only_b5', 0, 30, 4);
      const rows5 = await dumpKeyspaces(cql, [ks]);
      const b5 = await backup('b5');
      await cql.execute(`DROP TABLE ${ks}.only_b5`);
      await insert('kept', 3000, 10, 8);
      const b6 = await backup('b6');
      const hostId = (await readRecord(store, b5)).hostId;
      const inB6 = blobsOf(await readRecord(store, b6));
      const onlyB5 = [...blobsOf(await readRecord(store, b5))].filter((b) => !inB6.has(b));
      const instance = `incdel-read-${n}`;
      // 150 ms before each file it fetches: the restore is still fetching when the delete runs.
      const child = spawn(
        join(REPO, 'node_modules', '.bin', 'node'),
        [join(REPO, 'bin', 'cbr.js'), 'create', instance, '--backup', b5, '--sandbox', '--json'],
        {
          env: { ...env, CBR_DRILL_FILE_DELAY_MS: '150' },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => {
        out += d;
      });
      child.stderr.on('data', (d) => {
        err += d;
      });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      const readLease = async () => {
        for await (const o of store.list(leasePrefix(hostId))) if (o.key.slice(leasePrefix(hostId).length).startsWith('read-')) return o.key;
        return null;
      };
      let lease = await readLease();
      while (!lease) {
        assert.equal(child.exitCode, null, `the restore ended before its read lease was seen: ${out} ${err}`);
        await sleep(100);
        lease = await readLease();
      }
      const before = await blobSizes(store);
      const del = await cbr(['backup-delete', b5, '--json'], env);
      assert.equal(del.code, 0, del.err);
      assert.equal(del.json()['gcSkipped'], 'restore-running');
      assert.equal(del.json()['deletedBlobs'], 0);
      assert.ok(onlyB5.length > 0 && onlyB5.every((b) => before.has(b)));
      assert.deepEqual([...(await blobSizes(store)).keys()].sort(), [...before.keys()].sort(), 'no blob was collected under the read lease');

      assert.equal(await exited, 0, `${out} ${err}`);
      assert.equal(await store.head(lease), null, 'the restore released its read lease');
      const restored = await cqlFor(await loadProfile(String(JSON.parse(out)['profilePath'])));
      try {
        assert.equal(await dumpKeyspaces(restored, [ks]), rows5, 'the restore of the deleted backup has its rows');
      } finally {
        await restored.close();
        await cbr(['sandbox', 'rm', instance], env);
      }
      const last = await cbr(['backup-delete', b6, '--json'], env);
      assert.equal(last.code, 0, last.err);
      assert.equal(last.json()['gcSkipped'], null);
      assert.deepEqual([...(await blobSizes(store)).keys()], [], 'the blobs only the deleted backup named are collected once the restore is done');
    });
  });
}
