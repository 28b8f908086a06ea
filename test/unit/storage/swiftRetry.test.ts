import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ObjectStore } from '../../../src/storage/port.ts';
import { createSwiftStore } from '../../../src/storage/swift/swiftStore.ts';

/**
 * The Swift driver's retry rules against a scripted server (v1 auth): which answers are tried again and how many
 * times, which end the request at once, and that a 401 re-authenticates once without spending an attempt.
 */
describe('Swift driver retries', () => {
  let script: number[] = [];
  const seen: string[] = [];
  let server: Server;
  let dir: string;
  let store: ObjectStore;

  before(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/auth/v1.0') {
          seen.push('auth');
          res.writeHead(200, { 'X-Auth-Token': 't', 'X-Storage-Url': `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/AUTH_t` }).end();
          return;
        }
        const status = script.shift() ?? 200;
        seen.push(String(status || 'reset'));
        if (status === 0) req.socket.destroy();
        else res.writeHead(status, { 'Content-Length': '2' }).end('ok');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    dir = await mkdtemp(join(tmpdir(), 'cbr-swift-retry-'));
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ username: 'test:tester', password: 'testing' }), { mode: 0o600 });
    const port = (server.address() as { port: number }).port;
    store = createSwiftStore({
      driver: 'swift',
      authUrl: `http://127.0.0.1:${port}/auth/v1.0`,
      authVersion: 1,
      credentialsFile: join(dir, 'c.json'),
      container: 'c',
      attempts: 3,
      outageMs: 0,
    });
  });
  after(async () => {
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const get = async (answers: number[]) => {
    script = [...answers];
    seen.length = 0;
    try {
      await store.get('b1/backup.json').then((s) => s.resume());
      return { ok: true as const, seen: [...seen] };
    } catch (err) {
      return { ok: false as const, err: err as Error & { code?: string }, seen: [...seen] };
    }
  };

  it('tries a 5xx and a reset connection again, and succeeds when the store recovers', async () => {
    const r = await get([503, 0, 200]);
    assert.ok(r.ok);
    assert.deepEqual(
      r.seen.filter((s) => s !== 'auth'),
      ['503', 'reset', '200'],
    );
  });

  it('gives up after the configured attempts with the last failure in the message', async () => {
    const r = await get([500, 502, 503, 200]);
    assert.ok(!r.ok);
    assert.equal(r.err.code, 'CBR_ERR_STORAGE_FAILED');
    assert.match(r.err.message, /failed after 3 attempts \(HTTP 503\)/);
    assert.deepEqual(
      r.seen.filter((s) => s !== 'auth'),
      ['500', '502', '503'],
    );
    script = [];
  });

  it('does not try a 404 or a 403 again', async () => {
    const missing = await get([404]);
    assert.equal(!missing.ok && missing.err.code, 'CBR_ERR_OBJECT_NOT_FOUND');
    assert.deepEqual(missing.seen, ['404']);
    const refused = await get([403]);
    assert.equal(!refused.ok && refused.err.code, 'CBR_ERR_STORAGE_FAILED');
    assert.deepEqual(refused.seen, ['403']);
  });

  it('re-authenticates once on 401 without spending an attempt, and stops at a second 401', async () => {
    const renewed = await get([401, 503, 503, 200]);
    assert.ok(renewed.ok);
    assert.deepEqual(renewed.seen, ['401', 'auth', '503', '503', '200']);
    const refused = await get([401, 401]);
    assert.ok(!refused.ok);
    assert.match(refused.err.message, /Swift answered 401/);
    assert.deepEqual(refused.seen, ['401', 'auth', '401']);
  });

  it('stops waiting when the signal fires', async () => {
    script = [503, 503, 503];
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const started = performance.now();
    await assert.rejects(store.put('b1/x', Readable.from([Buffer.from('x')]), { signal: ac.signal }));
    assert.ok(performance.now() - started < 1000);
    script = [];
  });

  it('after its attempts, goes on trying a store that keeps failing while it has failed for less than the outage window', async () => {
    const port = (server.address() as { port: number }).port;
    const patient = createSwiftStore({
      driver: 'swift',
      authUrl: `http://127.0.0.1:${port}/auth/v1.0`,
      authVersion: 1,
      credentialsFile: join(dir, 'c.json'),
      container: 'c',
      attempts: 2,
      outageMs: 600_000,
    });
    script = [503, 0, 503, 0, 200];
    seen.length = 0;
    await (await patient.get('b1/backup.json')).resume();
    assert.deepEqual(
      seen.filter((s) => s !== 'auth'),
      ['503', 'reset', '503', 'reset', '200'],
    );
  });

  it('spools under $CBR_HOME/spool when no spool dir is given, never in the OS temp dir, and removes it after the put', async () => {
    const home = join(dir, 'home');
    const saved = process.env['CBR_HOME'];
    process.env['CBR_HOME'] = home;
    try {
      const port = (server.address() as { port: number }).port;
      const store = createSwiftStore({
        driver: 'swift',
        authUrl: `http://127.0.0.1:${port}/auth/v1.0`,
        authVersion: 1,
        credentialsFile: join(dir, 'c.json'),
        container: 'c',
      });
      const mine = async (root: string) => (await readdir(root).catch(() => [] as string[])).filter((n) => n.startsWith(`cbr-swift-${process.pid}-`));
      let release = () => {};
      const held = new Promise<void>((r) => {
        release = r;
      });
      const body = Readable.from(
        (async function* () {
          yield Buffer.from('first half');
          await held;
          yield Buffer.from('second half');
        })(),
      );
      script = [];
      const put = store.put('b1/spooled', body);
      let during: string[] = [];
      for (let i = 0; i < 200 && during.length === 0; i++) {
        await sleep(10);
        during = await mine(join(home, 'spool'));
      }
      const inTmp = await mine(tmpdir());
      release();
      await put;
      assert.equal(during.length, 1, 'the put spools in $CBR_HOME/spool');
      assert.deepEqual(inTmp, [], 'nothing of it in the OS temp dir');
      assert.deepEqual(await mine(join(home, 'spool')), [], 'the spool is gone after the put');
    } finally {
      if (saved === undefined) delete process.env['CBR_HOME'];
      else process.env['CBR_HOME'] = saved;
    }
  });

  it("a put removes the spools of dead processes (a kill -9 mid-upload leaves one) and leaves a live process's", async () => {
    const spoolDir = join(dir, 'spool');
    const dead = join(spoolDir, 'cbr-swift-2147483646-abc');
    const live = join(spoolDir, `cbr-swift-${process.ppid}-def`);
    const other = join(spoolDir, 'cbr-swift-retry-x');
    for (const d of [dead, live, other]) mkdirSync(d, { recursive: true });
    writeFileSync(join(dead, '0'), 'segment');
    const port = (server.address() as { port: number }).port;
    const spooling = createSwiftStore({
      driver: 'swift',
      authUrl: `http://127.0.0.1:${port}/auth/v1.0`,
      authVersion: 1,
      credentialsFile: join(dir, 'c.json'),
      container: 'c',
      spoolDir,
    });
    script = [];
    await spooling.put('b1/y', Readable.from([Buffer.from('y')]));
    assert.equal(existsSync(dead), false, "a dead process's spool is removed");
    assert.equal(existsSync(live), true, "a live process's spool stays");
    assert.equal(existsSync(other), true, 'a folder not named by a pid stays');
  });
});
