import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ObjectStore } from '../../../src/storage/port.ts';
import { createSwiftStore } from '../../../src/storage/swift/swiftStore.ts';
import { scratchDir } from '../../helpers/env.ts';
import { lossyProxy, SWIFT_AUTH_URL, swiftList, swiftUp } from '../../helpers/swift.ts';

const MiB = 1 << 20;

/**
 * Create-only puts of large objects (a manifest over 1 MiB segments) whose answers are lost on the way back, on
 * the real Swift all-in-one behind a loopback proxy that forwards the request and cuts the answer.
 */
describe('Swift driver: a create-only large put whose answer is lost', () => {
  const container = `cbr-lost-${process.pid}`;
  let creds: string;
  let proxy: Awaited<ReturnType<typeof lossyProxy>>;
  let dropNextManifest = false;
  /** The answer to the next plain PUT of this key is cut (its object is written). */
  let dropNextPutOf: string | null = null;
  const open = (authUrl: string, spoolDir?: string, tries?: { attempts: number; outageMs: number }): ObjectStore =>
    createSwiftStore({
      driver: 'swift',
      authUrl,
      authVersion: 1,
      credentialsFile: creds,
      container,
      segmentSize: MiB,
      ...(spoolDir ? { spoolDir } : {}),
      ...(tries ?? {}),
    });
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const read = async (store: ObjectStore, key: string) => Buffer.concat(await (await store.get(key)).toArray());

  before(async () => {
    creds = swiftUp();
    proxy = await lossyProxy((method, url) => {
      if (method === 'PUT' && dropNextPutOf && url.endsWith(`/${dropNextPutOf}`)) {
        dropNextPutOf = null;
        return true;
      }
      if (method !== 'PUT' || !url.includes('multipart-manifest=put') || !dropNextManifest) return false;
      dropNextManifest = false;
      return true;
    });
  });
  after(async () => {
    const store = open(SWIFT_AUTH_URL);
    await store.purge(`t${process.pid}/`).catch(() => {});
    await proxy.close();
  });

  it('succeeds when the retry meets its own committed manifest, and keeps the segments it points to', async () => {
    const key = `t${process.pid}/lost/blob`;
    const body = randomBytes(3 * MiB + 12345);
    dropNextManifest = true;
    const put = await open(proxy.authUrl, scratchDir('swift-lost')).put(key, Readable.from([body]), { ifAbsent: true });
    assert.equal(dropNextManifest, false, 'the first manifest PUT was sent and its answer cut');
    assert.equal(put.size, body.length);
    const segments = await swiftList(`${container}_segments`, `${key}/`);
    assert.equal(segments.length, 4, 'the four segments the manifest points to are still there');
    assert.equal(sha(await read(open(SWIFT_AUTH_URL), key)), sha(body), 'the object reads back whole');
  });

  it('a put that fails after its manifest landed (answer lost, no attempt left) keeps the segments that manifest points to', async () => {
    const key = `t${process.pid}/landed/blob`;
    const body = randomBytes(2 * MiB + 99);
    dropNextManifest = true;
    // One attempt, no outage window: the lost answer fails the put at once.
    const store = open(proxy.authUrl, scratchDir('swift-landed'), { attempts: 1, outageMs: 0 });
    await assert.rejects(store.put(key, Readable.from([body]), { ifAbsent: true }), (err: Error & { code?: string }) => err.code === 'CBR_ERR_STORAGE_FAILED');
    // The object is there (a later backup's head finds it and reuses it): it must read back whole.
    assert.equal(sha(await read(open(SWIFT_AUTH_URL), key)), sha(body), 'the landed object reads back whole');
    assert.equal((await swiftList(`${container}_segments`, `${key}/`)).length, 3);
  });

  it('a plain create-only put whose answer is lost succeeds on its retry when the object there holds exactly its bytes', async () => {
    const key = `t${process.pid}/plain/blob`;
    const body = randomBytes(MiB - 5);
    dropNextPutOf = 'blob';
    await open(proxy.authUrl, scratchDir('swift-plain')).put(key, Readable.from([body]), { ifAbsent: true });
    assert.equal(dropNextPutOf, null, 'the first PUT was sent and its answer cut');
    assert.equal(sha(await read(open(SWIFT_AUTH_URL), key)), sha(body));
    // Another writer's create-only put of other bytes is still refused.
    await assert.rejects(
      open(SWIFT_AUTH_URL).put(key, Readable.from([randomBytes(10)]), { ifAbsent: true }),
      (err: Error & { code?: string }) => err.code === 'CBR_ERR_OBJECT_EXISTS',
    );
  });

  it('a download cut by an outage longer than its attempts goes on from where it stopped once the store is back', async () => {
    const key = `t${process.pid}/outage/blob`;
    const body = randomBytes(24 * MiB + 7);
    await open(SWIFT_AUTH_URL).put(key, Readable.from([body]));
    const stream = await open(proxy.authUrl).get(key);
    const it = stream[Symbol.asyncIterator]();
    const chunks: Buffer[] = [(await it.next()).value as Buffer];
    proxy.down();
    // Longer than the five attempts' backoff (0.2 + 0.4 + 0.8 + 1.6 s, jittered), shorter than the outage window.
    await sleep(6000);
    proxy.up();
    for (let r = await it.next(); !r.done; r = await it.next()) chunks.push(r.value as Buffer);
    assert.equal(sha(Buffer.concat(chunks)), sha(body), 'every byte, once, in order');
  });

  it("still refuses another writer's object: removes its own segments and fails with CBR_ERR_OBJECT_EXISTS", async () => {
    const key = `t${process.pid}/other/blob`;
    const first = randomBytes(2 * MiB + 1);
    await open(SWIFT_AUTH_URL).put(key, Readable.from([first]), { ifAbsent: true });
    const before = await swiftList(`${container}_segments`, `${key}/`);
    await assert.rejects(
      open(SWIFT_AUTH_URL).put(key, Readable.from([randomBytes(2 * MiB + 2)]), { ifAbsent: true }),
      (err: Error & { code?: string }) => err.code === 'CBR_ERR_OBJECT_EXISTS',
    );
    assert.deepEqual(await swiftList(`${container}_segments`, `${key}/`), before, "only the loser's segments were removed");
    assert.equal(sha(await read(open(SWIFT_AUTH_URL), key)), sha(first), 'the first object is untouched');
  });
});
