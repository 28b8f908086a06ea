import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, isIP } from 'node:net';
import { type CommandDraft, publishCommand, watchEvents } from '../bus/client.ts';
import { parseCommand } from '../bus/schemas/commands.ts';
import type { BusEvent } from '../bus/schemas/events.ts';
import { redactUrl } from '../bus/subscriber.ts';
import { CbrError, toErrorInfo } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { diagram } from '../diagram/graph.ts';
import { toSvg } from '../diagram/svg.ts';
import { backupMachine } from '../machines/backup.machine.ts';
import { restoreMachine } from '../machines/restore.machine.ts';
import { type HostNames, hostNames } from './hostNames.ts';
import { MAX_HISTORY, UiModel } from './model.ts';
import { page } from './page.ts';

/**
 * `cbr ui`: a local web page over the event exchange. Every asset is served from here (no internet), updates
 * go to browsers as server-sent events, batched every 100 ms so a burst of events costs one message. Starting a
 * backup or restore from the page needs the command signing key (the server signs); without one the view is
 * read-only.
 *
 * Since the server signs what the page posts, the page is guarded against other sites open in the same browser:
 * - Host: every request (page, assets, events, API) must name the server as it listens: `127.0.0.1:<port>` or
 *   `localhost:<port>` (`[::1]:<port>` on ::1), the listen address with its port, on 0.0.0.0/:: also the machine's
 *   interface addresses, plus any `publicHosts` (`--public-host`). Anything else gets 421 CBR_ERR_INVALID_ARGUMENT
 *   and no content, so a DNS-rebinding page (a name of the attacker's that resolves to 127.0.0.1) reads nothing.
 * - Origin: a POST must carry `Origin: http://<that host>`; missing or foreign is 403 CBR_ERR_COMMAND_UNAUTHORIZED.
 * - Token: a POST also needs a per-process token that only the page itself can read (it is in the page's HTML).
 * - Fields: the command is rebuilt from the fields the two forms have (FORM_FIELDS); anything else in the body
 *   (passwordFile, decryptKeyFile, encryptKeyFile, ...) is dropped, never signed.
 * - Framing: every response has CSP `frame-ancestors 'none'`, X-Frame-Options DENY and nosniff.
 */

export interface UiOptions {
  url: string;
  prefix?: string;
  port?: number;
  /** Address to listen on; default 127.0.0.1 (the page can start restores: keep it local). */
  listen?: string;
  signingKey?: Buffer | null;
  log: Logger;
  /** Flush interval of the batched updates (ms); default 100. */
  flushMs?: number;
  /** More names the page may be opened by (e.g. this machine's DNS name when listening on 0.0.0.0), each as NAME:<port>. */
  publicHosts?: readonly string[];
}

export interface UiServer {
  url: string;
  port: number;
  model: UiModel;
  close(): Promise<void>;
}

const ASSETS = new URL('./assets/', import.meta.url);
const MAX_BUFFERED = 8 << 20;
const MAX_WORKFLOWS = 2000;
const TYPES: Record<string, string> = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' };
/** On every response, errors included: no framing (clickjacking), no type sniffing, no caching. */
const HEADERS: Record<string, string> = {
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
};
/** The payload fields the page's forms send (page() and assets/app.js); a POST gets these and nothing else signed. */
const FORM_FIELDS = {
  'backup.create': ['name', 'compression', 'strategy'],
  'restore.create': ['backupId', 'instanceName', 'clusterName', 'force'],
} as const;
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export async function startUi(o: UiOptions): Promise<UiServer> {
  for (const h of o.publicHosts ?? []) {
    if (!HOSTNAME.test(h) && !isIP(h))
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--public-host ${JSON.stringify(h.slice(0, 64))} is not a host name or address`);
  }
  const model = new UiModel({ maxWorkflows: MAX_WORKFLOWS });
  const token = randomBytes(24).toString('base64url');
  const svgs = { backup: toSvg(diagram(backupMachine)), restore: toSvg(diagram(restoreMachine)) };
  const clients = new Set<ServerResponse>();
  const dirty = new Set<string>();
  const historySent = new Map<string, number>();
  let busConnected = false;
  let stopping = false;

  const broadcast = (event: string, data: unknown) => {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const c of clients) {
      // A browser that stopped reading is dropped (it reconnects and gets a fresh snapshot), not buffered for.
      if (c.writableLength > MAX_BUFFERED) {
        clients.delete(c);
        c.destroy();
      } else c.write(frame);
    }
  };
  const flush = setInterval(() => {
    if (dirty.size === 0) return;
    // Each update carries only the history entries added since the last one (browsers place them by index).
    const workflows = [];
    for (const id of dirty) {
      const w = model.get(id);
      if (!w) continue;
      const sent = historySent.get(id) ?? 0;
      const from = sent <= w.history.length && w.history.length < MAX_HISTORY ? sent : 0;
      workflows.push({ ...w, history: w.history.slice(from), historyFrom: from });
      historySent.set(id, w.history.length);
    }
    dirty.clear();
    if (historySent.size > 2 * MAX_WORKFLOWS) for (const id of historySent.keys()) if (!model.get(id)) historySent.delete(id);
    broadcast('update', { workflows, rejected: model.snapshot().rejected.slice(0, 5) });
  }, o.flushMs ?? 100);
  const ping = setInterval(() => broadcast('ping', { at: new Date().toISOString() }), 15_000);

  const onEvent = (e: BusEvent) => {
    const w = model.apply(e);
    if (w) dirty.add(w.id);
    if (w?.clusterOf) dirty.add(w.clusterOf);
    else if (e.type === 'rejected') broadcast('rejected', model.snapshot().rejected.slice(0, 5));
  };

  // The subscription reconnects on its own: the page shows the bus as down meanwhile.
  let sub: Awaited<ReturnType<typeof watchEvents>> | null = null;
  const subscribe = async (): Promise<void> => {
    while (!stopping) {
      try {
        sub = await watchEvents({ url: o.url, ...(o.prefix ? { prefix: o.prefix } : {}), onEvent });
        // close() may have come while we were connecting: it found no subscription to close.
        if (stopping) {
          await sub.close();
          break;
        }
        busConnected = true;
        broadcast('bus', { connected: true });
        o.log.info('ui subscribed to events', { bus: redactUrl(o.url) });
        await sub.closed;
      } catch (err) {
        o.log.warn('ui cannot subscribe to events', { error: toErrorInfo(err).message });
      }
      busConnected = false;
      broadcast('bus', { connected: false });
      if (!stopping) await new Promise((r) => setTimeout(r, 2000));
    }
  };
  const subscribed = subscribe();

  // Filled in once listening (the port is known then).
  let hosts: HostNames | null = null;
  const server: Server = createServer((req, res) => {
    for (const [k, v] of Object.entries(HEADERS)) res.setHeader(k, v);
    handle(req, res).catch((err) => {
      const info = toErrorInfo(err);
      if (!res.headersSent) sendJson(res, status(info.code), { error: info });
      else res.end();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Before anything is read or served: a name that is not ours is a DNS-rebinding page (or a misdirected one).
    const host = String(req.headers.host ?? '').toLowerCase();
    if (!hosts?.accepts(host)) {
      const info = new CbrError(
        'CBR_ERR_INVALID_ARGUMENT',
        `this server does not answer to host ${JSON.stringify(host.slice(0, 100))}; open ${hosts?.url ?? 'it by its address'}`,
      ).toJSON();
      sendJson(res, 421, { error: info });
      return;
    }
    // Browsers send Origin on every cross-origin request and on same-origin POSTs: only the page's own is accepted.
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const origin = req.headers.origin;
      if (origin?.toLowerCase() !== `http://${host}`) {
        throw new CbrError(
          'CBR_ERR_COMMAND_UNAUTHORIZED',
          origin === undefined ? 'a request without an Origin header cannot post' : `cross-origin request from ${JSON.stringify(origin.slice(0, 100))} refused`,
        );
      }
    }
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method === 'GET' && path === '/') {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(page(token, !!o.signingKey));
      return;
    }
    const asset = /^\/assets\/(app\.js|app\.css)$/.exec(path)?.[1];
    if (req.method === 'GET' && asset) {
      res.setHeader('Content-Type', TYPES[asset]!);
      res.end(await readFile(new URL(asset, ASSETS)));
      return;
    }
    const svg = /^\/machines\/(backup|restore)\.svg$/.exec(path)?.[1] as 'backup' | 'restore' | undefined;
    if (req.method === 'GET' && svg) {
      res.setHeader('Content-Type', 'image/svg+xml; charset=utf-8');
      res.end(svgs[svg]);
      return;
    }
    if (req.method === 'GET' && path === '/api/state') {
      sendJson(res, 200, { ...model.snapshot(), bus: busConnected, canCommand: !!o.signingKey });
      return;
    }
    if (req.method === 'GET' && path === '/events') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
      res.write(`event: snapshot\ndata: ${JSON.stringify({ ...model.snapshot(), bus: busConnected, canCommand: !!o.signingKey })}\n\n`);
      clients.add(res);
      req.on('close', () => clients.delete(res));
      return;
    }
    if (req.method === 'POST' && path === '/api/commands') {
      const got = Buffer.from(String(req.headers['x-cbr-token'] ?? ''));
      const want = Buffer.from(token);
      if (got.length !== want.length || !timingSafeEqual(got, want)) throw new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', 'missing or wrong page token');
      if (!o.signingKey)
        throw new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', 'this view is read-only: start cbr ui with the command signing key to start workflows');
      const draft = await commandFrom(await readBody(req, 16 * 1024));
      // Validate exactly as the agent will, so a bad form gets the agent's reason before anything is sent.
      const probe = { ...draft, version: 1, id: draft.id, issuedAt: new Date().toISOString() };
      parseCommand(Buffer.from(JSON.stringify(probe)), { hostId: draft.host });
      const sent = await publishCommand({ url: o.url, ...(o.prefix ? { prefix: o.prefix } : {}), draft, signingKey: o.signingKey });
      o.log.info('ui sent a command', { commandId: sent.id, type: sent.type, host: sent.host });
      sendJson(res, 202, { id: sent.id, type: sent.type, host: sent.host });
      return;
    }
    sendJson(res, 404, { error: { code: 'CBR_ERR_INVALID_ARGUMENT', message: `no ${req.method} ${path}` } });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new CbrError('CBR_ERR_INVALID_ARGUMENT', `cannot listen on ${o.listen ?? '127.0.0.1'}:${o.port ?? 0} (${err.code})`)),
    );
    server.listen(o.port ?? 0, o.listen ?? '127.0.0.1', () => resolve());
  });
  const { port, address } = server.address() as AddressInfo;
  const url = `http://${address.includes(':') ? `[${address}]` : address}:${port}/`;
  hosts = hostNames(address, port, o.publicHosts ?? [], url);
  return {
    url,
    port,
    model,
    async close() {
      stopping = true;
      clearInterval(flush);
      clearInterval(ping);
      for (const c of clients) c.end();
      clients.clear();
      await sub?.close();
      await subscribed;
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Only the two workflow-starting commands, with only the fields the forms have (FORM_FIELDS). */
async function commandFrom(body: Buffer): Promise<CommandDraft & { id: string }> {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new CbrError('CBR_ERR_COMMAND_INVALID', 'request body is not JSON');
  }
  const r = (v ?? {}) as { type?: unknown; host?: unknown; payload?: unknown };
  if (r.type !== 'backup.create' && r.type !== 'restore.create')
    throw new CbrError('CBR_ERR_COMMAND_INVALID', 'the page can start backup.create or restore.create only');
  if (typeof r.host !== 'string') throw new CbrError('CBR_ERR_COMMAND_INVALID', 'host is required');
  if (!r.payload || typeof r.payload !== 'object' || Array.isArray(r.payload)) throw new CbrError('CBR_ERR_COMMAND_INVALID', 'payload is required');
  const given = r.payload as Record<string, unknown>;
  const payload: Record<string, unknown> = {};
  for (const k of FORM_FIELDS[r.type]) if (Object.hasOwn(given, k) && given[k] !== undefined) payload[k] = given[k];
  return { id: randomUUID(), type: r.type, host: r.host, payload } as unknown as CommandDraft & { id: string };
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new CbrError('CBR_ERR_COMMAND_INVALID', `request body is over ${limit} bytes`);
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

function status(code: string): number {
  if (code === 'CBR_ERR_COMMAND_UNAUTHORIZED') return 403;
  if (code === 'CBR_ERR_COMMAND_INVALID' || code === 'CBR_ERR_INVALID_ARGUMENT') return 400;
  if (code === 'CBR_ERR_BUS_UNAVAILABLE') return 503;
  return 500;
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'Content-Type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}
