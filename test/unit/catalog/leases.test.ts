import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BLOBS_PREFIX, blobKey, blobName, blobPrefix, fileNameOf, tableIdOf } from '../../../src/catalog/blobs.ts';
import { deleteBackup, recordKey } from '../../../src/catalog/catalog.ts';
import {
  BACKUP_LEASE_TTL_MS,
  BLOB_GRACE_MS,
  collectGarbage,
  holdBackupLease,
  holdReadLease,
  leaseKey,
  leasePrefix,
  releaseBackupLease,
} from '../../../src/catalog/leases.ts';
import { filesDigest } from '../../../src/catalog/record.ts';
import { CbrError } from '../../../src/core/errors.ts';
import { openStore } from '../../../src/storage/open.ts';
import type { ObjectStore } from '../../../src/storage/port.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';

// These tests collect blobs they have just stored: no grace period, unless a test sets one (see the grace tests).
process.env['CBR_GC_GRACE_MS'] = '0';

const HOST = '0b6ee5a3-0e1b-4e4e-9d4c-5a1d2c3b4a50';
const OTHER = '7f3c1a2b-9d8e-4f6a-8b7c-1d2e3f4a5b6c';
const TABLE = 'ks/t-0123456789abcdef0123456789abcdef';

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

const stores: [string, () => Promise<ObjectStore>][] = [
  ['memory', async () => new MemoryStore()],
  [
    'local',
    async () => {
      const root = await mkdtemp(join(tmpdir(), 'cbr-leases-'));
      dirs.push(root);
      return openStore({ driver: 'local', root, container: 'c' });
    },
  ],
];

const put = (store: ObjectStore, key: string, body: Buffer | string) => store.put(key, Readable.from([Buffer.from(body)]));

async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out.sort();
}

interface Blob {
  path: string;
  key: string;
  size: number;
  sha256: string;
  stored: number;
}

/** A file's blob in storage, named as storeFiles names it (unencrypted, no compression). */
async function storeBlob(store: ObjectStore, hostId: string, file: string, stored = 100): Promise<Blob> {
  const path = `${TABLE}/${file}`;
  const content = randomBytes(40);
  const sha256 = createHash('sha256').update(content).digest('hex');
  const name = blobName({ hostId, tableId: tableIdOf(path), fileName: fileNameOf(path), size: content.length, sha256, compression: 'none' }, null);
  const key = blobKey(hostId, name);
  await put(store, key, randomBytes(stored));
  return { path, key, size: content.length, sha256, stored };
}

/** A format 3 record naming `blobs`, the first `shared` of them already stored before it. */
async function writeIncremental(store: ObjectStore, id: string, hostId: string, blobs: Blob[], shared = 0): Promise<void> {
  const files = blobs.map((b, i) => ({ path: b.path, size: b.size, sha256: b.sha256, blob: b.key, stored: b.stored, shared: i < shared }));
  const fresh = files.filter((f) => !f.shared);
  const rawBytes = files.reduce((n, f) => n + f.size, 0);
  const newBytes = fresh.reduce((n, f) => n + f.size, 0);
  const record = {
    format: 3,
    strategy: 'incremental',
    parent: null,
    id,
    name: id,
    description: '',
    state: 'COMPLETED',
    datastore: 'cassandra',
    sourceInstance: 'alpha',
    hostId,
    clusterName: 'Alpha',
    cassandraVersion: '5.0.6',
    created: new Date().toISOString(),
    finished: new Date().toISOString(),
    object: blobPrefix(hostId),
    size: files.reduce((n, f) => n + f.stored, 0),
    sha256: filesDigest(files),
    compression: 'none',
    encryption: null,
    rawBytes,
    fileCount: files.length,
    keyspaces: ['ks'],
    files,
    newBytes,
    sharedBytes: rawBytes - newBytes,
    newStoredBytes: fresh.reduce((n, f) => n + f.stored, 0),
  };
  await put(store, recordKey(id), JSON.stringify(record));
}

/** The store, with `ctl` aborted once `n` blobs have been deleted: a collection killed midway. */
function abortingAfterDeletes(store: ObjectStore, n: number, ctl: AbortController): ObjectStore {
  let count = 0;
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'delete') {
        return async (key: string, opts?: { signal?: AbortSignal }) => {
          await target.delete(key, opts);
          if (key.startsWith(BLOBS_PREFIX) && ++count >= n) ctl.abort();
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

const isAborted = (err: unknown) => err instanceof CbrError && err.code === 'CBR_ERR_ABORTED';

/** A chain a, b, c: a stores f1..f3, b shares f1 and adds f4, c shares f1 and f4 and adds f5; g1, g2 are garbage. */
async function chain(store: ObjectStore) {
  const f = await Promise.all(
    ['nb-1-big-Data.db', 'nb-1-big-Index.db', 'nb-2-big-Data.db', 'nb-3-big-Data.db', 'nb-4-big-Data.db'].map((n, i) => storeBlob(store, HOST, n, 100 + i)),
  );
  const g = await Promise.all(['nb-8-big-Data.db', 'nb-9-big-Data.db'].map((n) => storeBlob(store, HOST, n, 1000)));
  const [f1, f2, f3, f4, f5] = f as [Blob, Blob, Blob, Blob, Blob];
  await writeIncremental(store, 'a', HOST, [f1, f2, f3]);
  await writeIncremental(store, 'b', HOST, [f1, f4], 1);
  await writeIncremental(store, 'c', HOST, [f1, f4, f5], 2);
  return { f1, f2, f3, f4, f5, g: g as [Blob, Blob] };
}

for (const [kind, open] of stores) {
  describe(`leases and garbage collection (${kind} store)`, () => {
    it('deletes exactly the blobs no record references, and says how many bytes that freed', async () => {
      const store = await open();
      const { f1, f2, f3, f4, f5, g } = await chain(store);
      const res = await collectGarbage(store, HOST);
      assert.deepEqual(res, { deleted: 2, freedBytes: g[0].stored + g[1].stored });
      assert.deepEqual(await keys(store, BLOBS_PREFIX), [f1, f2, f3, f4, f5].map((b) => b.key).sort());
      assert.deepEqual(await keys(store, leasePrefix(HOST)), [], 'the collection took its lease away');
      assert.deepEqual(await collectGarbage(store, HOST), { deleted: 0, freedBytes: 0 }, 'a second run finds nothing');
    });

    it('deleting a middle backup frees only what it alone referenced; deleting a full backup collects nothing', async () => {
      const store = await open();
      const { f1, f2, f3, f4, f5, g } = await chain(store);
      await Promise.all(g.map((b) => store.delete(b.key)));
      const only = await storeBlob(store, HOST, 'nb-5-big-Data.db', 333);
      await writeIncremental(store, 'm', HOST, [f1, f4, only], 2);
      await put(store, 'm/leftover', 'x');
      const res = await deleteBackup(store, 'm');
      assert.equal(res.record?.id, 'm');
      assert.equal(res.removed, 1);
      assert.deepEqual(res.gc, { deleted: 1, freedBytes: 333 });
      assert.deepEqual(await keys(store, BLOBS_PREFIX), [f1, f2, f3, f4, f5].map((b) => b.key).sort());
      assert.deepEqual(await keys(store, 'm/'), []);

      await put(store, 'full/archive.tar', 'tar');
      await put(store, recordKey('full'), JSON.stringify({ id: 'full', hostId: HOST, files: [] }));
      const stray = await storeBlob(store, HOST, 'nb-6-big-Data.db');
      const full = await deleteBackup(store, 'full');
      assert.equal(full.gc, null, 'a full backup (here an unreadable record) runs no collection');
      assert.ok((await keys(store, BLOBS_PREFIX)).includes(stray.key));
    });

    it('never deletes a blob a remaining record names, nor anything of another host', async () => {
      const store = await open();
      const { f1, f4, f5 } = await chain(store);
      const theirs = await storeBlob(store, OTHER, 'nb-1-big-Data.db');
      const theirGarbage = await storeBlob(store, OTHER, 'nb-2-big-Data.db');
      await writeIncremental(store, 'x', OTHER, [theirs]);
      // Another host's running backup does not hold this host's collection back.
      const theirLease = await holdBackupLease(store, OTHER, 'y');
      for (const id of ['a', 'b']) await deleteBackup(store, id);
      assert.deepEqual(await keys(store, blobPrefix(HOST)), [f1, f4, f5].map((b) => b.key).sort());
      assert.deepEqual(await keys(store, blobPrefix(OTHER)), [theirs.key, theirGarbage.key].sort());
      theirLease.stop();
      await releaseBackupLease(store, OTHER, 'y');
      const last = await deleteBackup(store, 'c');
      assert.equal(last.gc?.freedBytes, f1.stored + f4.stored + f5.stored);
      assert.deepEqual(await keys(store, blobPrefix(HOST)), []);
      assert.deepEqual(await keys(store, blobPrefix(OTHER)), [theirs.key, theirGarbage.key].sort());
    });

    it('a record the schema refuses still keeps its blobs; one that cannot be read stops the collection', async () => {
      const store = await open();
      const kept = await storeBlob(store, HOST, 'nb-1-big-Data.db');
      const garbage = await storeBlob(store, HOST, 'nb-2-big-Data.db');
      await put(store, recordKey('odd'), JSON.stringify({ format: 99, files: [{ blob: kept.key }] }));
      await put(store, recordKey('junk'), 'not json');
      assert.deepEqual(await collectGarbage(store, HOST, { dryRun: true }), { deleted: 1, freedBytes: garbage.stored });
      assert.equal((await keys(store, BLOBS_PREFIX)).length, 2, 'a dry run deletes nothing');
      if (store instanceof MemoryStore) {
        store.fail('get', new CbrError('CBR_ERR_STORAGE_FAILED', 'proxy down'), { times: 1, match: (k) => k === recordKey('odd') });
        await assert.rejects(collectGarbage(store, HOST), { code: 'CBR_ERR_STORAGE_FAILED' });
        assert.equal((await keys(store, BLOBS_PREFIX)).length, 2, 'nothing deleted when a record could not be read');
        assert.deepEqual(await keys(store, leasePrefix(HOST)), []);
      }
      assert.deepEqual(await collectGarbage(store, HOST), { deleted: 1, freedBytes: garbage.stored });
      assert.deepEqual(await keys(store, BLOBS_PREFIX), [kept.key]);
    });

    it('is skipped while a live backup lease exists, and collects once the backup released it', async () => {
      const store = await open();
      const { g } = await chain(store);
      const lease = await holdBackupLease(store, HOST, 'running');
      assert.deepEqual(await keys(store, leasePrefix(HOST)), [leaseKey(HOST, 'backup', 'running')]);
      assert.deepEqual(await collectGarbage(store, HOST), { deleted: 0, freedBytes: 0, skipped: 'backup-running' });
      assert.ok((await keys(store, BLOBS_PREFIX)).includes(g[0].key), 'nothing deleted');
      assert.deepEqual(await keys(store, leasePrefix(HOST)), [leaseKey(HOST, 'backup', 'running')], 'the skipped collection removed its lease');
      // stop() leaves the lease: the backup's blobs are unreferenced until its record is written.
      lease.stop();
      assert.equal((await collectGarbage(store, HOST)).skipped, 'backup-running');
      await releaseBackupLease(store, HOST, 'running');
      assert.deepEqual(await collectGarbage(store, HOST), { deleted: 2, freedBytes: 2000 });
      const again = await holdBackupLease(store, HOST, 'second');
      await again.release();
      assert.deepEqual(await keys(store, leasePrefix(HOST)), []);
    });

    it('a lease not refreshed within its ttl is dead; a held one is refreshed and stays live', async () => {
      const store = await open();
      await chain(store);
      const dead = await holdBackupLease(store, HOST, 'killed', { ttlMs: 50 });
      dead.stop(); // what a kill -9 leaves: the lease object, never refreshed again
      await sleep(200);
      assert.deepEqual(await collectGarbage(store, HOST), { deleted: 2, freedBytes: 2000 }, 'the dead lease does not block');

      await chain(store);
      const ttlMs = 1500;
      const held = await holdBackupLease(store, HOST, 'alive', { ttlMs });
      const key = leaseKey(HOST, 'backup', 'alive');
      const read = async () => JSON.parse((await buffer(await store.get(key))).toString('utf8')) as { created: string; refreshed: string; ttlMs: number };
      const first = await read();
      assert.equal(first.ttlMs, ttlMs);
      const seen = new Set([first.refreshed]);
      // Refreshes come every ttl/3: four of them reach past the first ttl even when the timer started a few ms
      // before the lease's `created` stamp (three could land at 1495 ms of a 1500 ms ttl, as CI once saw).
      while (seen.size < 5) {
        await sleep(100);
        seen.add((await read()).refreshed);
      }
      assert.ok(Date.parse([...seen].sort().at(-1)!) - Date.parse(first.created) >= ttlMs, 'refreshed past its first ttl');
      assert.equal((await collectGarbage(store, HOST)).skipped, 'backup-running');
      await held.release();
      assert.equal((await collectGarbage(store, HOST)).skipped, undefined);
    });

    it('releasing a lease its holder still refreshes stops the refresh: the lease does not come back', async () => {
      const store = await open();
      await holdBackupLease(store, HOST, 'forgotten', { ttlMs: 60 });
      await releaseBackupLease(store, HOST, 'forgotten');
      await sleep(200);
      assert.deepEqual(await keys(store, leasePrefix(HOST)), []);
    });

    it('a backup waits while a live collection runs, and that wait is abortable', async () => {
      const store = await open();
      const gcKey = leaseKey(HOST, 'gc', 'other-process');
      const gcLease = {
        kind: 'gc',
        id: 'other-process',
        host: 'elsewhere',
        pid: 1,
        created: new Date().toISOString(),
        refreshed: new Date().toISOString(),
        ttlMs: 600_000,
      };
      await put(store, gcKey, JSON.stringify(gcLease));
      let held = false;
      const waiting = holdBackupLease(store, HOST, 'waits', { pollMs: 20 }).then((l) => {
        held = true;
        return l;
      });
      await sleep(150);
      assert.equal(held, false, 'still waiting for the collection');
      assert.ok((await keys(store, leasePrefix(HOST))).includes(leaseKey(HOST, 'backup', 'waits')), 'its lease was written before it looked');
      await store.delete(gcKey);
      const lease = await waiting;
      await lease.release();

      await put(store, gcKey, JSON.stringify(gcLease));
      const ctl = new AbortController();
      const aborted = holdBackupLease(store, HOST, 'aborted', { pollMs: 20, signal: ctl.signal });
      await sleep(50);
      ctl.abort();
      await assert.rejects(aborted, isAborted);
      // A dead collection lease (killed collector) does not hold a backup back.
      await put(store, gcKey, JSON.stringify({ ...gcLease, ttlMs: 1 }));
      await sleep(20);
      await (await holdBackupLease(store, HOST, 'after-dead-gc', { pollMs: 20 })).release();
    });

    it("a restore's read lease: a delete of the record it reads keeps every blob until the lease is released", async () => {
      const store = await open();
      const { f2, f3, g } = await chain(store);
      const reading = await holdReadLease(store, HOST, 'restore-1');
      assert.deepEqual(await keys(store, leasePrefix(HOST)), [leaseKey(HOST, 'read', 'restore-1')]);
      // The record of backup a (the only one naming f2, f3) is deleted while it is restored.
      const del = await deleteBackup(store, 'a');
      assert.equal(del.gc?.skipped, 'restore-running');
      for (const b of [f2, f3, g[0]]) assert.ok((await keys(store, BLOBS_PREFIX)).includes(b.key), `${b.key} kept while the restore reads`);
      assert.deepEqual(await keys(store, leasePrefix(HOST)), [leaseKey(HOST, 'read', 'restore-1')], 'the skipped collection removed only its own lease');
      // Another host's collection is not held back.
      const other = await storeBlob(store, OTHER, 'nb-7-big-Data.db', 50);
      assert.deepEqual(await collectGarbage(store, OTHER), { deleted: 1, freedBytes: 50 });
      assert.ok(!(await keys(store, BLOBS_PREFIX)).includes(other.key));
      await reading.release();
      assert.deepEqual(await keys(store, leasePrefix(HOST)), []);
      assert.deepEqual(await collectGarbage(store, HOST), { deleted: 4, freedBytes: f2.stored + f3.stored + 2000 }, 'freed once the restore is done');
    });

    it('a read lease not refreshed within its ttl (a killed restore) is dead; a restore waits while a collection runs', async () => {
      const store = await open();
      await chain(store);
      // What a restore killed with -9 leaves: its lease, refreshed last a while ago, never again.
      const stale = {
        kind: 'read',
        id: 'killed',
        host: 'elsewhere',
        pid: 1,
        created: new Date(0).toISOString(),
        refreshed: new Date(0).toISOString(),
        ttlMs: 50,
      };
      await put(store, leaseKey(HOST, 'read', 'killed'), JSON.stringify(stale));
      await sleep(100);
      assert.deepEqual(await collectGarbage(store, HOST), { deleted: 2, freedBytes: 2000 }, 'the dead read lease does not block');

      const gcKey = leaseKey(HOST, 'gc', 'other-process');
      const now = new Date().toISOString();
      await put(store, gcKey, JSON.stringify({ kind: 'gc', id: 'other-process', host: 'elsewhere', pid: 1, created: now, refreshed: now, ttlMs: 600_000 }));
      let held = false;
      const waiting = holdReadLease(store, HOST, 'waits', { pollMs: 20 }).then((l) => {
        held = true;
        return l;
      });
      await sleep(150);
      assert.equal(held, false, 'a restore starts fetching only once the collection that may not have seen its lease is done');
      assert.ok((await keys(store, leasePrefix(HOST))).includes(leaseKey(HOST, 'read', 'waits')), 'its lease was written before it looked');
      await store.delete(gcKey);
      await (await waiting).release();
      const ctl = new AbortController();
      await put(
        store,
        gcKey,
        JSON.stringify({ kind: 'gc', id: 'other-process', host: 'elsewhere', pid: 1, created: now, refreshed: new Date().toISOString(), ttlMs: 600_000 }),
      );
      const aborted = holdReadLease(store, HOST, 'aborted', { pollMs: 20, signal: ctl.signal });
      await sleep(50);
      ctl.abort();
      await assert.rejects(aborted, isAborted);
    });

    it('a collection killed midway and run again leaves exactly the referenced blobs', async () => {
      const store = await open();
      const { f1, f2, f3, f4, f5 } = await chain(store);
      await Promise.all(Array.from({ length: 20 }, (_, i) => storeBlob(store, HOST, `nb-${100 + i}-big-Data.db`, 10)));
      const ctl = new AbortController();
      await assert.rejects(collectGarbage(abortingAfterDeletes(store, 3, ctl), HOST, { signal: ctl.signal, concurrency: 2 }), isAborted);
      const left = await keys(store, BLOBS_PREFIX);
      for (const b of [f1, f2, f3, f4, f5]) assert.ok(left.includes(b.key), 'referenced blobs survive the kill');
      assert.ok(left.length < 27 && left.length > 5, `some garbage deleted before the abort, some left (${left.length})`);
      assert.deepEqual(await keys(store, leasePrefix(HOST)), [], 'an aborted collection removes its lease');
      const res = await collectGarbage(store, HOST);
      assert.equal(res.deleted, left.length - 5);
      assert.deepEqual(await keys(store, BLOBS_PREFIX), [f1, f2, f3, f4, f5].map((b) => b.key).sort());
    });
  });
}

/** Lets the store's pending calls settle (setImmediate is never mocked here). */
const settle = async (n = 20) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

const liveLease = (kind: 'backup' | 'read', id: string) => {
  const now = new Date().toISOString();
  return JSON.stringify({ kind, id, host: 'elsewhere', pid: 1, created: now, refreshed: now, ttlMs: 600_000 });
};

describe('leases on a clock the test moves (memory store)', () => {
  it('a refresh that starts in time but lands more than half a ttl after the last one began breaks the lease', async (t) => {
    t.mock.timers.enable({ apis: ['Date', 'setInterval'], now: 1_000_000 });
    t.mock.method(performance, 'now', () => Date.now()); // the leases' monotonic clock moves with the test's
    const ttlMs = 300;
    const store = new MemoryStore();
    const key = leaseKey(HOST, 'backup', 'slow');
    const lease = await holdBackupLease(store, HOST, 'slow', { ttlMs });
    assert.equal(lease.lastWritten(), 1_000_000);
    // The next refresh begins on time (ttl/3 later) and its put takes 250 ms: it lands at +350, and the stored lease,
    // dated +0, looked dead from +300 on. From start to start the gap is only 100 ms.
    let slowed = false;
    store.beforeCommit = (k) => {
      if (k === key && !slowed) {
        slowed = true;
        t.mock.timers.tick(250);
      }
    };
    t.mock.timers.tick(100);
    await settle();
    assert.ok(slowed, 'the refresh ran');
    assert.equal(JSON.parse(store.objects.get(key)!.body.toString('utf8')).refreshed, new Date(1_000_100).toISOString(), 'the slow write landed');
    assert.equal(lease.lastWritten(), 0, 'the slow landing broke the lease');
    // Prompt refreshes after that do not mend it: the lease did look dead once.
    for (let i = 0; i < 3; i++) {
      t.mock.timers.tick(100);
      await settle();
    }
    assert.equal(JSON.parse(store.objects.get(key)!.body.toString('utf8')).refreshed, new Date(1_000_650).toISOString());
    assert.equal(lease.lastWritten(), 0);
    assert.equal(lease.lastLanded(), 0);
    await lease.release();

    // The same lease refreshed promptly stays unbroken, and lastLanded is when its last write landed.
    store.beforeCommit = null;
    const prompt = await holdBackupLease(store, HOST, 'prompt', { ttlMs });
    for (let i = 0; i < 4; i++) {
      t.mock.timers.tick(100);
      await settle();
    }
    assert.equal(prompt.lastWritten(), Date.now());
    assert.equal(prompt.lastLanded(), Date.now());
    // A refresh that keeps failing: half a ttl after the last good one began the lease no longer counts as held.
    store.fail('put', new CbrError('CBR_ERR_STORAGE_FAILED', 'proxy down'), { match: (k) => k === leaseKey(HOST, 'backup', 'prompt') });
    const last = prompt.lastWritten();
    t.mock.timers.tick(100);
    await settle();
    assert.equal(prompt.lastWritten(), last, 'one missed refresh: still within half a ttl');
    t.mock.timers.tick(60);
    await settle();
    assert.equal(prompt.lastWritten(), 0, 'the last good write began more than half a ttl ago');
    prompt.stop();
  });

  it('a collection whose lease refreshes fail stops deleting before that lease can look dead, leaving only garbage', async (t) => {
    t.mock.timers.enable({ apis: ['Date', 'setInterval'], now: 1_000_000 });
    t.mock.method(performance, 'now', () => Date.now()); // the leases' monotonic clock moves with the test's
    const ttlMs = 300;
    const run = async (failRefreshes: boolean) => {
      const store = new MemoryStore();
      const { f1, f2, f3, f4, f5 } = await chain(store);
      await Promise.all(Array.from({ length: 40 }, (_, i) => storeBlob(store, HOST, `nb-${100 + i}-big-Data.db`, 10)));
      const isGc = (k: string) => k.startsWith(`${leasePrefix(HOST)}gc-`);
      const t0 = Date.now();
      const deletedAt: number[] = [];
      // Every blob delete takes 10 ms of the test's clock and succeeds; from the first one on, the collection's
      // lease writes fail (its deletes still go through).
      const slow = new Proxy(store, {
        get(target, prop) {
          if (prop === 'delete') {
            return async (k: string, opts?: { signal?: AbortSignal }) => {
              await target.delete(k, opts);
              if (!k.startsWith(BLOBS_PREFIX)) return;
              if (failRefreshes && deletedAt.length === 0) target.fail('put', new CbrError('CBR_ERR_STORAGE_FAILED', 'proxy down'), { match: isGc });
              deletedAt.push(Date.now() - t0);
              t.mock.timers.tick(10);
              await settle(5);
            };
          }
          const v = Reflect.get(target, prop, target) as unknown;
          return typeof v === 'function' ? v.bind(target) : v;
        },
      }) as MemoryStore;
      const res = collectGarbage(slow, HOST, { ttlMs, concurrency: 1 });
      return { store, res, deletedAt, referenced: [f1, f2, f3, f4, f5].map((b) => b.key).sort() };
    };
    // Refreshes that land: the whole run deletes all 42 garbage blobs, over more than a ttl of the test's clock.
    const ok = await run(false);
    assert.equal((await ok.res).deleted, 42);
    assert.ok(ok.deletedAt.at(-1)! > ttlMs);
    // Refreshes that fail: no delete at or after half a ttl from the lease's last good write, and an error says why.
    const failing = await run(true);
    await assert.rejects(
      failing.res,
      (err: unknown) => err instanceof CbrError && err.code === 'CBR_ERR_STORAGE_FAILED' && /lease could not be refreshed/.test(err.message),
    );
    assert.ok(failing.deletedAt.length > 0, 'it deleted while its lease was fresh');
    assert.ok(
      failing.deletedAt.every((ms) => ms < ttlMs / 2),
      `deletes at ${failing.deletedAt.join(', ')} ms`,
    );
    const left = await keys(failing.store, BLOBS_PREFIX);
    assert.equal(left.length, 47 - failing.deletedAt.length, 'some garbage left for the next run');
    for (const k of failing.referenced) assert.ok(left.includes(k), 'every referenced blob kept');
    assert.deepEqual(await keys(failing.store, leasePrefix(HOST)), [], 'it removed its lease');
  });
});

describe('a collection looks at the leases again while it deletes (memory store)', () => {
  for (const [kind, skipped] of [
    ['backup', 'backup-running'],
    ['read', 'restore-running'],
  ] as const) {
    it(`stops once a live ${kind} lease appeared (every few hundred deletes)`, async () => {
      const store = new MemoryStore();
      const { f1, f2, f3, f4, f5 } = await chain(store);
      await Promise.all(Array.from({ length: 598 }, (_, i) => storeBlob(store, HOST, `nb-${100 + i}-big-Data.db`, 1)));
      let count = 0;
      const appearing = new Proxy(store, {
        get(target, prop) {
          if (prop === 'delete') {
            return async (k: string, opts?: { signal?: AbortSignal }) => {
              await target.delete(k, opts);
              await settle(1); // a delete takes a turn of the event loop, as real I/O does
              if (k.startsWith(BLOBS_PREFIX) && ++count === 10)
                await put(target, leaseKey(HOST, kind, 'started-meanwhile'), liveLease(kind, 'started-meanwhile'));
            };
          }
          const v = Reflect.get(target, prop, target) as unknown;
          return typeof v === 'function' ? v.bind(target) : v;
        },
      }) as MemoryStore;
      const res = await collectGarbage(appearing, HOST, { concurrency: 4 });
      assert.equal(res.skipped, skipped);
      assert.equal(res.deleted, count);
      assert.ok(res.deleted >= 10 && res.deleted < 300, `stopped after ${res.deleted} of 600 deletes`);
      const left = await keys(store, BLOBS_PREFIX);
      assert.equal(left.length, 605 - res.deleted);
      for (const b of [f1, f2, f3, f4, f5]) assert.ok(left.includes(b.key));
      assert.deepEqual(await keys(store, leasePrefix(HOST)), [leaseKey(HOST, kind, 'started-meanwhile')], 'it removed only its own lease');
    });
  }

  it('looks again every ttl/3 of its run, not only after many deletes', async (t) => {
    t.mock.timers.enable({ apis: ['Date', 'setInterval'], now: 1_000_000 });
    t.mock.method(performance, 'now', () => Date.now()); // the leases' monotonic clock moves with the test's
    const store = new MemoryStore();
    await chain(store);
    await Promise.all(Array.from({ length: 40 }, (_, i) => storeBlob(store, HOST, `nb-${100 + i}-big-Data.db`, 1)));
    let count = 0;
    const slow = new Proxy(store, {
      get(target, prop) {
        if (prop === 'delete') {
          return async (k: string, opts?: { signal?: AbortSignal }) => {
            await target.delete(k, opts);
            if (!k.startsWith(BLOBS_PREFIX)) return;
            if (++count === 3) await put(target, leaseKey(HOST, 'backup', 'started-meanwhile'), liveLease('backup', 'started-meanwhile'));
            t.mock.timers.tick(10);
            await settle(5);
          };
        }
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as MemoryStore;
    const res = await collectGarbage(slow, HOST, { ttlMs: 300, concurrency: 1 });
    assert.equal(res.skipped, 'backup-running');
    // 10 ms a delete, a look every 100 ms: the backup lease written after the third is seen before the eleventh.
    assert.equal(res.deleted, 10);
  });
});

describe("ages are measured on the store clock, never the reader's (memory store)", () => {
  it("a collection on a host whose clock runs 11 minutes ahead still sees a running backup's lease as live; one behind sees a dead lease as dead", async (t) => {
    const store = new MemoryStore();
    let storeClock = Date.now();
    store.now = () => storeClock;
    const { g } = await chain(store);
    const lease = await holdBackupLease(store, HOST, 'running');
    lease.stop();
    // The collector's clock is 11 minutes ahead of the store's (and of the backup's host): more than the lease's ttl.
    t.mock.timers.enable({ apis: ['Date'], now: storeClock + 11 * 60_000 });
    assert.deepEqual(await collectGarbage(store, HOST, { graceMs: 0 }), { deleted: 0, freedBytes: 0, skipped: 'backup-running' });
    for (const b of g) assert.ok(store.objects.has(b.key), 'the running backup is safe');
    // The store's clock moves past the lease's ttl while the collector's stands still (behind): the lease is dead.
    storeClock += BACKUP_LEASE_TTL_MS + 60_000;
    assert.deepEqual(await collectGarbage(store, HOST, { graceMs: 0 }), { deleted: 2, freedBytes: 2000 });
  });

  it("a listing that lags behind a lease's refreshes (a loaded Swift) does not make a running backup's lease look dead: its HEAD decides", async () => {
    const store = new MemoryStore();
    let storeClock = Date.now();
    store.now = () => storeClock;
    const { g } = await chain(store);
    const lease = await holdBackupLease(store, HOST, 'long');
    lease.stop();
    const key = leaseKey(HOST, 'backup', 'long');
    const listedAt = store.objects.get(key)!.modified;
    // Nine minutes on, the backup refreshes its lease (the object's time moves); the container listing still shows
    // the old time. Two minutes later a collection runs: by the listing alone the lease is 11 minutes old (dead).
    storeClock += 9 * 60_000;
    await store.put(key, Readable.from([Buffer.from(JSON.stringify({ kind: 'backup', id: 'long', ttlMs: BACKUP_LEASE_TTL_MS }))]));
    storeClock += 2 * 60_000;
    const list = store.list.bind(store);
    store.list = async function* (prefix, opts) {
      for await (const o of list(prefix, opts)) yield o.key === key ? { ...o, modified: listedAt } : o;
    };
    assert.deepEqual(await collectGarbage(store, HOST, { graceMs: 0 }), { deleted: 0, freedBytes: 0, skipped: 'backup-running' });
    for (const b of g) assert.ok(store.objects.has(b.key), 'the running backup is safe');
  });

  it("never collects a blob younger than the grace period on the store clock, whatever the collector's clock says", async (t) => {
    const store = new MemoryStore();
    const storeClock = Date.now();
    store.now = () => storeClock;
    const { g } = await chain(store);
    // One unreferenced blob stored longer ago than the grace period, one just now (a running backup's, say, whose
    // lease the collector cannot see).
    store.objects.get(g[0].key)!.modified = new Date(storeClock - BLOB_GRACE_MS - 1000).toISOString();
    t.mock.timers.enable({ apis: ['Date'], now: storeClock + 24 * 3600_000 });
    const saved = process.env['CBR_GC_GRACE_MS'];
    process.env['CBR_GC_GRACE_MS'] = String(BLOB_GRACE_MS);
    try {
      assert.deepEqual(await collectGarbage(store, HOST), { deleted: 1, freedBytes: g[0].stored });
    } finally {
      process.env['CBR_GC_GRACE_MS'] = saved;
    }
    assert.ok(!store.objects.has(g[0].key));
    assert.ok(store.objects.has(g[1].key), 'the young blob is kept');
  });
});
