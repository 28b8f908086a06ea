/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import amqplib from 'amqplib';
import type { Browser, Page } from 'playwright-core';
import { parseKey } from '../../../src/archive/crypto.ts';
import { type Command, parseCommand } from '../../../src/bus/schemas/commands.ts';
import { createLogger } from '../../../src/core/log.ts';
import { diagram } from '../../../src/diagram/graph.ts';
import { toSvg } from '../../../src/diagram/svg.ts';
import { restoreMachine } from '../../../src/machines/restore.machine.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { startUi, type UiServer } from '../../../src/ui/server.ts';
import { ARTIFACTS, launchBrowser } from '../../helpers/browser.ts';
import { BUS_URL, removeBusTopology, spawnAgent, stopGracefully, waitForAgentQueue } from '../../helpers/bus.ts';
import { cqlFor, seedData } from '../../helpers/data.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';

const prefix = `ui${process.pid}.`;
const HOST = 'ui-src';
/** A host with no agent: commands the ui publishes to it wait in a queue of the test's, to be inspected. */
const PROBE = 'ui-probe';
const ATTACKER = 'attacker.example';
/** What the page had, plus frame-ancestors. */
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";
const BACKUP_STEPS = ['verifyingNode', 'checkingFreeSpace', 'clearingStaleSnapshot', 'snapshotting', 'streaming', 'recording', 'clearingSnapshot'];
const quiet = createLogger({ level: 'error', sink: () => {} });

/** Records, inside the page, every change of the highlighted (active) states of the diagram. */
async function recordHighlights(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { __seen: string[] };
    w.__seen = [];
    const rec = () => {
      const active = [...document.querySelectorAll<SVGGElement>('#wf-diagram .state.active')].map((g) => g.dataset['state']).join('|');
      if (active && w.__seen[w.__seen.length - 1] !== active) w.__seen.push(active);
    };
    new MutationObserver(rec).observe(document.getElementById('detail')!, { subtree: true, attributes: true, childList: true });
  });
}

/** Waits until the page shows the workflow it just started as done; returns its id. */
async function waitForDetailDone(page: Page): Promise<string> {
  await page.waitForSelector('#start-result[data-id]');
  const id = (await page.getAttribute('#start-result', 'data-id'))!;
  await page.waitForFunction(
    (wid) => document.querySelector('#detail h2 code')?.textContent === wid && document.querySelector('#wf-status')?.getAttribute('data-status') === 'done',
    id,
    { timeout: 120_000 },
  );
  return id;
}

async function pageToken(page: Page): Promise<string> {
  return (await page.getAttribute('meta[name="cbr-token"]', 'content'))!;
}

/** As the page posts: same-origin (fetch from Node sends no Origin of its own). */
function postCommand(url: string, token: string, body: unknown): Promise<Response> {
  return fetch(new URL('/api/commands', url), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-CBR-Token': token, Origin: new URL(url).origin },
    body: JSON.stringify(body),
  });
}

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A request with any Host header (fetch cannot set one); an event stream is closed once its headers are in. */
function raw(port: number, o: { host: string; path?: string; method?: string; headers?: Record<string, string>; body?: string }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method: o.method ?? 'GET', path: o.path ?? '/', headers: { ...o.headers, host: o.host }, agent: false },
      (res) => {
        const head = { status: res.statusCode!, headers: res.headers };
        if (String(res.headers['content-type']).startsWith('text/event-stream')) {
          res.destroy();
          resolve({ ...head, body: '' });
          return;
        }
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ ...head, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(o.body);
  });
}

/** The page token, read as the page would get it (by its own address). */
async function tokenOf(port: number): Promise<string> {
  const { body } = await raw(port, { host: `127.0.0.1:${port}` });
  return /<meta name="cbr-token" content="([^"]+)">/.exec(body)![1]!;
}

async function errorCode(res: Response): Promise<string> {
  return ((await res.json()) as { error: { code: string } }).error.code;
}

describe('cbr ui in headless Chromium, against a real agent, node and bus', () => {
  let browser: Browser;
  let agent: ChildProcess;
  let ui: UiServer;
  let key: Buffer;
  let probe: { conn: amqplib.ChannelModel; ch: amqplib.Channel; queue: string };

  /** Every command the ui published to PROBE since the last call. */
  async function published(): Promise<Command[]> {
    const out: Command[] = [];
    for (let m = await probe.ch.get(probe.queue, { noAck: true }); m; m = await probe.ch.get(probe.queue, { noAck: true }))
      out.push(JSON.parse(m.content.toString('utf8')) as Command);
    return out;
  }

  before(async () => {
    const source = await sharedNode('source');
    const cql = await cqlFor(source);
    await seedData(cql, `ui${process.pid}`, { rows: 200, blobKiB: 4 });
    await cql.close();
    const dir = scratchDir('ui');
    const keyFile = join(dir, 'signing.key');
    writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    const env = { ...testEnv, CBR_STORAGE_ROOT: join(dir, 'storage'), CBR_STATE_DB: join(dir, 'state.db') };
    agent = spawnAgent({ host: HOST, profilePath: profilePath('source', testEnv), env, prefix, stepDelayMs: 400, args: ['--signing-key-file', keyFile] });
    await waitForAgentQueue(prefix, HOST);
    key = parseKey(readFileSync(keyFile), keyFile);
    ui = await startUi({ url: BUS_URL, prefix, port: 0, signingKey: key, log: quiet });
    // The agent declared the commands exchange; a queue of ours takes what is sent to PROBE.
    const conn = await amqplib.connect(BUS_URL);
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    await ch.bindQueue(queue, `${prefix}cbr.commands`, PROBE);
    probe = { conn, ch, queue };
    // The name resolves to this machine, as a DNS-rebinding attacker's name would after the rebind.
    browser = await launchBrowser([`--host-resolver-rules=MAP ${ATTACKER} 127.0.0.1`]);
  });

  after(async () => {
    await browser?.close();
    await ui?.close();
    await probe?.conn.close().catch(() => {});
    if (agent) await stopGracefully(agent);
    await removeBusTopology(prefix, [HOST]);
  });

  it('a backup started from the page moves the highlighted state through every step to completed, progress to 100%', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1500 } });
    try {
      await page.goto(ui.url);
      await page.waitForSelector('#bus[data-connected="true"]');
      assert.equal(await page.isVisible('#start-backup'), true, 'forms shown: the server has the signing key');
      await recordHighlights(page);
      await page.fill('#start-backup input[name="host"]', HOST);
      await page.fill('#start-backup input[name="name"]', 'from-the-page');
      await page.click('#start-backup button');
      const id = await waitForDetailDone(page);
      assert.equal(await page.textContent('#wf-state'), 'completed');
      assert.equal(await page.textContent('#detail h2 code'), id);
      const seen = await page.evaluate(() => (window as unknown as { __seen: string[] }).__seen);
      let at = -1;
      for (const step of BACKUP_STEPS) {
        const i = seen.indexOf(step);
        assert.ok(i > at, `highlight reached ${step} after the previous step (seen: ${seen.join(' → ')})`);
        at = i;
      }
      assert.equal(await page.getAttribute('#wf-progress .bar', 'data-pct'), '100');
      assert.ok(await page.isVisible('#wf-diagram [data-state="completed"].done-here'), 'the final state is drawn as reached');
      const history = await page.$$eval('#wf-history tbody tr', (trs) => trs.map((tr) => (tr as HTMLElement).dataset['state']));
      assert.deepEqual(history, [...BACKUP_STEPS, 'completed']);
      assert.equal(await page.isVisible(`li.wf[data-id="${id}"][data-state="completed"]`), true, 'the host list shows it');
      await page.screenshot({ path: join(ARTIFACTS, 'ui-backup-completed.png') });
    } finally {
      await page.close();
    }
  });

  it('a failing restore shows the failed state in red with its error code', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1500 } });
    try {
      await page.goto(ui.url);
      await page.waitForSelector('#bus[data-connected="true"]');
      await page.fill('#start-restore input[name="host"]', HOST);
      await page.fill('#start-restore input[name="backupId"]', `missing-${randomUUID()}`);
      await page.fill('#start-restore input[name="instanceName"]', 'uiRestoreTarget');
      await page.click('#start-restore button');
      await waitForDetailDone(page);
      assert.equal(await page.textContent('#wf-state'), 'failed');
      assert.equal(await page.getAttribute('#wf-error', 'data-code'), 'CBR_ERR_BACKUP_NOT_FOUND');
      assert.match((await page.textContent('#wf-error')) ?? '', /^CBR_ERR_BACKUP_NOT_FOUND: .*\(in checking\)$/);
      assert.ok(await page.isVisible('#wf-diagram [data-state="checking"].failed-here'), 'the state it failed in is red');
      assert.ok(await page.isVisible('#wf-diagram [data-state="failed"].failed-here'), 'and so is the final failed state');
      const fill = await page.$eval('#wf-diagram [data-state="checking"] > rect', (r) => getComputedStyle(r).fill);
      assert.equal(fill, 'rgb(253, 226, 225)', 'drawn red');
      await page.screenshot({ path: join(ARTIFACTS, 'ui-restore-failed.png') });
    } finally {
      await page.close();
    }
  });

  it('refuses bad forms with the agent’s reason; without the signing key the view is read-only', async () => {
    const page = await browser.newPage();
    const readOnly = await startUi({ url: BUS_URL, prefix, port: 0, signingKey: null, log: quiet });
    try {
      await page.goto(ui.url);
      const token = await pageToken(page);
      const bad = await postCommand(ui.url, token, { type: 'restore.create', host: HOST, payload: { backupId: 'x', instanceName: '9bad' } });
      assert.equal(bad.status, 400);
      assert.equal(await errorCode(bad), 'CBR_ERR_COMMAND_INVALID');
      const noToken = await postCommand(ui.url, 'not-the-token', { type: 'backup.create', host: HOST, payload: { name: 'x' } });
      assert.equal(noToken.status, 403, 'the page token is required');
      const unknownHost = await postCommand(ui.url, token, { type: 'backup.create', host: 'no-such-host', payload: { name: 'x' } });
      assert.equal(unknownHost.status, 503);
      assert.equal(await errorCode(unknownHost), 'CBR_ERR_BUS_UNAVAILABLE');

      await page.goto(readOnly.url);
      assert.equal(await page.isVisible('#start-backup'), false);
      assert.equal(await page.textContent('#mode'), 'read-only');
      const refused = await postCommand(readOnly.url, await pageToken(page), { type: 'backup.create', host: HOST, payload: { name: 'nope' } });
      assert.equal(refused.status, 403);
      assert.equal(await errorCode(refused), 'CBR_ERR_COMMAND_UNAUTHORIZED');
    } finally {
      await page.close();
      await readOnly.close();
    }
  });

  it('a request naming a host the ui does not listen as (DNS rebinding) is refused on every route, without the token', async () => {
    const token = await tokenOf(ui.port);
    const origin = `http://${ATTACKER}:${ui.port}`;
    const post = {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-cbr-token': token, origin },
      body: JSON.stringify({ type: 'backup.create', host: PROBE, payload: { name: 'rebound' } }),
    };
    for (const host of [`${ATTACKER}:${ui.port}`, ATTACKER, `127.0.0.1.${ATTACKER}:${ui.port}`, `localhost:${ui.port + 1}`, `[::1]:${ui.port}`]) {
      const routes: { path: string; method?: string; headers?: Record<string, string>; body?: string }[] = [
        { path: '/' },
        { path: '/events' },
        { path: '/api/state' },
        { path: '/assets/app.js' },
        { path: '/machines/backup.svg' },
        { path: '/api/commands', ...post },
      ];
      for (const r of routes) {
        const res = await raw(ui.port, { host, ...r });
        const what = `${r.method ?? 'GET'} ${r.path} with Host ${JSON.stringify(host)}`;
        assert.equal(res.status, 421, `${what} is refused`);
        assert.equal(res.headers['content-type'], 'application/json; charset=utf-8', what);
        assert.equal((JSON.parse(res.body) as { error: { code: string } }).error.code, 'CBR_ERR_INVALID_ARGUMENT', what);
        assert.ok(!res.body.includes(token), `${what}: no token in the answer`);
      }
    }
    assert.deepEqual(await published(), [], 'nothing was sent');
    // Its own names still work (any case).
    for (const host of [`127.0.0.1:${ui.port}`, `LocalHost:${ui.port}`]) assert.equal((await raw(ui.port, { host, path: '/api/state' })).status, 200, host);
  });

  it('a POST without the page’s own Origin is refused, token or not, and publishes nothing', async () => {
    const token = await tokenOf(ui.port);
    const host = `127.0.0.1:${ui.port}`;
    const body = JSON.stringify({ type: 'backup.create', host: PROBE, payload: { name: 'no-origin' } });
    for (const origin of [
      undefined,
      'null',
      `http://${ATTACKER}:${ui.port}`,
      `http://localhost:${ui.port}`,
      `https://127.0.0.1:${ui.port}`,
      `http://127.0.0.1:${ui.port + 1}`,
    ]) {
      const headers: Record<string, string> = { 'content-type': 'application/json', 'x-cbr-token': token, ...(origin === undefined ? {} : { origin }) };
      const res = await raw(ui.port, { host, method: 'POST', path: '/api/commands', headers, body });
      assert.equal(res.status, 403, `Origin ${origin} is refused`);
      assert.equal((JSON.parse(res.body) as { error: { code: string } }).error.code, 'CBR_ERR_COMMAND_UNAUTHORIZED', `Origin ${origin}`);
    }
    assert.deepEqual(await published(), [], 'nothing was sent');
  });

  it('in Chromium, neither a page of another origin nor a rebound name can post a command, even with the real token', async () => {
    const token = await tokenOf(ui.port);
    const command = { type: 'backup.create', host: PROBE, payload: { name: 'from-elsewhere' } };
    // Another local site (another port: another origin).
    const other = createHttpServer((_req, res) => res.end('<!doctype html><title>elsewhere</title>'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${(other.address() as AddressInfo).port}/`);
      const cross = await page.evaluate(
        async ({ url, token, command }) => {
          try {
            const res = await fetch(`${url}api/commands`, {
              method: 'POST',
              headers: { 'x-cbr-token': token, 'content-type': 'application/json' },
              body: JSON.stringify(command),
            });
            return `status ${res.status}`;
          } catch (err) {
            return String(err);
          }
        },
        { url: ui.url, token, command },
      );
      assert.match(cross, /^TypeError: Failed to fetch/, 'the browser gets no answer it may use (the preflight is refused)');

      // DNS rebinding: a page of the attacker's name, now resolving to 127.0.0.1, on the ui's port (same origin for the browser).
      const nav = await page.goto(`http://${ATTACKER}:${ui.port}/`);
      assert.equal(nav?.status(), 421, 'the page is not served under a foreign name');
      assert.ok(!(await page.content()).includes(token));
      const rebound = await page.evaluate(
        async ({ token, command }) => {
          const home = await fetch('/');
          const html = await home.text();
          const state = await fetch('/api/state');
          const post = await fetch('/api/commands', {
            method: 'POST',
            headers: { 'x-cbr-token': token, 'content-type': 'application/json' },
            body: JSON.stringify(command),
          });
          return {
            home: home.status,
            sawToken: html.includes(token),
            state: state.status,
            post: post.status,
            code: ((await post.json()) as { error?: { code: string } }).error?.code,
          };
        },
        { token, command },
      );
      assert.deepEqual(rebound, { home: 421, sawToken: false, state: 421, post: 421, code: 'CBR_ERR_INVALID_ARGUMENT' });
      assert.deepEqual(await published(), [], 'nothing was sent');
    } finally {
      await page.close();
      await new Promise((r) => other.close(r));
    }
  });

  it('a POST gets only the form’s fields signed and published: extra payload fields are dropped', async () => {
    const token = await tokenOf(ui.port);
    await published(); // whatever earlier tests left
    const extra = { passwordFile: '/etc/shadow', decryptKeyFile: '/root/cbr.key', superuser: 'intruder' };
    const restore = await postCommand(ui.url, token, {
      type: 'restore.create',
      host: PROBE,
      id: 'chosen-by-the-request',
      payload: { backupId: 'b-1', instanceName: 'uiTarget', clusterName: 'Test Cluster', force: true, ...extra },
    });
    assert.equal(restore.status, 202, await restore.clone().text());
    const [restoreSent, ...more] = await published();
    assert.deepEqual(more, []);
    assert.deepEqual(restoreSent!.payload, { backupId: 'b-1', instanceName: 'uiTarget', clusterName: 'Test Cluster', force: true });
    assert.equal(restoreSent!.id, ((await restore.json()) as { id: string }).id, 'the id is the server’s, not the request’s');
    const backup = await postCommand(ui.url, token, {
      type: 'backup.create',
      host: PROBE,
      payload: {
        name: 'extra-fields',
        compression: 'gzip',
        force: true,
        encryptKeyFile: '/root/enc.key',
        description: 'd',
        rateLimit: 4096,
        minFreePercent: 1,
        ...extra,
      },
    });
    assert.equal(backup.status, 202, await backup.clone().text());
    const [backupSent] = await published();
    assert.deepEqual(backupSent!.payload, { name: 'extra-fields', compression: 'gzip' });
    // Signed by the ui, as the agent checks it.
    for (const c of [restoreSent!, backupSent!]) parseCommand(Buffer.from(JSON.stringify(c)), { hostId: PROBE, signingKey: key, prefix });
  });

  it('every response forbids framing and sniffing: CSP frame-ancestors, X-Frame-Options, nosniff', async () => {
    const host = `127.0.0.1:${ui.port}`;
    const requests = [
      { host, path: '/' },
      { host, path: '/assets/app.js' },
      { host, path: '/assets/app.css' },
      { host, path: '/machines/restore.svg' },
      { host, path: '/api/state' },
      { host, path: '/events' },
      { host, path: '/nope' },
      { host, path: '/api/commands', method: 'POST', headers: { origin: `http://${host}`, 'x-cbr-token': 'wrong' }, body: '{}' },
      { host: `${ATTACKER}:${ui.port}`, path: '/' },
    ];
    const seen: number[] = [];
    for (const r of requests) {
      const res = await raw(ui.port, r);
      seen.push(res.status);
      assert.equal(res.headers['content-security-policy'], CSP, `${r.path} (${res.status})`);
      assert.equal(res.headers['x-frame-options'], 'DENY', `${r.path} (${res.status})`);
      assert.equal(res.headers['x-content-type-options'], 'nosniff', `${r.path} (${res.status})`);
    }
    assert.deepEqual(seen, [200, 200, 200, 200, 200, 200, 404, 403, 421]);
  });

  it('listening on ::1 or 0.0.0.0, the ui answers to its own addresses and --public-host names only', async () => {
    const v6 = await startUi({ url: BUS_URL, prefix, port: 0, listen: '::1', signingKey: null, log: quiet });
    const any = await startUi({ url: BUS_URL, prefix, port: 0, listen: '0.0.0.0', publicHosts: ['cbr-ui.test'], signingKey: null, log: quiet });
    try {
      const status = async (port: number, host: string, ip = '127.0.0.1') =>
        await new Promise<number>((resolve, reject) => {
          const req = httpRequest({ host: ip, port, path: '/api/state', headers: { host }, agent: false }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          });
          req.on('error', reject);
          req.end();
        });
      assert.equal(v6.url, `http://[::1]:${v6.port}/`);
      assert.equal(await status(v6.port, `[::1]:${v6.port}`, '::1'), 200);
      assert.equal(await status(v6.port, `localhost:${v6.port}`, '::1'), 200);
      assert.equal(await status(v6.port, `127.0.0.1:${v6.port}`, '::1'), 421, 'not an address it listens on');
      assert.equal(await status(v6.port, `${ATTACKER}:${v6.port}`, '::1'), 421);
      const own = Object.values(networkInterfaces())
        .flat()
        .filter((i) => i?.family === 'IPv4')
        .map((i) => i!.address);
      for (const h of [...own, 'localhost', 'cbr-ui.test', 'CBR-UI.test', '0.0.0.0']) assert.equal(await status(any.port, `${h}:${any.port}`), 200, h);
      for (const h of [`${ATTACKER}:${any.port}`, `cbr-ui.test:${any.port + 1}`, `cbr-ui.test.${ATTACKER}:${any.port}`, `[::1]:${any.port}`])
        assert.equal(await status(any.port, h), 421, h);
    } finally {
      await v6.close();
      await any.close();
    }
    await assert.rejects(
      async () => {
        const bad = await startUi({ url: BUS_URL, prefix, port: 0, signingKey: null, log: quiet, publicHosts: ['bad name/x'] });
        await bad.close();
      },
      { code: 'CBR_ERR_INVALID_ARGUMENT' },
    );
  });

  it('`cbr ui` as a process: prints its address, serves the generated diagrams, stops on SIGTERM', async () => {
    const child = spawn(
      join(REPO, 'node_modules', '.bin', 'node'),
      [join(REPO, 'bin', 'cbr.js'), 'ui', '--bus', BUS_URL, '--prefix', prefix, '--port', '0', '--public-host', 'cbr-ui.test', '--json'],
      {
        env: { ...testEnv, CBR_LOG_LEVEL: 'error' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    try {
      const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
      const info = JSON.parse(line) as { url: string; readOnly: boolean; bus: string };
      assert.equal(info.readOnly, true);
      assert.equal(info.bus, BUS_URL.replace(/:[^:@/]+@/, ':***@'), 'the broker password is not printed');
      const svg = await fetch(new URL('/machines/restore.svg', info.url));
      assert.equal(svg.headers.get('content-type'), 'image/svg+xml; charset=utf-8');
      assert.equal(await svg.text(), toSvg(diagram(restoreMachine)));
      const state = (await (await fetch(new URL('/api/state', info.url))).json()) as { canCommand: boolean; workflows: unknown[] };
      assert.equal(state.canCommand, false);
      assert.ok(Array.isArray(state.workflows));
      assert.equal((await fetch(new URL('/nope', info.url))).status, 404);
      const port = Number(new URL(info.url).port);
      assert.equal((await raw(port, { host: `cbr-ui.test:${port}`, path: '/api/state' })).status, 200, '--public-host names are answered');
      assert.equal((await raw(port, { host: `${ATTACKER}:${port}`, path: '/api/state' })).status, 421);
    } finally {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0, 'exits 0 on SIGTERM');
    }
  });

  it('50 hosts and 500 workflows in the event stream: all drawn, render time measured', async (t) => {
    // First: with the broker down, nothing below is left running (the ui would retry forever).
    const conn = await amqplib.connect(BUS_URL);
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const stressPrefix = `uis${process.pid}.`;
    const stressUi = await startUi({ url: BUS_URL, prefix: stressPrefix, port: 0, signingKey: null, log: quiet });
    try {
      await page.goto(stressUi.url);
      await page.waitForSelector('#bus[data-connected="true"]');
      // Count only the storm, not the page load.
      await page.evaluate(() => {
        const st = (window as unknown as { __cbr: { stats: Record<string, number> } }).__cbr.stats;
        for (const k of Object.keys(st)) st[k] = 0;
      });
      const ch = await conn.createConfirmChannel();
      const exchange = `${stressPrefix}cbr.events`;
      // 13 events per workflow: 5 states, 3 progress, 4 more states, the result.
      const rounds = [...BACKUP_STEPS.slice(0, 5), 'progress', 'progress', 'progress', ...BACKUP_STEPS.slice(5), 'completed', 'result'];
      const base = Date.now();
      let seq = 0;
      const started = performance.now();
      // Every workflow advances one event per round, so all 500 are live at once (the hardest case to draw).
      rounds.forEach((what, round) => {
        for (let w = 0; w < 500; w++) {
          const host = `host-${String(w % 50).padStart(2, '0')}`;
          const workflowId = `wf-${String(w).padStart(3, '0')}-${'x'.repeat(28)}`;
          const head = { host, workflowId, kind: 'backup', at: new Date(base + round * 1000 + w).toISOString(), eventId: `${host}:${seq++}` };
          const event =
            what === 'result'
              ? { ...head, type: 'result', state: 'completed', status: 'done', error: null, result: { backupId: workflowId } }
              : what === 'progress'
                ? {
                    ...head,
                    type: 'progress',
                    step: 'streaming',
                    progress: { bytes: (round - 4) * 1e8, totalBytes: 3e8, files: round - 4, totalFiles: 3, storedBytes: 0 },
                  }
                : { ...head, type: 'state', state: what, status: what === 'completed' ? 'done' : 'active', error: null };
          ch.publish(exchange, `${host}.${workflowId}.${event.type}`, Buffer.from(JSON.stringify(event)));
        }
      });
      await ch.waitForConfirms();
      const published = performance.now();
      await page.waitForFunction(
        () => {
          const w = (window as unknown as { __cbr: { workflows: Map<string, { status: string }> } }).__cbr.workflows;
          return (
            w.size === 500 && [...w.values()].every((x) => x.status === 'done') && document.querySelectorAll('li.wf[data-state="completed"]').length === 500
          );
        },
        undefined,
        { timeout: 60_000, polling: 50 },
      );
      const drawn = performance.now();
      assert.equal(await page.$$eval('#hosts .host', (h) => h.length), 50);
      assert.equal(await page.textContent('#counts'), '50 hosts · 500 workflows · 0 active');
      const clickStart = performance.now();
      await page.click('li.wf[data-id^="wf-499-"]');
      await page.waitForFunction(() => document.querySelector('#detail h2 code')?.textContent?.startsWith('wf-499-'));
      const clickMs = performance.now() - clickStart;
      const stats = await page.evaluate(() => (window as unknown as { __cbr: { stats: Record<string, number> } }).__cbr.stats);
      assert.equal(stats['applied']! >= 500, true);
      const m = {
        events: seq,
        publishMs: Math.round(published - started),
        allDrawnMs: Math.round(drawn - started),
        renders: stats['renders'],
        longestRenderMs: Math.round(stats['maxMs']! * 10) / 10,
        meanRenderMs: Math.round((stats['totalMs']! / stats['renders']!) * 10) / 10,
        longTasks: stats['longTasks'],
        longestTaskMs: Math.round(stats['longestTaskMs']!),
        clickToDetailMs: Math.round(clickMs),
      };
      t.diagnostic(`ui stress: ${JSON.stringify(m)}`);
      writeFileSync(join(ARTIFACTS, 'ui-stress.json'), `${JSON.stringify(m, null, 2)}\n`);
      await page.screenshot({ path: join(ARTIFACTS, 'ui-stress-500.png') });
    } finally {
      await page.close();
      await stressUi.close();
      await conn.close();
      await removeBusTopology(stressPrefix, []);
    }
  });
});
