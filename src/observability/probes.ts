import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MetricsRegistry } from './metrics.ts';

/** What `/readyz` answers: ready, or why not (a reason word and a sentence an operator can act on). */
export type ProbeState =
  | { readonly ready: true }
  | { readonly ready: false; readonly reason: string; readonly message: string };

export interface Probes {
  readonly metrics: MetricsRegistry;
  /** The current readiness; kept up to date in the background, never computed by a probe. */
  readonly readiness: () => ProbeState;
}

const probePaths = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * The one way Berth's processes serve their probes, on their own port or beside their API:
 * `/healthz` is 200 while the process serves (liveness), `/readyz` is 200 or 503 with the
 * `ProbeState` as JSON, `/metrics` is the Prometheus text format. GET and HEAD only; another
 * method gets 405. Returns false, answering nothing, for any other path: the caller's to serve.
 */
export function answerProbe(req: IncomingMessage, res: ServerResponse, probes: Probes): boolean {
  const path = (req.url ?? '').split('?', 1)[0] ?? '';
  if (!probePaths.has(path)) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end();
    return true;
  }
  if (path === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
  } else if (path === '/readyz') {
    const state = probes.readiness();
    res
      .writeHead(state.ready ? 200 : 503, { 'Content-Type': 'application/json; charset=utf-8' })
      .end(JSON.stringify(state));
  } else {
    probes.metrics.render().then(
      (text) => res.writeHead(200, { 'Content-Type': probes.metrics.contentType }).end(text),
      // A metric that failed to read (say, a statfs): the scrape fails visibly, the process serves on.
      (error: unknown) =>
        res
          .writeHead(500, { 'Content-Type': 'text/plain' })
          .end(`metrics failed: ${(error as Error).message}\n`),
    );
  }
  return true;
}

/** A server of the probes alone (the operator's `--metrics-listen`); 404 for any other path. */
export async function serveProbes(
  listen: { readonly host: string; readonly port: number },
  probes: Probes,
): Promise<Server> {
  const server = createServer((req, res) => {
    if (!answerProbe(req, res, probes)) res.writeHead(404).end();
  });
  await listenOn(server, listen);
  return server;
}

/** Listens, rejecting on the first error (a port in use) instead of emitting it later. */
export function listenOn(
  server: Server,
  listen: { readonly host: string; readonly port: number },
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** `host:port` of a listening server, an IPv6 host in brackets (`[::1]:5000`), as URLs write it. */
export function formatAddress(address: string | AddressInfo | null): string {
  if (address === null) return '';
  if (typeof address === 'string') return address;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `${host}:${address.port}`;
}
