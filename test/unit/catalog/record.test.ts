import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { DecryptStream, EncryptStream } from '../../../src/archive/crypto.ts';
import { listRecords, MAX_RECORD_BYTES, readRecord } from '../../../src/catalog/catalog.ts';
import { parseRecord, recordBinding, sealRecord, verifyRecord } from '../../../src/catalog/record.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';

const T = 'ks/t-0123456789abcdef0123456789abcdef';
const base = {
  format: 2,
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
  object: 'b-1/archive.tar.zst',
  size: 1000,
  sha256: 'a'.repeat(64),
  compression: 'zstd',
  encryption: null,
  rawBytes: 30,
  fileCount: 2,
  keyspaces: ['ks'],
  files: [
    { path: `${T}/nb-1-big-Data.db`, size: 10 },
    { path: `${T}/nb-1-big-SAI+aa+GroupComplete.db`, size: 20 },
  ],
};

const code = (e: Error & { code?: string }) => e.code === 'CBR_ERR_RECORD_INVALID';

describe('backup records: a schema for everything read from storage', () => {
  it('takes a well-formed record', () => {
    assert.equal(parseRecord(base, 'b-1').id, 'b-1');
  });

  it('refuses records that do not hold together', () => {
    const bad: [string, Record<string, unknown>][] = [
      ['object outside the backup', { object: 'other/archive.tar.zst' }],
      ['object with traversal', { object: '../../etc/passwd' }],
      ['object of another compression', { object: 'b-1/archive.tar.gz' }],
      ['sizes that do not sum to rawBytes', { rawBytes: 31 }],
      ['a file count that lies', { fileCount: 3 }],
      ['a hostile file path', { files: [{ path: `${T}/../../x`, size: 30 }], fileCount: 1 }],
      ['a cluster name with a newline', { clusterName: 'a\nauthenticator: AllowAllAuthenticator' }],
      ['a keyspace name with a slash', { keyspaces: ['../x'] }],
      ['an unknown field', { extra: 1 }],
      ['a negative size', { size: -1 }],
      ['another id than its key', { id: 'b-2', object: 'b-2/archive.tar.zst' }],
      ['a sha256 that is not one', { sha256: 'zz' }],
      [
        'an encrypted format-2 record that is not bound',
        { encryption: { algorithm: 'aes-256-gcm-chunked', keyFingerprint: '0'.repeat(16) }, object: 'b-1/archive.tar.zst.enc' },
      ],
    ];
    for (const [why, change] of bad) assert.throws(() => parseRecord({ ...base, ...change }, 'b-1'), code, why);
  });

  it('an encrypted record is authenticated with a key derived from the archive key', () => {
    const key = randomBytes(32);
    const enc = {
      ...base,
      encryption: { algorithm: 'aes-256-gcm-chunked', keyFingerprint: '0'.repeat(16), bound: true },
      object: 'b-1/archive.tar.zst.enc',
    } as Record<string, unknown>;
    const sealed = parseRecord(sealRecord(enc, key), 'b-1');
    verifyRecord(sealed, key);
    assert.throws(() => verifyRecord(sealed, randomBytes(32)), code, 'another key');
    assert.throws(() => verifyRecord({ ...sealed, clusterName: 'Other' } as typeof sealed, key), code, 'an altered field');
    const { mac: _m, ...stripped } = sealed;
    assert.throws(() => verifyRecord(stripped as typeof sealed, key), code, 'a stripped MAC');
  });

  it('an archive sealed for one backup does not open under another backup’s identity', async () => {
    const key = randomBytes(32);
    const a = recordBinding({ id: 'b-1', created: base.created, sourceInstance: 'alpha', hostId: 'alpha', compression: 'zstd' });
    const b = recordBinding({ id: 'b-2', created: base.created, sourceInstance: 'alpha', hostId: 'alpha', compression: 'zstd' });
    const data = randomBytes(10_000);
    const sealed = await buffer(Readable.from([data]).pipe(new EncryptStream(key, 4096, a)));
    assert.deepEqual(await buffer(Readable.from([sealed]).pipe(new DecryptStream(key, a))), data);
    await assert.rejects(buffer(Readable.from([sealed]).pipe(new DecryptStream(key, b))), { code: 'CBR_ERR_DECRYPT_FAILED' });
    await assert.rejects(buffer(Readable.from([sealed]).pipe(new DecryptStream(key))), { code: 'CBR_ERR_DECRYPT_FAILED' }, 'nor as an unbound (older) archive');
  });
});

describe('records read from storage are bounded', () => {
  it('a record object made endless ends in CBR_ERR_RECORD_INVALID once past the cap, not in an exhausted heap; listing skips it', async () => {
    const store = new MemoryStore();
    const good = { ...base, id: 'b-2', object: 'b-2/archive.tar.zst' };
    await store.put('b-2/backup.json', Readable.from([Buffer.from(JSON.stringify(good))]));
    await store.put('b-1/backup.json', Readable.from([Buffer.from('{}')]));
    let produced = 0;
    const chunk = Buffer.alloc(2 ** 20, 0x20);
    const get = store.get.bind(store);
    store.get = async (key, opts) => {
      if (key !== 'b-1/backup.json') return get(key, opts);
      return Readable.from(
        (function* endless() {
          for (;;) {
            produced += chunk.length;
            yield chunk;
          }
        })(),
      );
    };
    await assert.rejects(readRecord(store, 'b-1'), (e: Error & { code?: string }) => code(e) && /larger than 268435456 bytes/.test(e.message));
    assert.ok(produced <= MAX_RECORD_BYTES + 4 * chunk.length, `read ${produced} bytes of it`);
    assert.deepEqual(
      (await listRecords(store)).map((r) => r.id),
      ['b-2'],
    );
  });
});
