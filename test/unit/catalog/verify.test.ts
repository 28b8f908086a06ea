import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { blobKey, blobName, fileNameOf, tableIdOf } from '../../../src/catalog/blobs.ts';
import { readRecord, writeRecord } from '../../../src/catalog/catalog.ts';
import { filesDigest } from '../../../src/catalog/record.ts';
import { advanceBucket, nextBucket } from '../../../src/catalog/sampleCursor.ts';
import { bucketOf, bucketsFor, type VerifyResult, verdictCode, verifyBackup } from '../../../src/catalog/verify.ts';
import { runVerify } from '../../../src/workflows/verifyRequest.ts';
import { removeFakeNodes } from '../../fixtures/fakeNode.ts';
import type { MemoryStore } from '../../fixtures/memoryStore.ts';
import { makeBackup, rejectsCoded } from '../../fixtures/stepKit.ts';
import { scratch } from '../../helpers/tmp.ts';

after(removeFakeNodes);

/** A COMPLETED backup made by the real backup steps on a FakeNode into a MemoryStore. */
async function backup(strategy: 'full' | 'incremental', key: Buffer | null, id: string): Promise<MemoryStore> {
  return (await makeBackup({ strategy, key: key ?? false, backupId: id, source: { name: `src-${id}` } })).store;
}

function flipByte(store: MemoryStore, key: string, at?: number): void {
  const o = store.objects.get(key)!;
  const body = Buffer.from(o.body);
  const i = at ?? Math.floor(body.length / 2);
  body[i] = body[i]! ^ 0x01;
  store.objects.set(key, { ...o, body });
}

describe('sample buckets', () => {
  it("a key's bucket depends on the key alone: the same in every backup, every bucket used, one bucket takes all", () => {
    const keys = Array.from({ length: 400 }, (_, i) => `cbr.blobs/h/${String(i).padStart(8, '0')}`);
    const a = keys.map((k) => bucketOf(k, 7));
    assert.deepEqual(
      [...keys].reverse().map((k) => bucketOf(k, 7)),
      [...a].reverse(),
      'the order of the files does not matter',
    );
    assert.ok(a.every((b) => Number.isInteger(b) && b >= 0 && b < 7));
    const count = new Array<number>(7).fill(0);
    for (const b of a) count[b]!++;
    assert.ok(
      count.every((n) => n > 400 / 7 / 2),
      `about equal counts: ${count.join(',')}`,
    );
    assert.ok(keys.every((k) => bucketOf(k, 1) === 0));
    assert.throws(() => bucketOf('k', 0), { code: 'CBR_ERR_INVALID_ARGUMENT' });
  });

  it('--sample p gives ceil(100/p) buckets; anything but a percentage above 0 and at most 100 is refused', () => {
    assert.equal(bucketsFor('10%'), 10);
    assert.equal(bucketsFor('30%'), 4);
    assert.equal(bucketsFor('100'), 1);
    assert.equal(bucketsFor('2.5%'), 40);
    for (const bad of ['0', '0%', '101%', '-5', 'ten', '', '10%%']) assert.throws(() => bucketsFor(bad), { code: 'CBR_ERR_INVALID_ARGUMENT' }, bad);
  });

  it('the cursor file moves on after each run, wraps around, and is kept per store, backup and bucket count', async () => {
    const path = join(scratch('cbr-cursor-'), 'c.json');
    assert.equal(await nextBucket(path, 's', 'b1', 3), 0);
    await advanceBucket(path, 's', 'b1', 3, 0);
    assert.equal(await nextBucket(path, 's', 'b1', 3), 1);
    await advanceBucket(path, 's', 'b1', 3, 2);
    assert.equal(await nextBucket(path, 's', 'b1', 3), 0, 'wraps');
    await advanceBucket(path, 's', 'b1', 3, 1);
    assert.equal(await nextBucket(path, 's', 'b2', 3), 0, 'another backup');
    assert.equal(await nextBucket(path, 'other', 'b1', 3), 0, 'another store');
    assert.equal(await nextBucket(path, 's', 'b1', 4), 0, 'another --sample');
    writeFileSync(path, 'not json');
    assert.equal(await nextBucket(path, 's', 'b1', 3), 0, 'an unreadable file starts over');
  });
});

describe('verdicts', () => {
  const r = (kinds: string[]) =>
    ({ ok: kinds.length === 0, problems: kinds.map((kind) => ({ kind, object: 'o', message: 'm' })) }) as Pick<VerifyResult, 'ok' | 'problems'>;
  it('whole: none; only missing objects: MISSING; anything else: CORRUPT', () => {
    assert.equal(verdictCode(r([])), null);
    assert.equal(verdictCode(r(['missing', 'missing'])), 'CBR_ERR_VERIFY_MISSING');
    assert.equal(verdictCode(r(['missing', 'size'])), 'CBR_ERR_VERIFY_CORRUPT');
    assert.equal(verdictCode(r(['corrupt'])), 'CBR_ERR_VERIFY_CORRUPT');
    assert.equal(verdictCode(r(['unexpected'])), 'CBR_ERR_VERIFY_CORRUPT');
  });
});

describe('verifyBackup on backups made by the backup steps', () => {
  for (const encrypted of [false, true]) {
    const label = encrypted ? 'encrypted' : 'plain';
    it(`full, ${label}: whole verifies shallow and deep; a flipped byte is caught deep only; a truncated archive shallow; a deleted one is missing`, async () => {
      const key = encrypted ? randomBytes(32) : null;
      const store = await backup('full', key, `f-${label}`);
      const rec = await readRecord(store, `f-${label}`);
      const shallow = await verifyBackup(store, rec.id, { deep: false, key });
      assert.equal(shallow.ok, true, JSON.stringify(shallow.problems));
      assert.equal(shallow.bytesRead, 0);
      const deep = await verifyBackup(store, rec.id, { deep: true, key });
      assert.equal(deep.ok, true, JSON.stringify(deep.problems));
      assert.equal(deep.bytesRead, rec.size);
      assert.equal(deep.sampledFraction, 1);
      assert.equal(deep.strategy, 'full');
      assert.equal(deep.host, rec.hostId);

      const flipped = store.clone();
      flipByte(flipped, rec.object);
      assert.equal((await verifyBackup(flipped, rec.id, { deep: false, key })).ok, true, 'a flipped byte keeps the size');
      const caught = await verifyBackup(flipped, rec.id, { deep: true, key });
      assert.equal(verdictCode(caught), 'CBR_ERR_VERIFY_CORRUPT');
      assert.ok(caught.problems.some((p) => p.object === rec.object && p.kind === 'corrupt'));

      const truncated = store.clone();
      const o = truncated.objects.get(rec.object)!;
      truncated.objects.set(rec.object, { ...o, body: o.body.subarray(0, o.body.length - 100) });
      const cut = await verifyBackup(truncated, rec.id, { deep: false, key });
      assert.deepEqual(
        cut.problems.map((p) => [p.kind, p.expected, p.found]),
        [['size', rec.size, rec.size - 100]],
      );

      const gone = store.clone();
      gone.objects.delete(rec.object);
      const missing = await verifyBackup(gone, rec.id, { deep: true, key });
      assert.equal(verdictCode(missing), 'CBR_ERR_VERIFY_MISSING');
    });

    it(`incremental, ${label}: deep checks each file; shallow catches a deleted or truncated blob; a report never carries key bytes`, async () => {
      const key = encrypted ? randomBytes(32) : null;
      const store = await backup('incremental', key, `i-${label}`);
      const rec = await readRecord(store, `i-${label}`);
      assert.equal((await verifyBackup(store, rec.id, { deep: false, key })).ok, true);
      const deep = await verifyBackup(store, rec.id, { deep: true, key });
      assert.equal(deep.ok, true, JSON.stringify(deep.problems));
      assert.equal(deep.bytesRead, rec.size);
      assert.equal(deep.files, rec.fileCount);

      const big = [...rec.files].sort((a, b) => b.stored! - a.stored!)[0]!;
      const broken = store.clone();
      flipByte(broken, big.blob!);
      assert.equal((await verifyBackup(broken, rec.id, { deep: false, key })).ok, true);
      const caught = await verifyBackup(broken, rec.id, { deep: true, key });
      assert.deepEqual(
        caught.problems.map((p) => [p.kind, p.path]),
        [['corrupt', big.path]],
      );
      const text = JSON.stringify(caught);
      if (key) assert.ok(!text.includes(key.toString('hex')) && !text.includes(key.toString('base64')), 'no key material');

      const [first, second] = rec.files;
      broken.objects.delete(first!.blob!);
      const o = broken.objects.get(second!.blob!)!;
      broken.objects.set(second!.blob!, { ...o, body: o.body.subarray(0, Math.max(0, o.body.length - 1)) });
      const shallow = await verifyBackup(broken, rec.id, { deep: false, key });
      assert.deepEqual(
        shallow.problems.map((p) => [p.kind, p.path]).sort(),
        [
          ['missing', first!.path],
          ['size', second!.path],
        ].sort(),
      );
      assert.equal(verdictCode(shallow), 'CBR_ERR_VERIFY_CORRUPT');
    });
  }

  it('an encrypted backup: a wrong key is CBR_ERR_DECRYPT_FAILED before anything is read; deep without a key is CBR_ERR_KEY_REQUIRED', async () => {
    const key = randomBytes(32);
    const store = await backup('incremental', key, 'wrong-key');
    store.calls.length = 0;
    await rejectsCoded(verifyBackup(store, 'wrong-key', { deep: true, key: randomBytes(32) }), 'CBR_ERR_DECRYPT_FAILED', /wrong key/);
    assert.ok(!store.calls.some((c) => c.key.startsWith('cbr.blobs/')), 'no blob was read');
    await rejectsCoded(verifyBackup(store, 'wrong-key', { deep: true }), 'CBR_ERR_KEY_REQUIRED');
    assert.equal((await verifyBackup(store, 'wrong-key', { deep: false })).ok, true, 'shallow needs no key');
    await rejectsCoded(verifyBackup(store, 'nope', { deep: false }), 'CBR_ERR_BACKUP_NOT_FOUND');
  });

  it('--sample 30%: 4 runs in a row check every file exactly once', async () => {
    const store = await backup('incremental', null, 'sampled');
    const rec = await readRecord(store, 'sampled');
    // Every blob gone: each run's problems name exactly the files it checked.
    for (const f of rec.files) store.objects.delete(f.blob!);
    const env = { CBR_HOME: scratch('cbr-home-') };
    const seen: string[] = [];
    const buckets: number[] = [];
    for (let run = 0; run < 4; run++) {
      const r = await runVerify(store, { backupId: 'sampled', sample: '30%' }, { env });
      assert.equal(r.sample?.buckets, 4);
      buckets.push(r.sample!.bucket);
      assert.ok(r.problems.every((p) => p.kind === 'missing'));
      seen.push(...r.problems.map((p) => p.path!));
      assert.ok(r.sampledFraction >= 0 && r.sampledFraction < 1, `fraction ${r.sampledFraction}`);
    }
    assert.deepEqual(buckets, [0, 1, 2, 3]);
    assert.deepEqual([...seen].sort(), rec.files.map((f) => f.path).sort(), 'every file once');
    const fifth = await runVerify(store, { backupId: 'sampled', sample: '30%' }, { env });
    assert.equal(fifth.sample?.bucket, 0, 'then it starts over');
  });

  it('--latest --sample 10% on 10 successive backups (each night a new id, blobs shared): together they check every blob', async () => {
    const store = await backup('incremental', null, 'night-base');
    const base = await readRecord(store, 'night-base');
    await store.delete('night-base/backup.json');
    const env = { CBR_HOME: scratch('cbr-home-') };
    // A file as the backup steps name it: its blob's key is a digest of its identity (record.ts checks it).
    const file = (i: number) => {
      const path = `ks/t-fedcba9876543210fedcba9876543210/nb-${i}-big-Data.db`;
      const sha256 = createHash('sha256').update(`content ${i}`).digest('hex');
      const identity = { hostId: base.hostId, tableId: tableIdOf(path), fileName: fileNameOf(path), size: 100 + i, sha256, compression: base.compression };
      return { path, size: 100 + i, sha256, blob: blobKey(base.hostId, blobName(identity, null)), stored: 50 + i, shared: false };
    };
    // Each night keeps the files of the night before but one, and adds two: what compaction does to SSTables.
    let files = Array.from({ length: 60 }, (_, i) => file(i));
    const named = new Map<string, number>();
    const checked = new Set<string>();
    for (let night = 0; night < 10; night++) {
      if (night > 0) {
        files = files.slice(1);
        files.push(file(1000 + night * 2), file(1001 + night * 2));
      }
      const id = `night-${night}`;
      const created = new Date(Date.UTC(2026, 10, 1 + night, 2)).toISOString();
      const sum = (k: 'size' | 'stored') => files.reduce((n, f) => n + f[k], 0);
      const totals = {
        fileCount: files.length,
        rawBytes: sum('size'),
        size: sum('stored'),
        newBytes: sum('size'),
        sharedBytes: 0,
        newStoredBytes: sum('stored'),
      };
      await writeRecord(store, { ...base, ...totals, id, created, finished: created, files, sha256: filesDigest(files) });
      await readRecord(store, id);
      for (const f of files) named.set(f.blob, (named.get(f.blob) ?? 0) + 1);
      // No blob is stored: each run's problems name exactly the blobs it checked.
      const r = await runVerify(store, { latest: true, host: base.hostId, sample: '10%' }, { env });
      assert.equal(r.id, id, 'the newest backup');
      assert.deepEqual(r.sample, { bucket: night, buckets: 10 }, 'the cursor follows the host, not the id');
      for (const p of r.problems) checked.add(p.object);
    }
    const lasting = [...named].filter(([, n]) => n >= 10).map(([b]) => b);
    assert.ok(lasting.length > 40);
    assert.deepEqual(
      lasting.filter((b) => !checked.has(b)),
      [],
      'every blob named by all 10 backups was checked',
    );
    // A fixed id keeps its own cursor, which --latest did not move.
    const fixed = await runVerify(store, { backupId: 'night-9', sample: '10%' }, { env });
    assert.equal(fixed.sample?.bucket, 0);
  });
});
