import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CbrError, type ErrorCode } from '../../../src/core/errors.ts';
import type { ObjectInfo, ObjectStore } from '../../../src/storage/port.ts';
import { inParallel, localTarget, type StoreUnderTest, s3Target, swiftKeystoneTarget, swiftV1Target } from '../../helpers/stores.ts';

/**
 * The storage contract (after restic's backend test suite): one list of cases, run unchanged against every driver,
 * each on a container of its own. A driver that answers a case differently from the others is the thing to fix.
 * Segments are 1 MiB (Swift) and parts 5 MiB (S3), so "larger than a segment" stays small. The scale case stops at
 * 2,100 objects: enough to cross S3's 1,000-key pages twice, while the Swift all-in-one (some 80 requests a second)
 * keeps the file near two and a half minutes; Swift's own pages are 10,000 keys, which no case here reaches.
 */

const CHUNK = 64 << 10;

/** A body of unknown length: `data` in 64 KiB chunks as the reader asks, then the end, or `onStall` when the reader asks for more. */
function source(data: Buffer, onStall?: (body: Readable) => void): Readable {
  let off = 0;
  let stalled = false;
  return new Readable({
    read() {
      if (off < data.length) {
        const n = Math.min(CHUNK, data.length - off);
        this.push(data.subarray(off, off + n));
        off += n;
      } else if (!onStall) this.push(null);
      else if (!stalled) {
        stalled = true;
        onStall(this);
      }
    },
  });
}

async function bytesOf(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function listed(store: ObjectStore, prefix: string, signal?: AbortSignal): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of store.list(prefix, signal ? { signal } : {})) out.push(o);
  return out;
}

async function rejectsWith(what: Promise<unknown>, code: ErrorCode, label = ''): Promise<void> {
  await assert.rejects(what, (err: unknown) => {
    assert.ok(err instanceof CbrError, `${label} threw a coded error, not ${String(err)}`);
    assert.equal(err.code, code, `${label}: ${err.message}`);
    return true;
  });
}

/** Waits (up to 20 s) until the driver has something of its own under `prefix` (a segment, an upload, a partial file). */
async function untilHidden(t: StoreUnderTest, prefix: string): Promise<boolean> {
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await sleep(50)) {
    if ((await t.hidden(prefix)).length > 0) return true;
  }
  return false;
}

async function leavesNothing(t: StoreUnderTest, key: string, prefix: string): Promise<void> {
  assert.equal(await t.store.head(key), null, 'no object');
  assert.deepEqual(await listed(t.store, prefix), [], 'nothing listed');
  assert.deepEqual(await t.hidden(prefix), [], 'no segment, upload or partial file');
}

const isIso = (s: string) => !Number.isNaN(Date.parse(s)) && new Date(s).toISOString() === s;

const cases: { name: string; scale?: true; run(t: StoreUnderTest): Promise<void> }[] = [
  {
    name: 'put then get: the same bytes; put returns the size, head and list agree',
    async run({ store }) {
      const data = randomBytes(300 * 1024 + 7);
      assert.deepEqual(await store.put('roundtrip/obj.bin', source(data), { contentType: 'application/octet-stream' }), { size: data.length });
      assert.ok((await bytesOf(await store.get('roundtrip/obj.bin'))).equals(data));
      const info = await store.head('roundtrip/obj.bin');
      assert.equal(info?.key, 'roundtrip/obj.bin');
      assert.equal(info?.size, data.length);
      assert.ok(isIso(info.modified), info.modified);
      const all = await listed(store, 'roundtrip/');
      assert.deepEqual(
        all.map((o) => [o.key, o.size]),
        [['roundtrip/obj.bin', data.length]],
      );
      assert.ok(isIso(all[0]!.modified), all[0]!.modified);
    },
  },
  {
    name: 'an empty object is stored, read back and listed with size 0',
    async run({ store }) {
      assert.deepEqual(await store.put('empty/zero', source(Buffer.alloc(0))), { size: 0 });
      assert.equal((await bytesOf(await store.get('empty/zero'))).length, 0);
      assert.equal((await store.head('empty/zero'))?.size, 0);
      assert.deepEqual(
        (await listed(store, 'empty/')).map((o) => [o.key, o.size]),
        [['empty/zero', 0]],
      );
    },
  },
  {
    name: 'a put of unknown length over several segments/parts comes back whole, lists as one object, and delete takes its segments',
    async run(t) {
      const data = randomBytes(2 * t.segment + 123_457);
      assert.deepEqual(await t.store.put('big/archive', source(data)), { size: data.length });
      assert.equal(sha(await bytesOf(await t.store.get('big/archive'))), sha(data));
      assert.equal((await t.store.head('big/archive'))?.size, data.length);
      assert.deepEqual(
        (await listed(t.store, 'big/')).map((o) => [o.key, o.size]),
        [['big/archive', data.length]],
      );
      await t.store.delete('big/archive');
      await leavesNothing(t, 'big/archive', 'big/');
    },
  },
  {
    name: 'a put without ifAbsent replaces the object, small over large and large over small',
    async run(t) {
      const small = randomBytes(1000);
      const large = randomBytes(t.segment + 4321);
      await t.store.put('replace/obj', source(small));
      await t.store.put('replace/obj', source(large));
      assert.equal(sha(await bytesOf(await t.store.get('replace/obj'))), sha(large));
      await t.store.put('replace/obj', source(small));
      assert.ok((await bytesOf(await t.store.get('replace/obj'))).equals(small));
      assert.equal((await t.store.head('replace/obj'))?.size, small.length);
    },
  },
  {
    name: 'ifAbsent creates only: a second put (small or segmented) fails with CBR_ERR_OBJECT_EXISTS, the first content stays',
    async run(t) {
      const first = Buffer.from('first content');
      assert.deepEqual(await t.store.put('create-only/rec', source(first), { ifAbsent: true }), { size: first.length });
      await rejectsWith(t.store.put('create-only/rec', source(Buffer.from('second')), { ifAbsent: true }), 'CBR_ERR_OBJECT_EXISTS', 'small');
      await rejectsWith(t.store.put('create-only/rec', source(randomBytes(2 * t.segment + 1)), { ifAbsent: true }), 'CBR_ERR_OBJECT_EXISTS', 'segmented');
      assert.ok((await bytesOf(await t.store.get('create-only/rec'))).equals(first));
      assert.deepEqual(await t.hidden('create-only/'), [], 'the refused segmented put left nothing');
      const big = randomBytes(2 * t.segment + 1);
      assert.deepEqual(await t.store.put('create-only/big', source(big), { ifAbsent: true }), { size: big.length });
      assert.equal(sha(await bytesOf(await t.store.get('create-only/big'))), sha(big));
      await t.store.delete('create-only/rec');
      await t.store.put('create-only/rec', source(Buffer.from('again')), { ifAbsent: true });
      assert.equal((await bytesOf(await t.store.get('create-only/rec'))).toString(), 'again');
    },
  },
  {
    name: 'two concurrent ifAbsent puts of one key: exactly one wins where the store can tell (else one whole body stays)',
    async run(t) {
      for (let round = 0; round < 3; round++) {
        const key = `race/key-${round}`;
        const bodies = [randomBytes(64 << 10), randomBytes(64 << 10)];
        const results = await Promise.allSettled(bodies.map((b) => t.store.put(key, source(b), { ifAbsent: true })));
        for (const r of results) {
          if (r.status === 'rejected') assert.equal((r.reason as CbrError).code, 'CBR_ERR_OBJECT_EXISTS', String(r.reason));
        }
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        const stored = await bytesOf(await t.store.get(key));
        if (t.atomicCreateOnly) {
          assert.equal(winners.length, 1, `round ${round}: exactly one put wins`);
          assert.ok(stored.equals(bodies[winners[0]!]!), 'the winner is what is stored');
        } else {
          assert.ok(winners.length >= 1, 'at least one put wins');
          assert.ok(
            bodies.some((b) => b.equals(stored)),
            'one whole body is stored',
          );
        }
      }
    },
  },
  {
    name: 'head: null for a missing key (also one that is only a prefix of others); the size for a present one',
    async run({ store }) {
      await store.put('head/dir/inner', source(Buffer.from('12345')));
      assert.equal(await store.head('head/missing'), null);
      assert.equal(await store.head('head/dir'), null, 'a "directory" is not an object');
      assert.equal((await store.head('head/dir/inner'))?.size, 5);
    },
  },
  {
    name: 'get of a missing key (also one that is only a prefix of others) fails with CBR_ERR_OBJECT_NOT_FOUND',
    async run({ store }) {
      await store.put('missing/dir/inner', source(Buffer.from('x')));
      await rejectsWith(store.get('missing/nothing'), 'CBR_ERR_OBJECT_NOT_FOUND', 'missing key');
      await rejectsWith(store.get('missing/dir'), 'CBR_ERR_OBJECT_NOT_FOUND', 'prefix of a key');
    },
  },
  {
    name: 'list(prefix) gives exactly the keys that start with the prefix, in key order, with their sizes',
    async run({ store }) {
      const keys = ['tree/a/b', 'tree/a/bc/1', 'tree/a/bc/2', 'tree/a/bc.d', 'tree/a/bcd/1', 'tree/ab/1', 'tree/b'];
      await inParallel(keys, 4, (k, i) => store.put(k, source(Buffer.alloc(i + 1, i))).then(() => {}));
      const under = async (prefix: string) => (await listed(store, prefix)).map((o) => [o.key, o.size]);
      const expect = (...ks: string[]) => ks.map((k) => [k, keys.indexOf(k) + 1]);
      assert.deepEqual(await under('tree/a/bc/'), expect('tree/a/bc/1', 'tree/a/bc/2'));
      assert.deepEqual(await under('tree/a/bc'), expect('tree/a/bc.d', 'tree/a/bc/1', 'tree/a/bc/2', 'tree/a/bcd/1'));
      assert.deepEqual(await under('tree/a/'), expect('tree/a/b', 'tree/a/bc.d', 'tree/a/bc/1', 'tree/a/bc/2', 'tree/a/bcd/1'));
      assert.deepEqual(await under('tree/'), expect(...[...keys].sort()));
      assert.deepEqual(await under('tree/none/'), []);
    },
  },
  {
    name: 'listing at scale: 2,100 objects under one prefix (three S3 pages), each listed exactly once; purge removes and counts them',
    scale: true,
    async run({ store }) {
      const keys = Array.from({ length: 2100 }, (_, i) => `many/k-${String(i).padStart(5, '0')}`);
      await inParallel(keys, 16, (k) => store.put(k, source(Buffer.from(k.slice(-3)))).then(() => {}));
      const all = await listed(store, 'many/');
      assert.equal(all.length, keys.length);
      assert.deepEqual(
        all.map((o) => o.key),
        keys,
        'every key once, in order',
      );
      assert.ok(all.every((o) => o.size === 3));
      const page = await listed(store, 'many/k-01');
      assert.equal(page.length, 1000, 'a prefix matching exactly 1,000 keys');
      assert.deepEqual(page[0]?.key, 'many/k-01000');
      assert.equal(await store.purge('many/'), keys.length);
      assert.deepEqual(await listed(store, 'many/'), []);
    },
  },
  {
    name: 'delete is idempotent: a missing key, and the same key twice',
    async run({ store }) {
      await store.delete('gone/never-was');
      await store.put('gone/obj', source(Buffer.from('x')));
      await store.delete('gone/obj');
      await store.delete('gone/obj');
      await store.delete('gone');
      assert.equal(await store.head('gone/obj'), null);
      assert.deepEqual(await listed(store, 'gone/'), []);
    },
  },
  {
    name: 'purge(prefix) removes the objects and the leftovers of killed puts under it, counts them, spares the rest, and is idempotent',
    async run(t) {
      for (const k of ['purge/x/1', 'purge/x/2/deep', 'purge/x/3', 'purge/xy/1']) await t.store.put(k, source(Buffer.from(k)));
      await t.store.put('purge/x/seg', source(randomBytes(t.segment + 10)));
      await t.leaveDebris('purge/x/killed');
      await t.leaveDebris('purge/x/2/killed');
      assert.equal((await t.hidden('purge/x/')).length >= 2, true, 'the debris is there');
      assert.equal(await t.store.purge('purge/x/'), 6, '4 objects and 2 leftovers');
      assert.deepEqual(await listed(t.store, 'purge/x/'), []);
      assert.deepEqual(await t.hidden('purge/x/'), []);
      assert.deepEqual(
        (await listed(t.store, 'purge/')).map((o) => o.key),
        ['purge/xy/1'],
      );
      assert.equal(await t.store.purge('purge/x/'), 0);
    },
  },
  {
    name: 'a put aborted mid-stream fails with CBR_ERR_ABORTED and leaves no object and no segment, upload or partial file',
    async run(t) {
      const abort = new AbortController();
      let midway = false;
      const stall = () =>
        void untilHidden(t, 'aborted/').then((seen) => {
          midway = seen;
          abort.abort();
        });
      await rejectsWith(t.store.put('aborted/obj', source(randomBytes(2 * t.segment + CHUNK / 2), stall), { signal: abort.signal }), 'CBR_ERR_ABORTED');
      assert.ok(midway, 'the put had stored something of its own when the abort came');
      await leavesNothing(t, 'aborted/obj', 'aborted/');
    },
  },
  {
    name: 'a body stream that fails mid-way fails the put with a coded error and leaves nothing; a coded body error keeps its code',
    async run(t) {
      let midway = false;
      const fail = (body: Readable) =>
        void untilHidden(t, 'failing/').then((seen) => {
          midway = seen;
          body.destroy(new Error('read error: the disk went away'));
        });
      await rejectsWith(t.store.put('failing/obj', source(randomBytes(2 * t.segment + CHUNK / 2), fail)), 'CBR_ERR_STORAGE_FAILED', 'plain error');
      assert.ok(midway, 'the put had stored something of its own when the body failed');
      await leavesNothing(t, 'failing/obj', 'failing/');
      const coded = (body: Readable) => body.destroy(new CbrError('CBR_ERR_SNAPSHOT_FAILED', 'a snapshot file vanished'));
      await rejectsWith(t.store.put('failing/small', source(Buffer.from('a little'), coded)), 'CBR_ERR_SNAPSHOT_FAILED', 'coded error');
      await leavesNothing(t, 'failing/small', 'failing/');
    },
  },
  {
    name: 'keys outside KEY_RE (traversal, absolute, empty parts, non-ASCII) and bad purge prefixes are refused with CBR_ERR_INVALID_ARGUMENT',
    async run({ store }) {
      const bad = ['../escape', 'a/../../escape', 'a/..', '/abs', 'a//b', 'a/', '', '.hidden', 'a/./b', 'a b', 'caf\u00e9', 'a\\b', 'a/b?c'];
      for (const key of bad) {
        await rejectsWith(store.put(key, source(Buffer.from('x'))), 'CBR_ERR_INVALID_ARGUMENT', `put ${JSON.stringify(key)}`);
        await rejectsWith(store.get(key), 'CBR_ERR_INVALID_ARGUMENT', `get ${JSON.stringify(key)}`);
        await rejectsWith(store.head(key), 'CBR_ERR_INVALID_ARGUMENT', `head ${JSON.stringify(key)}`);
        await rejectsWith(store.delete(key), 'CBR_ERR_INVALID_ARGUMENT', `delete ${JSON.stringify(key)}`);
      }
      for (const prefix of ['', '/', 'no-slash', '../', 'a//', 'a/../']) {
        await rejectsWith(store.purge(prefix), 'CBR_ERR_INVALID_ARGUMENT', `purge ${JSON.stringify(prefix)}`);
      }
      assert.deepEqual(
        (await listed(store, '')).filter((o) => /escape|abs|hidden/.test(o.key)),
        [],
      );
    },
  },
  {
    name: 'an already-aborted signal stops every call with CBR_ERR_ABORTED, and the put writes nothing',
    async run(t) {
      const { store } = t;
      await store.put('pre-aborted/there', source(Buffer.from('x')));
      const signal = AbortSignal.abort();
      await rejectsWith(store.put('pre-aborted/obj', source(Buffer.from('data')), { signal }), 'CBR_ERR_ABORTED', 'put');
      await rejectsWith(store.get('pre-aborted/there', { signal }), 'CBR_ERR_ABORTED', 'get');
      await rejectsWith(store.head('pre-aborted/there', { signal }), 'CBR_ERR_ABORTED', 'head');
      await rejectsWith(listed(store, 'pre-aborted/', signal), 'CBR_ERR_ABORTED', 'list');
      await rejectsWith(store.delete('pre-aborted/there', { signal }), 'CBR_ERR_ABORTED', 'delete');
      await rejectsWith(store.purge('pre-aborted/', { signal }), 'CBR_ERR_ABORTED', 'purge');
      assert.deepEqual(
        (await listed(store, 'pre-aborted/')).map((o) => o.key),
        ['pre-aborted/there'],
      );
    },
  },
  {
    name: 'a container nobody wrote to: empty listing, head null, get not found, delete and purge are no-ops',
    async run({ untouched }) {
      assert.deepEqual(await listed(untouched, ''), []);
      assert.equal(await untouched.head('a/b'), null);
      await rejectsWith(untouched.get('a/b'), 'CBR_ERR_OBJECT_NOT_FOUND');
      await untouched.delete('a/b');
      assert.equal(await untouched.purge('a/'), 0);
    },
  },
];

for (const target of [localTarget, swiftV1Target, swiftKeystoneTarget, s3Target]) {
  describe(`storage contract: ${target.name}`, () => {
    let t: StoreUnderTest;
    before(async () => {
      t = await target.setUp();
    });
    after(async () => {
      await t?.tearDown();
    });
    for (const c of cases) it(c.name, { timeout: c.scale ? 150_000 : 60_000, skip: (c.scale && target.skipScale) || false }, () => c.run(t));
  });
}
