import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { recordMacKey } from '../archive/crypto.ts';
import { entryProblem } from '../archive/entries.ts';
import { archiveName, COMPRESSIONS } from '../archive/format.ts';
import { CbrError } from '../core/errors.ts';
import { ID_RE } from '../core/ids.ts';
import { blobKey, blobName, blobPrefix, fileNameOf, isBlobKeyUnder, tableIdOf } from './blobs.ts';

/**
 * The schema of a backup record, and its authentication. Records live in storage, where anyone with write
 * access can change them: every record is validated before it is used (shapes, names by pattern, the object key
 * `<id>/archive...`, file sizes summing to rawBytes), and an encrypted backup's record carries an HMAC made with
 * a key derived from the archive key, so it cannot be altered without that key.
 *
 * Format 3 is an incremental backup's record: no archive, every file names the blob holding its bytes
 * (`object` is the host's blob prefix), and `sha256` is the digest of the file list, which the MAC covers too.
 * Each file lists its SHA-256, except in an encrypted record with `encryption.fileHashes: 'keyed'` (written since
 * then): there the blob's keyed name stands for it (blobs.ts contentCheck), so the record tells the store nothing
 * of the content. Encrypted records written before it list plain SHA-256s and are read as they are.
 */

const HEX64 = /^[0-9a-f]{64}$/;
const ONE_LINE = /^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]*$/;
const TEXT = /^[^\u0000-\u0008\u000b-\u001f\u007f]*$/;
const int = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

const settingsSchema = z
  .object({
    numTokens: z.number().int().min(1).max(16384),
    tokens: z.array(z.string().regex(/^-?[0-9]{1,40}$/)).max(16384),
    partitioner: z.string().regex(/^[A-Za-z_$][A-Za-z0-9_$.]{0,200}$/),
    uuidSstableIdentifiers: z.boolean(),
    sstableFormat: z.string().regex(/^[a-z]{2,16}$/),
    storageCompatibilityMode: z.enum(['CASSANDRA_4', 'UPGRADING', 'NONE']),
  })
  .strict();

const recordSchema = z
  .object({
    format: z.union([z.literal(1), z.literal(2), z.literal(3)]),
    strategy: z.enum(['full', 'incremental']).optional(),
    parent: z.string().regex(ID_RE).nullable().optional(),
    id: z.string().regex(ID_RE),
    name: z.string().min(1).max(128).regex(ONE_LINE),
    description: z.string().max(1024).regex(TEXT),
    state: z.literal('COMPLETED'),
    datastore: z.literal('cassandra'),
    // Names that come from an operator's profile: any one printable line (they are shown, never used as paths).
    sourceInstance: z.string().min(1).max(128).regex(ONE_LINE),
    hostId: z.string().min(1).max(128).regex(ONE_LINE),
    clusterName: z.string().min(1).max(256).regex(ONE_LINE),
    cassandraVersion: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[0-9A-Za-z][0-9A-Za-z.+_-]*$/),
    created: z.iso.datetime(),
    finished: z.iso.datetime(),
    object: z.string().max(200),
    size: int,
    sha256: z.string().regex(HEX64),
    compression: z.enum(COMPRESSIONS as [string, ...string[]]),
    encryption: z
      .object({
        algorithm: z.literal('aes-256-gcm-chunked'),
        keyFingerprint: z.string().regex(/^[0-9a-f]{16}$/),
        bound: z.literal(true).optional(),
        fileHashes: z.literal('keyed').optional(),
      })
      .strict()
      .nullable(),
    rawBytes: int,
    fileCount: int,
    keyspaces: z.array(z.string().regex(/^[A-Za-z0-9_]{1,48}$/)).max(100_000),
    files: z
      .array(
        z
          .object({
            path: z.string().max(1024),
            size: int,
            sha256: z.string().regex(HEX64).optional(),
            blob: z.string().max(300).optional(),
            stored: int.optional(),
            shared: z.boolean().optional(),
          })
          .strict(),
      )
      .max(50_000_000),
    newBytes: int.optional(),
    sharedBytes: int.optional(),
    newStoredBytes: int.optional(),
    settings: settingsSchema.optional(),
    tables: z
      .array(
        z
          .object({
            keyspace: z.string().regex(/^[A-Za-z0-9_]{1,48}$/),
            table: z.string().regex(/^[A-Za-z0-9_]{1,48}$/),
            rows: int.nullable(),
            note: z.string().max(300).regex(ONE_LINE).optional(),
            defaultTtl: int.optional(),
          })
          .strict(),
      )
      .max(100_000)
      .optional(),
    mac: z.string().regex(HEX64).optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    const problem = (message: string) => ctx.addIssue({ code: 'custom', message });
    const incremental = r.strategy === 'incremental';
    if (incremental !== (r.format === 3)) return problem('an incremental record is format 3, and only it');
    const object = incremental ? blobPrefix(r.hostId) : `${r.id}/${archiveName(r.compression as (typeof COMPRESSIONS)[number], r.encryption !== null)}`;
    if (r.object !== object) problem(`object is ${JSON.stringify(r.object.slice(0, 80))}, not ${object}`);
    if (incremental) incrementalProblem(r, problem);
    else if (r.files.some((f) => f.sha256 !== undefined || f.blob !== undefined || f.stored !== undefined || f.shared !== undefined)) {
      problem('only an incremental record lists blobs');
    } else if (r.newBytes !== undefined || r.sharedBytes !== undefined || r.newStoredBytes !== undefined) {
      problem('only an incremental record counts new and shared bytes');
    }
    if (r.files.length !== r.fileCount) problem(`fileCount ${r.fileCount} but ${r.files.length} files listed`);
    let sum = 0;
    const seen = new Set<string>();
    for (const f of r.files) {
      const bad = entryProblem(f.path);
      if (bad) return problem(`file ${JSON.stringify(f.path.slice(0, 120))}: ${bad}`);
      if (seen.has(f.path)) return problem(`file ${f.path} listed twice`);
      seen.add(f.path);
      sum += f.size;
    }
    if (sum !== r.rawBytes) problem(`file sizes sum to ${sum}, rawBytes says ${r.rawBytes}`);
    if (r.settings && r.settings.tokens.length > 0 && r.settings.tokens.length !== r.settings.numTokens)
      problem('settings: token count differs from numTokens');
    if (r.format === 2 && r.encryption && !r.encryption.bound) problem('an encrypted format-2 record must be bound');
    if (r.encryption?.fileHashes && !incremental) problem('only an incremental record keeps its file hashes in blob names');
  });

export type RecordShape = z.infer<typeof recordSchema>;

/**
 * What holds an incremental record together: every file has its blob, under the host's prefix (and, unencrypted,
 * named by exactly that file's identity, so a record cannot point a file at another file's bytes), its SHA-256
 * unless the record keeps file hashes keyed (then none has one), the sizes and the new/shared split add up, and
 * `sha256` is the digest of the file list.
 */
function incrementalProblem(r: RecordShape, problem: (message: string) => void): void {
  let stored = 0;
  let newBytes = 0;
  let newStored = 0;
  const blobs = new Set<string>();
  const keyed = r.encryption?.fileHashes === 'keyed';
  for (const f of r.files) {
    if ((f.sha256 === undefined) !== keyed || f.blob === undefined || f.stored === undefined || f.shared === undefined) {
      problem(
        `file ${JSON.stringify(f.path.slice(0, 120))} ${keyed ? 'lists a plain sha256 in a record keeping them keyed' : 'lacks its sha256'}, or lacks its blob, stored or shared`,
      );
      return;
    }
    if (!isBlobKeyUnder(f.blob, r.object)) {
      problem(`file ${JSON.stringify(f.path.slice(0, 120))}: blob is not under ${r.object}`);
      return;
    }
    if (entryProblem(f.path)) return; // reported by the common checks
    if (r.encryption === null && f.sha256 !== undefined) {
      const identity = {
        hostId: r.hostId,
        tableId: tableIdOf(f.path),
        fileName: fileNameOf(f.path),
        size: f.size,
        sha256: f.sha256,
        compression: r.compression,
      };
      if (f.blob !== blobKey(r.hostId, blobName(identity, null))) {
        problem(`file ${f.path}: blob does not name this file's content`);
        return;
      }
    }
    if (blobs.has(f.blob)) {
      problem(`blob ${f.blob} listed twice`);
      return;
    }
    blobs.add(f.blob);
    stored += f.stored;
    if (!f.shared) {
      newBytes += f.size;
      newStored += f.stored;
    }
  }
  if (stored !== r.size) problem(`blob sizes sum to ${stored}, size says ${r.size}`);
  if (r.newBytes !== newBytes) problem(`new files hold ${newBytes} bytes, newBytes says ${r.newBytes}`);
  if (r.sharedBytes !== r.rawBytes - newBytes) problem(`shared files hold ${r.rawBytes - newBytes} bytes, sharedBytes says ${r.sharedBytes}`);
  if (r.newStoredBytes !== newStored) problem(`new blobs hold ${newStored} bytes, newStoredBytes says ${r.newStoredBytes}`);
  if (r.sha256 !== filesDigest(r.files)) problem('sha256 is not the digest of the file list');
  if (r.parent === undefined) problem('an incremental record names its parent (or null)');
  if (r.encryption && !r.encryption.bound) problem('an encrypted incremental record must be bound');
}

/** An incremental record's `sha256`: the digest of its file list (canonical JSON). */
export function filesDigest(files: readonly Record<string, unknown>[]): string {
  return createHash('sha256').update(canonical(files)).digest('hex');
}

const identitySchema = z.object({
  name: z.string().min(1).max(128).regex(ONE_LINE),
  description: z.string().max(1024).regex(TEXT),
  sourceInstance: z.string().min(1).max(128).regex(ONE_LINE),
  hostId: z.string().min(1).max(128).regex(ONE_LINE),
});

/**
 * The fields of a record that come from the request and the profile, checked before a backup starts: a record
 * the schema would refuse is never written after hours of streaming.
 */
export function checkRecordIdentity(fields: z.infer<typeof identitySchema>): void {
  const r = identitySchema.safeParse(fields);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `${issue.path.join('.')} cannot go into a backup record: ${issue.message}`);
  }
}

/** A record from storage, validated; anything else is CBR_ERR_RECORD_INVALID naming the first problem. */
export function parseRecord(value: unknown, id: string): RecordShape {
  const r = recordSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new CbrError('CBR_ERR_RECORD_INVALID', `the record of backup ${id} is not valid: ${issue.path.join('.') || 'record'}: ${issue.message}`);
  }
  if (r.data.id !== id) throw new CbrError('CBR_ERR_RECORD_INVALID', `the record stored under ${id} names backup ${r.data.id}`);
  return r.data;
}

/** JSON with object keys sorted at every level: the bytes a MAC is computed over. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function mac(record: Record<string, unknown>, key: Buffer): string {
  const { mac: _drop, ...body } = record;
  return createHmac('sha256', recordMacKey(key)).update(canonical(body)).digest('hex');
}

/** The record with its MAC, for an encrypted backup (the key is the archive key). */
export function sealRecord<T extends Record<string, unknown>>(record: T, key: Buffer): T & { mac: string } {
  return { ...record, mac: mac(record, key) };
}

/**
 * Checks the MAC of an encrypted backup's record with the archive key. Records written before MACs (format 1)
 * carry none and are accepted as they are: their archives were sealed without a binding, so a record made to
 * look old around a newer archive fails to decrypt.
 */
export function verifyRecord(record: Pick<RecordShape, 'id' | 'format' | 'mac'> & { encryption: { bound?: true } | null }, key: Buffer): void {
  if (!record.encryption) return;
  if (record.mac === undefined) {
    if (record.format === 1 && !record.encryption.bound) return;
    throw new CbrError('CBR_ERR_RECORD_INVALID', `the record of backup ${record.id} lacks its MAC`);
  }
  const want = Buffer.from(mac(record as unknown as Record<string, unknown>, key), 'hex');
  if (!timingSafeEqual(want, Buffer.from(record.mac, 'hex'))) {
    throw new CbrError('CBR_ERR_RECORD_INVALID', `the record of backup ${record.id} does not match its MAC: altered, or sealed with another key`);
  }
}

/**
 * What an encrypted archive is bound to: the digest of its backup's identity, known when streaming starts and
 * kept in the record (id, creation time, source instance and host, compression).
 */
export function recordBinding(r: { id: string; created: string; sourceInstance: string; hostId: string; compression: string }): Buffer {
  return createHash('sha256')
    .update(canonical(['cbr archive binding v1', r.id, r.created, r.sourceInstance, r.hostId, r.compression]))
    .digest();
}
