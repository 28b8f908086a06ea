import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { CbrError } from '../core/errors.ts';

/**
 * Chunked authenticated encryption (AES-256-GCM), so a stream of any size is sealed without buffering it:
 *
 *   header  = "CBRENC1\n" | salt (16) | nonce prefix (8) | chunk size (u32 BE)      = 36 bytes
 *   chunk i = AES-256-GCM(subkey, nonce = prefix | u32 BE i, aad = header | u32 BE i | final flag) | tag (16)
 *
 * The subkey is HKDF-SHA256(key, salt), so nonces never repeat across archives. Every chunk but the last holds
 * exactly `chunk size` bytes; the last one is flagged final in its AAD, so dropping, reordering or truncating
 * chunks, a flipped byte or a wrong key all fail authentication.
 */

const MAGIC = Buffer.from('CBRENC1\n');
const HEADER_LEN = MAGIC.length + 16 + 8 + 4;
const TAG_LEN = 16;
export const DEFAULT_CHUNK = 1 << 20;

export interface KeySource {
  /** A file holding 64 hex characters, base64 of 32 bytes, or 32 random (not text) bytes: see parseKey. */
  file?: string;
  /** The name of an environment variable holding the key as hex or base64 (never the key itself). */
  env?: string;
}

export async function loadKey(source: KeySource, env: NodeJS.ProcessEnv = process.env): Promise<Buffer> {
  let raw: Buffer;
  if (source.file) {
    try {
      raw = await readFile(source.file);
    } catch (err) {
      throw new CbrError('CBR_ERR_KEY_INVALID', `cannot read key file ${source.file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  } else if (source.env) {
    const v = env[source.env];
    if (!v) throw new CbrError('CBR_ERR_KEY_INVALID', `environment variable ${source.env} is empty`);
    raw = Buffer.from(v);
  } else {
    throw new CbrError('CBR_ERR_KEY_INVALID', 'no key source given');
  }
  return parseKey(raw, source.file ?? `$${source.env}`);
}

const HOW_TO_MAKE_A_KEY = 'make one with `openssl rand -hex 32`';

/**
 * A 256-bit key from the bytes of a key file or variable, accepted in exactly three forms:
 *   - 64 hex characters (surrounding whitespace and newlines allowed), as `openssl rand -hex 32` prints;
 *   - base64 of exactly 32 bytes, standard (+/) or URL-safe (-_) alphabet, with or without the `=` padding,
 *     in canonical form (surrounding whitespace allowed);
 *   - exactly 32 raw bytes that are not text. A passphrase always is text; 32 random bytes are valid UTF-8
 *     without control characters (other than tab, CR, LF) with odds of about 2e-11 (all printable ASCII: 2e-14),
 *     so a random raw key is refused only about once in 50 billion keys, and then with the advice to make another.
 * Anything else, a 32-character passphrase above all, is refused with CBR_ERR_KEY_INVALID. The message names where
 * the key came from and how to make one, never any of its bytes.
 */
export function parseKey(raw: Buffer, where: string): Buffer {
  const text = raw.toString('latin1').replace(/^[ \t\r\n\f\v]+|[ \t\r\n\f\v]+$/g, '');
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^(?:[A-Za-z0-9+/]{43}|[A-Za-z0-9_-]{43})=?$/.test(text)) {
    const b = Buffer.from(text, 'base64');
    // Canonical only: the 2 spare bits of the last character are zero (a typo there would decode "fine").
    const url = /[-_]/.test(text);
    if (b.length === 32 && b.toString(url ? 'base64url' : 'base64').replace(/=+$/, '') === text.replace(/=$/, '')) return b;
  }
  if (raw.length === 32 && !isText(raw)) return Buffer.from(raw);
  const why = isText(raw)
    ? 'its text is neither 64 hex characters nor base64 of 32 bytes (a passphrase is not a key)'
    : 'a raw key is exactly 32 random bytes (or give 64 hex characters, or base64 of 32 bytes)';
  throw new CbrError('CBR_ERR_KEY_INVALID', `${where} does not hold a 256-bit key: ${why}; ${HOW_TO_MAKE_A_KEY}`);
}

/** True when the bytes are UTF-8 text: valid UTF-8 with no control characters but tab, CR and LF. */
function isText(raw: Buffer): boolean {
  let s: string;
  try {
    s = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    return false;
  }
  return !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/.test(s);
}

/** A public fingerprint of a key, kept in backup records so a wrong key is named before any byte is unpacked. */
export function keyFingerprint(key: Buffer): string {
  return createHash('sha256').update('cbr key fingerprint v1\0').update(key).digest('hex').slice(0, 16);
}

/**
 * The archive's subkey. With a `binding` (the digest of the backup's identity: id, creation time, source), the
 * key is bound to that one backup: an archive moved under another backup's record, sealed with the same key,
 * does not decrypt. Archives of records without `encryption.bound` were sealed without it.
 */
function subkey(key: Buffer, salt: Buffer, binding?: Buffer): Buffer {
  const info = binding ? Buffer.concat([Buffer.from('cbr archive v2\0'), binding]) : Buffer.from('cbr archive v1');
  return Buffer.from(hkdfSync('sha256', key, salt, info, 32));
}

/** The key a record's MAC is made with: derived from the archive key, never the archive key itself. */
export function recordMacKey(key: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'cbr record mac v1', 32));
}

function chunkAad(header: Buffer, index: number, final: boolean): Buffer {
  const b = Buffer.alloc(header.length + 5);
  header.copy(b);
  b.writeUInt32BE(index, header.length);
  b[header.length + 4] = final ? 1 : 0;
  return b;
}

function nonce(prefix: Buffer, index: number): Buffer {
  const n = Buffer.alloc(12);
  prefix.copy(n);
  n.writeUInt32BE(index, 8);
  return n;
}

export class EncryptStream extends Transform {
  readonly #key: Buffer;
  readonly #header: Buffer;
  readonly #prefix: Buffer;
  readonly #chunk: number;
  #pending: Buffer[] = [];
  #pendingLen = 0;
  #index = 0;

  constructor(key: Buffer, chunkSize = DEFAULT_CHUNK, binding?: Buffer) {
    super({ highWaterMark: 1 << 20 });
    const salt = randomBytes(16);
    this.#prefix = randomBytes(8);
    this.#chunk = chunkSize;
    this.#header = Buffer.alloc(HEADER_LEN);
    MAGIC.copy(this.#header);
    salt.copy(this.#header, MAGIC.length);
    this.#prefix.copy(this.#header, MAGIC.length + 16);
    this.#header.writeUInt32BE(chunkSize, MAGIC.length + 24);
    this.#key = subkey(key, salt, binding);
    this.push(this.#header);
  }

  override _transform(data: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#pending.push(data);
    this.#pendingLen += data.length;
    // Keep at least one byte back: the last chunk must be sealed as final, and only flush knows which it is.
    while (this.#pendingLen > this.#chunk) {
      const all = Buffer.concat(this.#pending, this.#pendingLen);
      this.push(this.#seal(all.subarray(0, this.#chunk), false));
      const rest = all.subarray(this.#chunk);
      this.#pending = [rest];
      this.#pendingLen = rest.length;
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.push(this.#seal(Buffer.concat(this.#pending, this.#pendingLen), true));
    cb();
  }

  #seal(plain: Buffer, final: boolean): Buffer {
    if (this.#index >= 0xffffffff) throw new CbrError('CBR_ERR_INTERNAL', 'archive too large for one encryption stream');
    const c = createCipheriv('aes-256-gcm', this.#key, nonce(this.#prefix, this.#index));
    c.setAAD(chunkAad(this.#header, this.#index, final));
    const out = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
    this.#index++;
    return out;
  }
}

/**
 * The decrypting side of the format above, synchronous: `update` takes sealed bytes as they come and returns the
 * plaintext of every chunk it could open; `final` opens the last chunk. DecryptStream wraps it as a stream; the
 * restore's fetch workers call it directly.
 */
export class Decryptor {
  readonly #masterKey: Buffer;
  #key: Buffer | null = null;
  #header: Buffer | null = null;
  #prefix: Buffer | null = null;
  #sealedChunk = 0;
  #parts: Buffer[] = [];
  #partsLen = 0;
  #index = 0;

  readonly #binding: Buffer | undefined;

  constructor(key: Buffer, binding?: Buffer) {
    this.#masterKey = key;
    this.#binding = binding;
  }

  update(data: Buffer): Buffer[] {
    const out: Buffer[] = [];
    this.#parts.push(data);
    this.#partsLen += data.length;
    if (!this.#header) {
      if (this.#partsLen < HEADER_LEN) return out;
      const all = this.#take();
      this.#readHeader(all.subarray(0, HEADER_LEN));
      this.#keep(all.subarray(HEADER_LEN));
    }
    // A full chunk can only be opened once more bytes follow it: otherwise it may be the final one.
    if (this.#partsLen > this.#sealedChunk) {
      let all = this.#take();
      while (all.length > this.#sealedChunk) {
        out.push(this.#open(all.subarray(0, this.#sealedChunk), false));
        all = all.subarray(this.#sealedChunk);
      }
      this.#keep(all);
    }
    return out;
  }

  final(): Buffer {
    if (!this.#header) throw new CbrError('CBR_ERR_DECRYPT_FAILED', 'the archive is too short to be encrypted by cbr');
    return this.#open(this.#take(), true);
  }

  #take(): Buffer {
    const all = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#partsLen);
    this.#parts = [];
    this.#partsLen = 0;
    return all;
  }

  #keep(rest: Buffer): void {
    if (rest.length) {
      this.#parts.push(rest);
      this.#partsLen += rest.length;
    }
  }

  #readHeader(h: Buffer): void {
    if (!h.subarray(0, MAGIC.length).equals(MAGIC)) throw new CbrError('CBR_ERR_DECRYPT_FAILED', 'not a cbr-encrypted archive');
    const chunk = h.readUInt32BE(MAGIC.length + 24);
    if (chunk < 1024 || chunk > 64 << 20) throw new CbrError('CBR_ERR_DECRYPT_FAILED', 'encrypted archive header is corrupt');
    this.#header = Buffer.from(h);
    this.#prefix = Buffer.from(h.subarray(MAGIC.length + 16, MAGIC.length + 24));
    this.#key = subkey(this.#masterKey, h.subarray(MAGIC.length, MAGIC.length + 16), this.#binding);
    this.#sealedChunk = chunk + TAG_LEN;
  }

  #open(sealed: Buffer, final: boolean): Buffer {
    if (sealed.length < TAG_LEN) throw new CbrError('CBR_ERR_DECRYPT_FAILED', 'encrypted archive is truncated');
    const d = createDecipheriv('aes-256-gcm', this.#key!, nonce(this.#prefix!, this.#index));
    d.setAAD(chunkAad(this.#header!, this.#index, final));
    d.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
    const body = d.update(sealed.subarray(0, sealed.length - TAG_LEN));
    try {
      d.final();
    } catch {
      throw new CbrError('CBR_ERR_DECRYPT_FAILED', `chunk ${this.#index} failed authentication: wrong key, or the archive was altered or truncated`);
    }
    this.#index++;
    return body;
  }
}

export class DecryptStream extends Transform {
  readonly #d: Decryptor;

  constructor(key: Buffer, binding?: Buffer) {
    super({ highWaterMark: 1 << 20 });
    this.#d = new Decryptor(key, binding);
  }

  override _transform(data: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      for (const plain of this.#d.update(data)) this.push(plain);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.push(this.#d.final());
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
}
