import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CbrError } from '../../core/errors.ts';
import { cbrHome } from '../../core/paths.ts';
import { retry } from '../../core/retry.ts';
import { KEY_RE, type ObjectInfo, type ObjectStore, type SwiftConfig } from '../port.ts';
import { type KeystoneTokenResponse, keystoneBody, objectStoreEndpoint } from './keystone.ts';

/**
 * OpenStack Swift on Node's fetch. pkgcloud is not used: its streaming upload is broken on Node 20 and 24
 * (a 1 MB upload sent 5 GiB to a real Swift proxy) and it pulls 257 packages.
 *
 * A put of unknown length is cut into segments (default 1 GiB; Swift's single-object limit is 5 GiB). Each
 * segment is spooled to a file (under `spoolDir`, by default `$CBR_HOME/spool`, never the OS temp dir: often tmpfs) while its MD5 is computed, uploaded from there (so a transient error
 * is retried for that segment only, with backoff), and its MD5 checked against the ETag Swift returns; the next
 * segment spools while the previous one uploads. A stream that fits one segment becomes a plain object; a longer
 * one becomes segments in `<container>_segments` plus a Static Large Object manifest. A put that fails removes
 * the segments it wrote; a create-only put whose manifest PUT meets 412 first reads the manifest there, and when it
 * lists this upload's own segments (its first attempt was committed, the answer lost) the put has succeeded. Delete removes an SLO's segments too.
 *
 * Over 300 lines on purpose: one closure holds the session (token and endpoint, renewed on 401) that every
 * request, segment upload and listing shares; Keystone's request and catalog lookup are in keystone.ts.
 */
interface Session {
  token: string;
  storageUrl: string;
}

type RequestBody = NonNullable<RequestInit['body']>;

const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/** A failure worth another attempt; its message ends up in the error thrown when the attempts are spent. */
class Transient extends Error {}

/** How long the driver keeps trying a store that fails every request, after its `attempts` (2 minutes). */
export const DEFAULT_OUTAGE_MS = 120_000;

const SPOOL_PREFIX = 'cbr-swift-';
const sweptSpools = new Map<string, Promise<void>>();

/**
 * A put spools its segments in `cbr-swift-<pid>-*` and removes them when it ends; a process killed with -9 cannot. The
 * first put of a process into a spool folder removes the spools of processes that no longer exist (a live one's are left alone).
 */
async function sweepDeadSpools(root: string): Promise<void> {
  const names = await readdir(root).catch(() => [] as string[]);
  for (const name of names) {
    const pid = Number(/^cbr-swift-(\d+)-/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || alive(pid)) continue;
    await rm(join(root, name), { recursive: true, force: true }).catch(() => {});
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function createSwiftStore(config: SwiftConfig): ObjectStore {
  const segmentSize = config.segmentSize ?? 1 << 30;
  const attempts = config.attempts ?? 5;
  const outageMs = config.outageMs ?? DEFAULT_OUTAGE_MS;
  const segContainer = `${config.container}_segments`;
  let session: Session | null = null;
  let containersReady = false;

  const authenticate = async (signal?: AbortSignal): Promise<Session> => {
    let creds: { username: string; password: string };
    try {
      creds = JSON.parse(await readFile(config.credentialsFile, 'utf8'));
    } catch (err) {
      throw new CbrError(
        'CBR_ERR_CONFIG',
        `cannot read Swift credentials file ${config.credentialsFile} (${(err as NodeJS.ErrnoException).code ?? 'invalid JSON'})`,
      );
    }
    const res =
      config.authVersion === 1
        ? await fetch(config.authUrl, { headers: { 'X-Auth-User': creds.username, 'X-Auth-Key': creds.password }, ...(signal ? { signal } : {}) })
        : await fetch(`${config.authUrl.replace(/\/$/, '')}/auth/tokens`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(keystoneBody(config, creds)),
            ...(signal ? { signal } : {}),
          });
    if (!res.ok) {
      await res.body?.cancel();
      throw new CbrError(res.status === 401 ? 'CBR_ERR_CONFIG' : 'CBR_ERR_STORAGE_FAILED', `Swift authentication at ${config.authUrl} answered ${res.status}`);
    }
    if (config.authVersion === 1) {
      await res.body?.cancel();
      const token = res.headers.get('x-auth-token');
      const storageUrl = res.headers.get('x-storage-url');
      if (!token || !storageUrl) throw new CbrError('CBR_ERR_STORAGE_FAILED', 'Swift v1 auth returned no token or storage URL');
      return { token, storageUrl };
    }
    const token = res.headers.get('x-subject-token');
    const body = (await res.json()) as KeystoneTokenResponse;
    if (!token) throw new CbrError('CBR_ERR_STORAGE_FAILED', 'Keystone returned no X-Subject-Token');
    return { token, storageUrl: objectStoreEndpoint(body, config) };
  };

  /**
   * Runs `once` again, after a backoff, when it meets a retryable status or a network error (both become
   * Transient): at least `attempts` times, and beyond them for as long as the store has been failing less than
   * `outageMs` (a proxy restarted, a rolling upgrade), every 5 s at most. A coded error ends it at once, and an
   * abort ends it as CBR_ERR_ABORTED.
   */
  /** `patient: false` (a clean-up after a failure) leaves out the outage window: its attempts only. */
  const withRetries = async <T>(what: string, signal: AbortSignal | undefined, once: () => Promise<T>, patient = true): Promise<T> => {
    let tried = 0;
    let failingSince = 0;
    try {
      return await retry(
        async () => {
          tried++;
          try {
            return await once();
          } catch (err) {
            failingSince ||= Date.now();
            if (err instanceof CbrError || err instanceof Transient) throw err;
            if ((err as Error).name === 'AbortError' || signal?.aborted) throw new CbrError('CBR_ERR_ABORTED', `${what} aborted`);
            throw new Transient(describeFetchError(err));
          }
        },
        {
          attempts: Number.POSITIVE_INFINITY,
          baseMs: 200,
          maxMs: 5000,
          retryable: (err) => err instanceof Transient && (tried < attempts || (patient && Date.now() - failingSince < outageMs)),
          ...(signal ? { signal } : {}),
        },
      );
    } catch (err) {
      if (err instanceof Transient) throw new CbrError('CBR_ERR_STORAGE_FAILED', `${what} failed after ${tried} attempts (${err.message})`);
      // retry() ends an aborted wait, or a call made after the abort, with the signal's own reason.
      if (!(err instanceof CbrError) && signal?.aborted) throw new CbrError('CBR_ERR_ABORTED', `${what} aborted`);
      throw err;
    }
  };

  /** One request with re-authentication on 401 (once, not counted as an attempt) and retries with backoff on 5xx and network errors. */
  const request = async (
    method: string,
    path: string,
    opts: { body?: () => RequestBody; headers?: Record<string, string>; signal?: AbortSignal; ok?: number[]; what: string; patient?: boolean },
  ): Promise<Response> => {
    let reauthed = false;
    return withRetries(
      opts.what,
      opts.signal,
      async () => {
        for (;;) {
          session ??= await authenticate(opts.signal);
          const res = await fetch(`${session.storageUrl}${path}`, {
            method,
            headers: { 'X-Auth-Token': session.token, ...opts.headers },
            ...(opts.body ? { body: opts.body(), duplex: 'half' } : {}),
            ...(opts.signal ? { signal: opts.signal } : {}),
          } as RequestInit);
          if (res.status === 401 && !reauthed) {
            await res.body?.cancel();
            session = null;
            reauthed = true;
            continue;
          }
          if (res.ok || opts.ok?.includes(res.status)) return res;
          await res.body?.cancel();
          if (res.status === 404) throw new CbrError('CBR_ERR_OBJECT_NOT_FOUND', `${opts.what}: not found`);
          if (!RETRYABLE_STATUS.has(res.status)) throw new CbrError('CBR_ERR_STORAGE_FAILED', `${opts.what}: Swift answered ${res.status}`);
          throw new Transient(`HTTP ${res.status}`);
        }
      },
      opts.patient ?? true,
    );
  };

  const ensureContainers = async (signal?: AbortSignal) => {
    if (containersReady) return;
    for (const c of [config.container, segContainer]) {
      const res = await request('PUT', `/${enc(c)}`, { ...(signal ? { signal } : {}), what: `create container ${c}` });
      await res.body?.cancel();
    }
    containersReady = true;
  };

  /**
   * PUT of a spooled file with node:http and pipeline, so the socket's backpressure bounds memory (fetch with a
   * stream body read a 256 MiB segment into memory ahead of the socket). Same retry and re-auth rules.
   */
  const uploadFile = async (path: string, size: number, md5: string, target: string, signal?: AbortSignal, ifAbsent = false) => {
    let reauthed = false;
    // Set once an attempt went out without an answer that says how it ended: a later 412 may be that attempt's own.
    let mayHaveLanded = false;
    await withRetries(`upload ${target}`, signal, async () => {
      for (;;) {
        session ??= await authenticate(signal);
        let answer: { status: number; etag: string | null | undefined };
        try {
          answer = await putStream(
            `${session.storageUrl}${target}`,
            path,
            {
              'X-Auth-Token': session.token,
              'Content-Length': String(size),
              ETag: md5,
              ...(ifAbsent ? { 'If-None-Match': '*' } : {}),
            },
            signal,
          );
        } catch (err) {
          mayHaveLanded = true;
          throw err;
        }
        const { status, etag } = answer;
        if (status === 412 && ifAbsent && mayHaveLanded) {
          // An earlier attempt's answer was lost: if the object there holds exactly these bytes, it is that attempt's.
          const there = await request('HEAD', target, { ok: [404], ...(signal ? { signal } : {}), what: `check ${target}` });
          await there.body?.cancel();
          if (there.status !== 404 && there.headers.get('etag')?.replace(/"/g, '') === md5) return;
        }
        if (status === 401 && !reauthed) {
          session = null;
          reauthed = true;
          continue;
        }
        if (status === 412 && ifAbsent) throw new CbrError('CBR_ERR_OBJECT_EXISTS', `${target} already exists`);
        if (status >= 200 && status < 300) {
          if (etag && etag !== md5) throw new CbrError('CBR_ERR_STORAGE_FAILED', `upload ${target}: ETag ${etag} differs from the MD5 sent (${md5})`);
          return;
        }
        if (!RETRYABLE_STATUS.has(status)) throw new CbrError('CBR_ERR_STORAGE_FAILED', `upload ${target}: Swift answered ${status}`);
        mayHaveLanded = true;
        throw new Transient(`HTTP ${status}`);
      }
    });
  };

  /** Whether the large object at `key` is the manifest of exactly these segments (this upload's, named by its id). */
  const manifestIsOurs = async (key: string, segments: { path: string }[], signal?: AbortSignal, patient = true): Promise<boolean> => {
    const res = await request('GET', `/${enc(config.container)}/${encPath(key)}?multipart-manifest=get`, {
      ok: [404],
      patient,
      ...(signal ? { signal } : {}),
      what: `manifest of ${key}`,
    });
    if (res.status === 404 || res.headers.get('x-static-large-object') !== 'True') {
      await res.body?.cancel();
      return false;
    }
    const there = (await res.json()) as { name?: string }[];
    return there.length === segments.length && there.every((s, i) => s.name === segments[i]!.path);
  };

  return {
    description: `swift:${config.authUrl}#${config.container}`,
    async put(key, body, opts = {}) {
      checkKey(key);
      const signal = opts.signal;
      await ensureContainers(signal);
      const spoolRoot = config.spoolDir ?? join(cbrHome(), 'spool');
      await mkdir(spoolRoot, { recursive: true, mode: 0o700 });
      if (!sweptSpools.has(spoolRoot)) sweptSpools.set(spoolRoot, sweepDeadSpools(spoolRoot));
      await sweptSpools.get(spoolRoot);
      const spool = await mkdtemp(join(spoolRoot, `${SPOOL_PREFIX}${process.pid}-`));
      const uploadId = randomUUID();
      const segments: { path: string; etag: string; size_bytes: number }[] = [];
      let inflight: Promise<void> | null = null;
      let manifestSent = false;
      let n = 0;
      let total = 0;
      // An abort also stops a body that has nothing to give (as local's pipeline does), so the put ends and cleans up.
      const onAbort = () => body.destroy(new CbrError('CBR_ERR_ABORTED', `upload of ${key} aborted`));
      signal?.addEventListener('abort', onAbort, { once: true });
      const startSegment = async () => {
        const path = join(spool, String(n));
        return { path, fh: await open(path, 'w'), hash: createHash('md5'), size: 0, index: n++ };
      };
      const upload = (seg: { path: string; size: number; md5: string; index: number }) => {
        const name = `${key}/${uploadId}/${String(seg.index).padStart(8, '0')}`;
        segments.push({ path: `/${segContainer}/${name}`, etag: seg.md5, size_bytes: seg.size });
        return uploadFile(seg.path, seg.size, seg.md5, `/${enc(segContainer)}/${encPath(name)}`, signal).then(() => rm(seg.path, { force: true }));
      };
      try {
        let cur = await startSegment();
        let full: { path: string; size: number; md5: string; index: number } | null = null;
        for await (const chunk of body as AsyncIterable<Buffer>) {
          let off = 0;
          while (off < chunk.length) {
            if (full) {
              // More data after a full segment: it really is a segmented upload. One segment uploads while the next spools.
              if (inflight) await inflight;
              inflight = upload(full);
              inflight.catch(() => {});
              full = null;
            }
            const n = Math.min(chunk.length - off, segmentSize - cur.size);
            const part = chunk.subarray(off, off + n);
            await cur.fh.write(part);
            cur.hash.update(part);
            cur.size += n;
            total += n;
            off += n;
            if (cur.size === segmentSize) {
              await cur.fh.close();
              full = { path: cur.path, size: cur.size, md5: cur.hash.digest('hex'), index: cur.index };
              cur = await startSegment();
            }
          }
        }
        await cur.fh.close();
        if (inflight) await inflight;
        if (segments.length === 0) {
          // It all fit one segment: a plain object.
          const only = full ?? { path: cur.path, size: cur.size, md5: cur.hash.digest('hex'), index: cur.index };
          await uploadFile(only.path, only.size, only.md5, `/${enc(config.container)}/${encPath(key)}`, signal, opts.ifAbsent === true);
        } else {
          if (full) await upload(full);
          if (cur.size > 0) await upload({ path: cur.path, size: cur.size, md5: cur.hash.digest('hex'), index: cur.index });
          const manifest = JSON.stringify(segments);
          manifestSent = true;
          const res = await request('PUT', `/${enc(config.container)}/${encPath(key)}?multipart-manifest=put`, {
            body: () => manifest,
            headers: { 'Content-Type': 'application/json', ...(opts.ifAbsent ? { 'If-None-Match': '*' } : {}) },
            ...(opts.ifAbsent ? { ok: [412] } : {}),
            ...(signal ? { signal } : {}),
            what: `manifest of ${key}`,
          });
          await res.body?.cancel();
          // A 412 may answer a retry whose first attempt was committed but its answer lost (a reset, a proxy's 504):
          // then the manifest there is this upload's own, and its segments must stay.
          if (res.status === 412 && !(await manifestIsOurs(key, segments, signal))) throw new CbrError('CBR_ERR_OBJECT_EXISTS', `${key} already exists`);
        }
        return { size: total };
      } catch (err) {
        if (inflight) await inflight.catch(() => {});
        // Once its manifest went out, it may have landed with its answer lost: its segments go only when the object
        // there is known not to be this upload's (no such object, or another writer's); when that cannot be told
        // (the store is down), they stay: orphan segments cost space, deleted ones under a manifest lose a file.
        let keep = false;
        if (manifestSent) keep = await manifestIsOurs(key, segments, undefined, false).catch(() => true);
        if (!keep) {
          // Leave no segment behind (best effort, attempts only, no outage window; `backup-delete` also finds them by prefix).
          for (const s of segments) {
            await request('DELETE', encPath(s.path), { ok: [404], patient: false, what: `remove segment ${s.path}` })
              .then((r) => r.body?.cancel())
              .catch(() => {});
          }
        }
        if (err instanceof CbrError) throw err;
        if ((err as Error).name === 'AbortError') throw new CbrError('CBR_ERR_ABORTED', `upload of ${key} aborted`);
        throw new CbrError('CBR_ERR_STORAGE_FAILED', `upload of ${key} failed: ${(err as Error).message}`);
      } finally {
        signal?.removeEventListener('abort', onAbort);
        await rm(spool, { recursive: true, force: true });
      }
    },
    async get(key, opts = {}) {
      checkKey(key);
      const path = `/${enc(config.container)}/${encPath(key)}`;
      const signal = opts.signal;
      const what = `download ${key}`;
      const first = await request('GET', path, { ...(signal ? { signal } : {}), what });
      if (!first.body) throw new CbrError('CBR_ERR_STORAGE_FAILED', `${what}: empty response`);
      const etag = first.headers.get('etag');
      const length = first.headers.get('content-length');
      const total = length === null ? null : Number(length);
      // A body cut mid-way (the proxy restarted, the connection reset) goes on from the byte it stopped at, with a
      // Range request under the same retry and outage rules, as long as the object is the same (its ETag): so an
      // outage shorter than the outage window costs a restore nothing, whatever it was downloading.
      async function* body(): AsyncGenerator<Buffer> {
        let res = first;
        let got = 0;
        let stalls = 0;
        for (;;) {
          const before = got;
          try {
            for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
              got += chunk.byteLength;
              yield Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
            }
            if (total === null || got === total) return;
            if (got > total) throw new CbrError('CBR_ERR_STORAGE_FAILED', `${what}: ${got} bytes, more than the ${total} announced`);
          } catch (err) {
            if (err instanceof CbrError) throw err;
            if (signal?.aborted || (err as Error).name === 'AbortError') throw new CbrError('CBR_ERR_ABORTED', `${what} aborted`);
            if (total === null) throw new CbrError('CBR_ERR_STORAGE_FAILED', `${what} cut after ${got} bytes (${describeFetchError(err)})`);
          }
          stalls = got > before ? 0 : stalls + 1;
          if (stalls >= attempts) throw new CbrError('CBR_ERR_STORAGE_FAILED', `${what} cut ${attempts} times at byte ${got} of ${total}`);
          res = await request('GET', path, { headers: { Range: `bytes=${got}-` }, ...(signal ? { signal } : {}), what });
          if (res.status !== 206 || res.headers.get('etag') !== etag || !res.body) {
            await res.body?.cancel();
            throw new CbrError('CBR_ERR_STORAGE_FAILED', `${what}: the object changed or the store refused to go on at byte ${got} (HTTP ${res.status})`);
          }
        }
      }
      return Readable.from(body(), { objectMode: false, highWaterMark: 1 << 20 });
    },
    async head(key, opts = {}) {
      checkKey(key);
      try {
        const res = await request('HEAD', `/${enc(config.container)}/${encPath(key)}`, {
          ...(opts.signal ? { signal: opts.signal } : {}),
          what: `head ${key}`,
        });
        return { key, size: Number(res.headers.get('content-length') ?? 0), modified: new Date(res.headers.get('last-modified') ?? 0).toISOString() };
      } catch (err) {
        if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') return null;
        throw err;
      }
    },
    async *list(prefix = '', opts = {}) {
      let marker = '';
      for (;;) {
        const q = new URLSearchParams({ format: 'json', prefix, limit: '10000', ...(marker ? { marker } : {}) });
        let res: Response;
        try {
          res = await request('GET', `/${enc(config.container)}?${q}`, { ...(opts.signal ? { signal: opts.signal } : {}), what: 'list' });
        } catch (err) {
          if (err instanceof CbrError && err.code === 'CBR_ERR_OBJECT_NOT_FOUND') return;
          throw err;
        }
        if (res.status === 204) return;
        const page = (await res.json()) as { name: string; bytes: number; last_modified: string }[];
        for (const o of page) yield { key: o.name, size: o.bytes, modified: new Date(`${o.last_modified}Z`).toISOString() } satisfies ObjectInfo;
        // Only an empty page ends the listing: a proxy whose container_listing_limit is lower than what was asked
        // answers short pages, and stopping at the first would hide objects (records a collection must see).
        if (page.length === 0) return;
        marker = page[page.length - 1]!.name;
      }
    },
    async delete(key, opts = {}) {
      checkKey(key);
      const signal = opts.signal ? { signal: opts.signal } : {};
      const path = `/${enc(config.container)}/${encPath(key)}`;
      const head = await request('HEAD', path, { ...signal, ok: [404], what: `head ${key}` });
      await head.body?.cancel();
      if (head.status === 404) return;
      const slo = head.headers.get('x-static-large-object') === 'True';
      const res = await request('DELETE', slo ? `${path}?multipart-manifest=delete` : path, { ...signal, ok: [404], what: `delete ${key}` });
      await res.body?.cancel();
    },
    async purge(prefix, opts = {}) {
      checkPrefix(prefix);
      let n = 0;
      const keys: string[] = [];
      for await (const o of this.list(prefix, opts)) keys.push(o.key);
      for (const k of keys) {
        await this.delete(k, opts);
        n++;
      }
      // Segments of uploads that died before their manifest (or their own clean-up) was written.
      const signal = opts.signal ? { signal: opts.signal } : {};
      const q = new URLSearchParams({ format: 'json', prefix, limit: '10000' });
      const listing = await request('GET', `/${enc(segContainer)}?${q}`, { ...signal, ok: [404], what: `list segments under ${prefix}` });
      const orphans = listing.status === 200 ? ((await listing.json()) as { name: string }[]) : [];
      if (listing.status !== 200) await listing.body?.cancel();
      for (const o of orphans) {
        const r = await request('DELETE', `/${enc(segContainer)}/${encPath(o.name)}`, { ...signal, ok: [404], what: `delete segment ${o.name}` });
        await r.body?.cancel();
        n++;
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

const enc = (s: string) => encodeURIComponent(s);
const encPath = (p: string) => p.split('/').map(enc).join('/');

function describeFetchError(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message;
}

/** PUT a file's bytes to a URL; resolves with the status and the ETag. */
function putStream(url: string, path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<{ status: number; etag: string | null }> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(u, { method: 'PUT', headers, ...(signal ? { signal } : {}) }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: (res.headers['etag'] as string | undefined)?.replace(/"/g, '') ?? null }));
      res.on('error', reject);
    });
    req.on('error', reject);
    pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), req).catch(reject);
  });
}
