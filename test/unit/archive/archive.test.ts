import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import tar from 'tar-stream';
import { DecryptStream, EncryptStream, parseKey } from '../../../src/archive/crypto.ts';
import type { Compression } from '../../../src/archive/format.ts';
import { packArchive } from '../../../src/archive/pack.ts';
import { unpackArchive } from '../../../src/archive/unpack.ts';
import type { SnapshotFile } from '../../../src/cassandra/layout.ts';
import { scratch } from '../../helpers/tmp.ts';

type Entry = Partial<tar.Header> & { name: string };

const TABLE = 'ks1/users-0123456789abcdef0123456789abcdef';

async function fixture(): Promise<SnapshotFile[]> {
  const dir = scratch('cbr-pack-');
  const specs: [string, Buffer][] = [
    [`${TABLE}/nb-1-big-Data.db`, randomBytes(300_000)],
    [`${TABLE}/nb-1-big-TOC.txt`, Buffer.from('Data.db\nTOC.txt\n')],
    [`${TABLE}/manifest.json`, Buffer.from('{"files":["nb-1-big-Data.db"]}')],
    [`${TABLE}/.users_city/nb-1-big-Data.db`, Buffer.alloc(70_000, 7)],
    [`ks1/${'t'.repeat(48)}-0123456789abcdef0123456789abcdef/${'n'.repeat(120)}-Data.db`, Buffer.from('long name')],
  ];
  return specs.map(([archivePath, data], i) => {
    const path = join(dir, String(i));
    writeFileSync(path, data);
    return { path, archivePath, size: data.length, keyspace: 'ks1', table: 'users' };
  });
}

async function stored(files: SnapshotFile[], compression: Compression, key?: Buffer) {
  const { stream, result } = packArchive(files, { compression, key });
  const bytes = await buffer(stream);
  return { bytes, result: await result };
}

describe('archive pack and unpack', () => {
  for (const compression of ['zstd', 'gzip', 'none'] as const) {
    for (const encrypted of [false, true]) {
      it(`round-trips every file byte for byte (${compression}${encrypted ? ', encrypted' : ''})`, async () => {
        const files = await fixture();
        const key = encrypted ? randomBytes(32) : undefined;
        const { bytes, result } = await stored(files, compression, key);
        assert.equal(result.size, bytes.length);
        assert.equal(result.sha256, createHash('sha256').update(bytes).digest('hex'));
        assert.equal(result.files, files.length);
        const target = scratch('cbr-unpack-');
        const expected = new Map(files.map((f) => [f.archivePath, f.size]));
        const out = await unpackArchive(Readable.from([bytes]), target, { compression, key, sha256: result.sha256, expected });
        assert.equal(out.files, files.length);
        for (const f of files) assert.deepEqual(await readFile(join(target, f.archivePath)), readFileSync(f.path), f.archivePath);
      });
    }
  }

  it('detects a flipped byte, a truncated object and a wrong key', async () => {
    const files = await fixture();
    const key = randomBytes(32);
    const { bytes, result } = await stored(files, 'zstd', key);
    const opts = { compression: 'zstd' as const, key, sha256: result.sha256 };
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(flipped.length / 2)]! ^= 1;
    const codes: string[] = [];
    for (const [label, data, k] of [
      ['flipped', flipped, key],
      ['truncated', bytes.subarray(0, bytes.length - 100), key],
      ['wrong key', bytes, randomBytes(32)],
    ] as const) {
      const target = scratch('cbr-bad-');
      await assert.rejects(unpackArchive(Readable.from([data]), target, { ...opts, key: k }), (err: { code: string }) => {
        codes.push(`${label}:${err.code}`);
        return true;
      });
    }
    assert.deepEqual(codes, ['flipped:CBR_ERR_DECRYPT_FAILED', 'truncated:CBR_ERR_DECRYPT_FAILED', 'wrong key:CBR_ERR_DECRYPT_FAILED']);
  });

  it('detects a flipped byte in an unencrypted archive by its checksum', async () => {
    const files = await fixture();
    const { bytes, result } = await stored(files, 'none');
    const flipped = Buffer.from(bytes);
    flipped[1024 + 10]! ^= 1; // inside the first file's content
    const target = scratch('cbr-bad-');
    await assert.rejects(unpackArchive(Readable.from([flipped]), target, { compression: 'none', sha256: result.sha256 }), {
      code: 'CBR_ERR_ARCHIVE_CHECKSUM_MISMATCH',
    });
  });

  async function craft(entries: Entry[]): Promise<Buffer> {
    const pack = tar.pack();
    for (const h of entries) {
      if (h.type === 'file' || !h.type) pack.entry(h, 'x');
      else pack.entry(h);
    }
    pack.finalize();
    return buffer(pack);
  }

  for (const [label, header] of [
    ['a ../ entry', { name: `${TABLE}/../../../etc/evil`, size: 1 }],
    ['an absolute path', { name: '/etc/evil', size: 1 }],
    ['a symlink', { name: `${TABLE}/link`, type: 'symlink', linkname: '/etc/passwd' }],
    ['a hard link', { name: `${TABLE}/hard`, type: 'link', linkname: '/etc/passwd' }],
    ['a FIFO', { name: `${TABLE}/fifo`, type: 'fifo' }],
    ['a character device', { name: `${TABLE}/dev`, type: 'character-device' }],
    ['a path outside the layout', { name: 'evil.sh', size: 1 }],
  ] as [string, Entry][]) {
    it(`refuses ${label} and writes nothing outside the target`, async () => {
      const bytes = await craft([{ name: `${TABLE}/ok-Data.db`, size: 1 }, header]);
      const parent = scratch('cbr-hostile-');
      const target = join(parent, 'target');
      mkdirSync(target);
      await assert.rejects(
        unpackArchive(Readable.from([bytes]), target, {
          compression: 'none',
          sha256: createHash('sha256').update(bytes).digest('hex'),
        }),
        { code: 'CBR_ERR_ARCHIVE_HOSTILE_ENTRY' },
      );
      assert.deepEqual(await readdir(parent), ['target']);
    });
  }
});

describe('chunked encryption', () => {
  it('round-trips streams at and around chunk boundaries', async () => {
    const key = randomBytes(32);
    for (const size of [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 5]) {
      const data = randomBytes(size);
      const enc = await buffer(Readable.from([data]).pipe(new EncryptStream(key, 4096)));
      const dec = await buffer(Readable.from([enc]).pipe(new DecryptStream(key)));
      assert.deepEqual(dec, data, `size ${size}`);
    }
  });

  it('rejects an archive cut at a chunk boundary (the final flag is missing)', async () => {
    const key = randomBytes(32);
    const enc = await buffer(Readable.from([randomBytes(3 * 4096 + 5)]).pipe(new EncryptStream(key, 4096)));
    const cut = enc.subarray(0, 36 + 2 * (4096 + 16));
    await assert.rejects(buffer(Readable.from([cut]).pipe(new DecryptStream(key))), { code: 'CBR_ERR_DECRYPT_FAILED' });
  });

  it('parses keys as raw, hex or base64 and refuses anything else without echoing it', () => {
    const k = randomBytes(32);
    assert.deepEqual(parseKey(k, 'f'), k);
    assert.deepEqual(parseKey(Buffer.from(`${k.toString('hex')}\n`), 'f'), k);
    assert.deepEqual(parseKey(Buffer.from(k.toString('base64')), 'f'), k);
    assert.throws(
      () => parseKey(Buffer.from('hunter2-not-a-key'), 'keyfile'),
      (err: Error & { code: string }) => {
        assert.equal(err.code, 'CBR_ERR_KEY_INVALID');
        assert.ok(!err.message.includes('hunter2'));
        return true;
      },
    );
  });

  it('takes exactly hex, base64 (standard or URL-safe, padded or not) or 32 non-text bytes as a key; refuses passphrases', () => {
    const k = randomBytes(32);
    k[0] = 0xff; // never in UTF-8: certainly not text
    const slashy = Buffer.alloc(32, 0xfb); // base64 "+/v7...", base64url "-_v7..."
    const accepted: [string, Buffer, Buffer][] = [
      ['hex', Buffer.from(k.toString('hex')), k],
      ['HEX with CRLF and spaces', Buffer.from(`  ${k.toString('hex').toUpperCase()}\r\n`), k],
      ['base64 padded + newline', Buffer.from(`${slashy.toString('base64')}\n`), slashy],
      ['base64 unpadded', Buffer.from(slashy.toString('base64').replace(/=$/, '')), slashy],
      ['base64url unpadded', Buffer.from(slashy.toString('base64url')), slashy],
      ['base64url padded, surrounded by whitespace', Buffer.from(`\t${slashy.toString('base64url')}=\n`), slashy],
      ['32 random bytes', k, k],
    ];
    assert.equal(slashy.toString('base64').slice(0, 2), '+/');

    const passphrase = 'correct horse battery staple 123';
    assert.equal(passphrase.length, 32);
    const b64 = slashy.toString('base64');
    const refused: [string, Buffer][] = [
      ['a 32-character passphrase', Buffer.from(passphrase)],
      ['a 32-character passphrase and a newline', Buffer.from(`${passphrase}\n`)],
      ['a 31-character passphrase and a newline (32 bytes)', Buffer.from(`${passphrase.slice(1)}\n`)],
      ['a 32-byte UTF-8 passphrase', Buffer.from('pässwörd über alles, 2024 ok!')],
      ['32 spaces', Buffer.alloc(32, 0x20)],
      ['31 random bytes', k.subarray(0, 31)],
      ['33 random bytes', Buffer.concat([k, Buffer.from([0xfe])])],
      ['63 hex characters', Buffer.from(k.toString('hex').slice(1))],
      ['65 hex characters', Buffer.from(`${k.toString('hex')}0`)],
      ['base64 of 31 bytes', Buffer.from(k.subarray(0, 31).toString('base64'))],
      ['base64 of 33 bytes', Buffer.from(Buffer.concat([k, k]).subarray(0, 33).toString('base64'))],
      ['base64 mixing both alphabets', Buffer.from(`-/${b64.slice(2)}`)],
      ['non-canonical base64 (spare bits set)', Buffer.from(`${b64.slice(0, 42)}9=`)],
      ['empty', Buffer.alloc(0)],
    ];
    assert.equal(Buffer.from('pässwörd über alles, 2024 ok!').length, 32);
    for (const [label, raw] of refused) {
      assert.throws(
        () => parseKey(raw, '/etc/cbr/backup.key'),
        (err: Error & { code: string }) => {
          assert.equal(err.code, 'CBR_ERR_KEY_INVALID', label);
          assert.match(err.message, /openssl rand -hex 32/, label);
          assert.match(err.message, /\/etc\/cbr\/backup\.key/, label);
          for (const secret of [passphrase, 'horse', 'pässwörd', k.toString('hex').slice(1, 20), b64.slice(2, 20)]) {
            assert.ok(!err.message.includes(secret), `${label}: the message does not echo the key material`);
          }
          return true;
        },
        label,
      );
    }
    for (const [label, raw, want] of accepted) assert.deepEqual(parseKey(raw, 'f'), want, label);
  });
});

describe('parallel block compression', () => {
  it('writes multi-block streams that the zstd and gzip command-line tools decompress', async () => {
    const { execFileSync } = await import('node:child_process');
    const { compressor } = await import('../../../src/archive/format.ts');
    // 11 MiB: three 4 MiB blocks, mixed compressible and random content.
    const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(5 << 20, 'cassandra '), randomBytes(3 << 20)]);
    for (const [compression, tool] of [
      ['zstd', ['zstd', '-dc']],
      ['gzip', ['gzip', '-dc']],
    ] as const) {
      const packed = await buffer(Readable.from([data]).pipe(compressor(compression)));
      assert.ok(packed.length < data.length, `${compression} compresses`);
      const out = execFileSync(tool[0], [tool[1]], { input: packed, maxBuffer: 64 << 20 });
      assert.ok(out.equals(data), `${tool[0]} restores the bytes`);
    }
  });
});

describe('tar writer', () => {
  it('writes archives GNU tar extracts byte for byte, long (pax) names included', async () => {
    const { execFileSync } = await import('node:child_process');
    const files = await fixture();
    const { bytes } = await stored(files, 'none');
    const out = scratch('cbr-gnutar-');
    execFileSync('tar', ['-xf', '-', '-C', out], { input: bytes });
    for (const f of files) assert.deepEqual(await readFile(join(out, f.archivePath)), readFileSync(f.path), f.archivePath);
    const listed = execFileSync('tar', ['-tf', '-'], { input: bytes }).toString().trim().split('\n');
    assert.deepEqual(listed.sort(), files.map((f) => f.archivePath).sort());
  });

  it('fails with a coded error when a file changes size while archived', async () => {
    const files = await fixture();
    writeFileSync(files[1]!.path, 'grown since it was listed');
    const { stream, result } = packArchive(files, { compression: 'none' });
    stream.resume();
    await assert.rejects(result, { code: 'CBR_ERR_SNAPSHOT_FAILED' });
  });
});

const compose = (first: Readable, ...rest: NodeJS.ReadWriteStream[]) => {
  let s = first as NodeJS.ReadableStream;
  for (const t of rest) {
    s.on('error', (e) => t.emit('error', e));
    s = s.pipe(t);
  }
  return s as Readable;
};

describe('zstd frame splitter', () => {
  it('decompresses many frames however the stream is chunked (Node drops frames that share a chunk)', async () => {
    const { zstdCompressSync } = await import('node:zlib');
    const { decompressor } = await import('../../../src/archive/format.ts');
    const blocks = [randomBytes(70_000), Buffer.alloc(300_000, 'x'), Buffer.alloc(0), randomBytes(5), Buffer.alloc(200_000, 'yz')];
    const frames = blocks.map((b) => zstdCompressSync(b));
    const joined = Buffer.concat(frames);
    for (const cut of [1, 7, 4096, 65_536, joined.length]) {
      const pieces: Buffer[] = [];
      for (let i = 0; i < joined.length; i += cut) pieces.push(joined.subarray(i, i + cut));
      const out = await buffer(compose(Readable.from(pieces), ...decompressor('zstd')));
      assert.ok(out.equals(Buffer.concat(blocks)), `chunks of ${cut}`);
    }
  });

  it('reports a stream cut inside a frame', async () => {
    const { zstdCompressSync } = await import('node:zlib');
    const { decompressor } = await import('../../../src/archive/format.ts');
    const frame = zstdCompressSync(randomBytes(50_000));
    await assert.rejects(buffer(compose(Readable.from([frame.subarray(0, frame.length - 10)]), ...decompressor('zstd'))));
  });
});
