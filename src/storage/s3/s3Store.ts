import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { CbrError } from '../../core/errors.ts';
import { KEY_RE, type ObjectInfo, type ObjectStore, type S3Config } from '../port.ts';

/**
 * S3 and S3-compatible stores (@aws-sdk/client-s3). A stream of unknown length goes up as a multipart upload
 * (`partSize` bytes per part, two parts in flight: memory stays at about 2 × partSize); a failed upload is
 * aborted, and `purge` also aborts multipart uploads that died with their process.
 */
export function createS3Store(config: S3Config): ObjectStore {
  const client = new S3Client({
    region: config.region,
    ...(config.endpoint ? { endpoint: config.endpoint } : {}),
    forcePathStyle: config.forcePathStyle ?? Boolean(config.endpoint),
    // Send and check checksums only where S3 requires them: S3-compatible stores (Swift's s3api among them)
    // refuse the newer default checksum headers.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 5,
    credentials: async () => {
      try {
        const c = JSON.parse(await readFile(config.credentialsFile, 'utf8')) as { accessKeyId: string; secretAccessKey: string };
        return { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey };
      } catch (err) {
        throw new CbrError(
          'CBR_ERR_CONFIG',
          `cannot read S3 credentials file ${config.credentialsFile} (${(err as NodeJS.ErrnoException).code ?? 'invalid JSON'})`,
        );
      }
    },
  });
  const Bucket = config.container;
  let bucketReady = false;
  const ensureBucket = async (signal?: AbortSignal) => {
    if (bucketReady) return;
    try {
      await client.send(new HeadBucketCommand({ Bucket }), signal ? { abortSignal: signal } : {});
    } catch (err) {
      if (status(err) !== 404) throw s3Error('head bucket', Bucket, err);
      await client.send(new CreateBucketCommand({ Bucket }), signal ? { abortSignal: signal } : {}).catch((e: unknown) => {
        if (!/BucketAlreadyOwnedByYou|BucketAlreadyExists/.test((e as Error).name)) throw s3Error('create bucket', Bucket, e);
      });
    }
    bucketReady = true;
  };
  const opts = (signal?: AbortSignal) => (signal ? { abortSignal: signal } : {});

  return {
    description: `s3:${config.endpoint ?? config.region}/${Bucket}`,
    async put(key, body, o = {}) {
      checkKey(key);
      await ensureBucket(o.signal);
      if (o.signal?.aborted) throw new CbrError('CBR_ERR_ABORTED', `upload of ${key} aborted`);
      let size = 0;
      const partSize = config.partSize ?? 16 << 20;
      // Kept while the body is smaller than one part (a single PUT): some S3 stores (Swift's s3api) answer a
      // conditional single PUT with NotImplemented, and then the put is done again with a HEAD first.
      const small: Buffer[] = [];
      body.on('data', (c: Buffer) => {
        size += c.length;
        if (o.ifAbsent && size <= partSize) small.push(c);
      });
      const upload = new Upload({
        client,
        params: { Bucket, Key: key, Body: body, ...(o.contentType ? { ContentType: o.contentType } : {}), ...(o.ifAbsent ? { IfNoneMatch: '*' } : {}) },
        partSize,
        queueSize: 2,
        leavePartsOnError: false,
      });
      // Ending the body, not upload.abort(): that returns at once and aborts the multipart upload later, in the
      // background; a failed body makes done() fail only once the multipart upload is aborted.
      const onAbort = () => body.destroy(new CbrError('CBR_ERR_ABORTED', `upload of ${key} aborted`));
      o.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        await upload.done();
        return { size };
      } catch (err) {
        if (o.signal?.aborted) throw new CbrError('CBR_ERR_ABORTED', `upload of ${key} aborted`);
        if (o.ifAbsent && status(err) === 412) throw new CbrError('CBR_ERR_OBJECT_EXISTS', `${key} already exists`);
        if (o.ifAbsent && status(err) === 501 && size <= partSize && body.readableEnded) {
          // No conditional PUT here: HEAD, then PUT. Not atomic against a writer racing in between; the store
          // offers nothing better (README, storage drivers).
          if (await this.head(key, o)) throw new CbrError('CBR_ERR_OBJECT_EXISTS', `${key} already exists`);
          await client.send(
            new PutObjectCommand({ Bucket, Key: key, Body: Buffer.concat(small), ...(o.contentType ? { ContentType: o.contentType } : {}) }),
            opts(o.signal),
          );
          return { size };
        }
        throw err instanceof CbrError ? err : s3Error('upload', key, err);
      } finally {
        o.signal?.removeEventListener('abort', onAbort);
      }
    },
    async get(key, o = {}) {
      checkKey(key);
      try {
        const res = await client.send(new GetObjectCommand({ Bucket, Key: key }), opts(o.signal));
        return res.Body as Readable;
      } catch (err) {
        throw s3Error('download', key, err);
      }
    },
    async head(key, o = {}) {
      checkKey(key);
      try {
        const res = await client.send(new HeadObjectCommand({ Bucket, Key: key }), opts(o.signal));
        return { key, size: Number(res.ContentLength ?? 0), modified: (res.LastModified ?? new Date(0)).toISOString() };
      } catch (err) {
        if (status(err) === 404) return null;
        throw s3Error('head', key, err);
      }
    },
    async *list(prefix = '', o = {}) {
      let token: string | undefined;
      do {
        let res: import('@aws-sdk/client-s3').ListObjectsV2CommandOutput;
        try {
          res = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }), opts(o.signal));
        } catch (err) {
          if (status(err) === 404) return;
          throw s3Error('list', prefix, err);
        }
        for (const c of res.Contents ?? [])
          yield { key: c.Key!, size: Number(c.Size ?? 0), modified: (c.LastModified ?? new Date(0)).toISOString() } satisfies ObjectInfo;
        token = res.IsTruncated ? res.NextContinuationToken : undefined;
      } while (token);
    },
    async delete(key, o = {}) {
      checkKey(key);
      try {
        await client.send(new DeleteObjectCommand({ Bucket, Key: key }), opts(o.signal));
      } catch (err) {
        if (status(err) !== 404) throw s3Error('delete', key, err);
      }
    },
    async purge(prefix, o = {}) {
      checkPrefix(prefix);
      let n = 0;
      const keys: string[] = [];
      for await (const obj of this.list(prefix, o)) keys.push(obj.key);
      for (const k of keys) {
        await this.delete(k, o);
        n++;
      }
      // Multipart uploads whose process died: their parts are invisible to listings but cost storage.
      try {
        const res = await client.send(new ListMultipartUploadsCommand({ Bucket, Prefix: prefix }), opts(o.signal));
        for (const u of res.Uploads ?? []) {
          await client.send(new AbortMultipartUploadCommand({ Bucket, Key: u.Key!, UploadId: u.UploadId! }), opts(o.signal));
          n++;
        }
      } catch (err) {
        if (status(err) !== 404) throw s3Error('abort multipart uploads', prefix, err);
      }
      return n;
    },
  };
}

function checkKey(key: string): void {
  if (!KEY_RE.test(key)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `invalid object key ${JSON.stringify(key)}`);
}

/** A purge takes a whole "directory" (`<backup id>/`): an empty or partial prefix would reach other backups' objects. */
function checkPrefix(prefix: string): void {
  if (!prefix.endsWith('/') || !KEY_RE.test(prefix.slice(0, -1))) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `invalid prefix ${JSON.stringify(prefix)}`);
}

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function s3Error(op: string, key: string, err: unknown): CbrError {
  if (err instanceof CbrError) return err;
  const e = err as Error;
  if (status(err) === 404 || e.name === 'NoSuchKey') return new CbrError('CBR_ERR_OBJECT_NOT_FOUND', `${op} ${key}: not found`);
  if (e.name === 'AbortError') return new CbrError('CBR_ERR_ABORTED', `${op} ${key} aborted`);
  return new CbrError('CBR_ERR_STORAGE_FAILED', `S3 ${op} ${key}: ${e.name}: ${e.message}`);
}
