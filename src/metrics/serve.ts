import { createServer, type Server } from 'node:http';
import { CbrError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { CbrMetrics } from './metrics.ts';

/** "127.0.0.1:9464", "[::1]:9464" or "localhost:9464" as host and port; a port alone is refused (bind explicitly). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text.trim());
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65535) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--metrics-listen wants <host>:<port> (e.g. 127.0.0.1:9464), not ${JSON.stringify(text)}`);
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

export interface MetricsServer {
  /** The address it listens on, e.g. http://127.0.0.1:9464/metrics (the real port when 0 was asked for). */
  url: string;
  close(): Promise<void>;
}

/** Serves GET /metrics (and HEAD) on the given address only; anything else is 404, another method 405. */
export async function serveMetrics(metrics: CbrMetrics, listen: string, log: Logger): Promise<MetricsServer> {
  const { host, port } = parseListen(listen);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    metrics.text().then(
      (body) => {
        res.writeHead(200, { 'content-type': metrics.contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: Error) => {
        log.warn('metrics collection failed', { error: err.message });
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
      },
    );
  });
  // A scraper that keeps its connection open must not hold a stopping agent.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new CbrError('CBR_ERR_INVALID_ARGUMENT', `cannot serve metrics on ${listen}: ${err.code ?? err.message}`)),
    );
    server.listen({ host, port }, () => resolve());
  });
  const addr = server.address();
  const real = addr && typeof addr === 'object' ? addr.port : port;
  const shown = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${real}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
