import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  BLOBS_PREFIX,
  blobBinding,
  blobKey,
  blobName,
  blobPrefix,
  contentCheck,
  dedupKey,
  fileNameOf,
  hostSegment,
  isBlobKeyUnder,
  sameContent,
  tableIdOf,
} from '../../../src/catalog/blobs.ts';
import { filesDigest, parseRecord, sealRecord, verifyRecord } from '../../../src/catalog/record.ts';

const TID = '0123456789abcdef0123456789abcdef';
const T = `ks/t-${TID}`;
const file = { hostId: 'host-1', tableId: TID, fileName: 'nb-1-big-Data.db', size: 10, sha256: 'a'.repeat(64), compression: 'zstd' };

describe('blob names: one per file identity', () => {
  it('is 64 hex, stable, and changes with every part of the identity', () => {
    const name = blobName(file, null);
    assert.match(name, /^[0-9a-f]{64}$/);
    assert.equal(blobName({ ...file }, null), name);
    const variants = [
      { hostId: 'host-2' },
      { tableId: 'f'.repeat(32) },
      { fileName: 'nb-2-big-Data.db' },
      { size: 11 },
      { sha256: 'b'.repeat(64) },
      { compression: 'gzip' },
    ];
    const names = new Set(variants.map((v) => blobName({ ...file, ...v }, null)));
    assert.equal(names.size, variants.length);
    assert.ok(!names.has(name));
  });

  it('with encryption is an HMAC under a derived key: not the plain name, not computable without the key', () => {
    const key = randomBytes(32);
    const dk = dedupKey(key);
    assert.notDeepEqual(dk, key);
    assert.equal(dk.length, 32);
    const sealed = blobName(file, dk);
    assert.match(sealed, /^[0-9a-f]{64}$/);
    assert.notEqual(sealed, blobName(file, null));
    assert.notEqual(sealed, blobName(file, dedupKey(randomBytes(32))));
    assert.equal(sealed, blobName(file, dedupKey(key)));
  });

  it('keys fan out by the first two hex characters under the host prefix', () => {
    const name = blobName(file, null);
    assert.equal(blobKey('host-1', name), `${BLOBS_PREFIX}host-1/${name.slice(0, 2)}/${name}`);
    assert.ok(isBlobKeyUnder(blobKey('host-1', name), blobPrefix('host-1')));
    assert.ok(!isBlobKeyUnder(blobKey('host-2', name), blobPrefix('host-1')));
    assert.ok(!isBlobKeyUnder(`${blobPrefix('host-1')}zz/${name}`, blobPrefix('host-1')));
    assert.throws(() => blobKey('host-1', '../x'));
  });

  it('hashes host ids that cannot be a key segment, and never collides with one that can', () => {
    assert.equal(hostSegment('6f1c2a9e-0b7d-4c1e-9a55-2f0e1d3c4b5a'), '6f1c2a9e-0b7d-4c1e-9a55-2f0e1d3c4b5a');
    const odd = hostSegment('rack 1/node.a');
    assert.match(odd, /^h\.[0-9a-f]{32}$/);
    assert.notEqual(hostSegment('rack 1/node.b'), odd);
  });

  it('derives table id and file name from archive paths, index subdirectory included', () => {
    assert.equal(tableIdOf(`${T}/nb-1-big-Data.db`), TID);
    assert.equal(fileNameOf(`${T}/.idx/nb-1-big-Data.db`), '.idx/nb-1-big-Data.db');
    assert.throws(() => tableIdOf('ks/nb-1-big-Data.db'));
  });

  it('binds each blob to its own name', () => {
    assert.notDeepEqual(blobBinding('a'.repeat(64)), blobBinding('b'.repeat(64)));
    assert.equal(blobBinding('a'.repeat(64)).length, 32);
  });
});

/** A valid unencrypted incremental record of two files, the second shared. */
function incremental(over: Record<string, unknown> = {}) {
  const entry = (fileName: string, content: string, shared: boolean, stored: number) => {
    const sha256 = createHash('sha256').update(content).digest('hex');
    const size = content.length;
    const name = blobName({ hostId: 'alpha', tableId: TID, fileName, size, sha256, compression: 'zstd' }, null);
    return { path: `${T}/${fileName}`, size, sha256, blob: blobKey('alpha', name), stored, shared };
  };
  const files = [entry('nb-1-big-Data.db', 'new bytes', false, 20), entry('nb-1-big-Index.db', 'old', true, 15)];
  return {
    format: 3,
    strategy: 'incremental',
    parent: 'b-0',
    id: 'b-1',
    name: 'nightly',
    description: '',
    state: 'COMPLETED',
    datastore: 'cassandra',
    sourceInstance: 'alpha',
    hostId: 'alpha',
    clusterName: 'Alpha Cluster',
    cassandraVersion: '5.0.6',
    created: '2026-11-30T07:00:00.000Z',
    finished: '2026-11-30T07:01:00.000Z',
    object: 'cbr.blobs/alpha/',
    size: 35,
    sha256: filesDigest(files),
    compression: 'zstd',
    encryption: null,
    rawBytes: 12,
    fileCount: 2,
    keyspaces: ['ks'],
    files,
    newBytes: 9,
    sharedBytes: 3,
    newStoredBytes: 20,
    ...over,
  };
}

describe('format 3: the incremental record', () => {
  it('takes a well-formed one', () => {
    const r = parseRecord(incremental(), 'b-1');
    assert.equal(r.strategy, 'incremental');
    assert.equal(r.files[0]!.blob, incremental().files[0]!.blob);
  });

  it('refuses one that does not hold together', () => {
    const base = incremental();
    const [a, b] = base.files;
    const bad: [string, Record<string, unknown>][] = [
      ['format 2 with strategy incremental', { format: 2 }],
      ['format 3 without the strategy', { strategy: undefined }],
      ['another prefix as object', { object: 'cbr.blobs/beta/' }],
      ['a blob of another host', { files: [{ ...a, blob: a!.blob.replace('/alpha/', '/beta/') }, b] }],
      ['a blob outside the blob prefix', { files: [{ ...a, blob: 'b-0/archive.tar.zst' }, b] }],
      [
        'a blob naming another file',
        {
          files: [
            { ...a, blob: b!.blob },
            { ...b, blob: a!.blob },
          ],
        },
      ],
      ['a file without its sha256', { files: [{ ...a, sha256: undefined }, b] }],
      ['stored sizes not summing to size', { size: 36 }],
      ['newBytes that lie', { newBytes: 3, sharedBytes: 9 }],
      ['newStoredBytes that lie', { newStoredBytes: 35 }],
      ['a sha256 that is not the file list digest', { sha256: 'c'.repeat(64) }],
      ['no parent field', { parent: undefined }],
      ['a hostile parent', { parent: '../x' }],
    ];
    for (const [why, change] of bad) {
      assert.throws(
        () => parseRecord({ ...base, ...change }, 'b-1'),
        (e: Error & { code?: string }) => e.code === 'CBR_ERR_RECORD_INVALID',
        why,
      );
    }
  });

  it('refuses blob fields in a full record', () => {
    const full = {
      ...incremental(),
      format: 2,
      strategy: 'full',
      object: 'b-1/archive.tar.zst',
      files: incremental().files.map((f) => ({ ...f })),
      newBytes: undefined,
      sharedBytes: undefined,
      newStoredBytes: undefined,
    };
    assert.throws(() => parseRecord(full, 'b-1'), /only an incremental record lists blobs/);
  });

  it("encrypted, keeps file hashes keyed: no file lists a SHA-256, the blob's keyed name is what a file is checked against", () => {
    const key = randomBytes(32);
    const dk = dedupKey(key);
    const keyedEntries = incremental().files.map(({ sha256, ...f }) => {
      const name = blobName({ hostId: 'alpha', tableId: tableIdOf(f.path), fileName: fileNameOf(f.path), size: f.size, sha256, compression: 'zstd' }, dk);
      return { ...f, blob: blobKey('alpha', name), plain: sha256 };
    });
    const files = keyedEntries.map(({ plain: _, ...f }) => f);
    const enc = { algorithm: 'aes-256-gcm-chunked', keyFingerprint: '0'.repeat(16), bound: true };
    const r = parseRecord(incremental({ encryption: { ...enc, fileHashes: 'keyed' }, files, sha256: filesDigest(files) }), 'b-1');
    assert.ok(!JSON.stringify(r).includes(keyedEntries[0]!.plain), 'no plain SHA-256 in the record');
    for (const [i, f] of r.files.entries()) {
      const check = contentCheck(r, f, key);
      assert.equal(sameContent(check, keyedEntries[i]!.plain), true, f.path);
      assert.equal(sameContent(check, 'b'.repeat(64)), false, 'other bytes');
      assert.equal(sameContent(contentCheck(r, f, randomBytes(32)), keyedEntries[i]!.plain), false, 'another key');
    }
    assert.throws(() => contentCheck(r, r.files[0]!, null), { code: 'CBR_ERR_KEY_REQUIRED' });
    const plain = parseRecord(incremental(), 'b-1');
    assert.deepEqual(contentCheck(plain, plain.files[0]!, null), { expected: plain.files[0]!.sha256, keyed: null }, 'unencrypted: the SHA-256 as it is');

    const bad: [string, Record<string, unknown>][] = [
      ['a keyed record listing a plain sha256', { encryption: { ...enc, fileHashes: 'keyed' }, files: [{ ...files[0], sha256: 'a'.repeat(64) }, files[1]] }],
      ['an encrypted record of before lacking one', { encryption: enc, files }],
      ['another version of the field', { encryption: { ...enc, fileHashes: 'plain' }, files }],
    ];
    for (const [why, change] of bad) {
      const rec = { ...incremental(change), sha256: filesDigest(change['files'] as Record<string, unknown>[]) };
      assert.throws(
        () => parseRecord(rec, 'b-1'),
        (e: Error & { code?: string }) => e.code === 'CBR_ERR_RECORD_INVALID',
        why,
      );
    }
    const full = { ...incremental(), format: 2, strategy: 'full', object: 'b-1/archive.tar.zst.enc', files: [{ path: `${T}/a`, size: 12 }], fileCount: 1 };
    const fullEnc = { ...full, newBytes: undefined, sharedBytes: undefined, newStoredBytes: undefined, parent: undefined };
    parseRecord({ ...fullEnc, encryption: enc }, 'b-1');
    assert.throws(() => parseRecord({ ...fullEnc, encryption: { ...enc, fileHashes: 'keyed' } }, 'b-1'), /only an incremental record keeps its file hashes/);
  });

  it('is sealed by the MAC: changing a file blob or its shared flag breaks it', () => {
    const key = randomBytes(32);
    const r = incremental({ encryption: { algorithm: 'aes-256-gcm-chunked', keyFingerprint: '0'.repeat(16), bound: true } });
    const sealed = sealRecord(r as unknown as Record<string, unknown>, key) as unknown as ReturnType<typeof incremental> & { mac: string };
    verifyRecord(parseRecord(sealed, 'b-1'), key);
    const altered = { ...sealed, files: [{ ...sealed.files[0]!, shared: true }, sealed.files[1]!] };
    assert.throws(() => verifyRecord(altered as never, key), /does not match its MAC/);
  });
});
