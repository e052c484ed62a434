import { Agent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A round-robin HTTP balancer in front of registry replicas: every request, also on a kept-alive
 * client connection, goes to the next backend in turn, so no client can stick to one replica.
 * Bodies stream both ways. A backend that refuses a connection is skipped from then on (as a
 * balancer's health check would take it out), and the request it failed gets a 502, which
 * clients retry; a request cut off half way is cut off for the client too.
 */
export interface RoundRobinBalancer {
  /** `127.0.0.1:<port>`. */
  readonly host: string;
  readonly url: string;
  /** Index of the backend that served each request, in arrival order, with its method and path. */
  readonly served: readonly { backend: number; method: string; path: string }[];
  stop(): Promise<void>;
}

export async function startRoundRobinBalancer(
  backends: readonly string[],
): Promise<RoundRobinBalancer> {
  const agent = new Agent({ keepAlive: true });
  const down = new Set<number>();
  const served: { backend: number; method: string; path: string }[] = [];
  let next = 0;

  const pick = (): number | undefined => {
    for (let tried = 0; tried < backends.length; tried += 1) {
      const index = next % backends.length;
      next += 1;
      if (!down.has(index)) return index;
    }
    return undefined;
  };

  const forward = (req: IncomingMessage, res: ServerResponse): void => {
    const backend = pick();
    if (backend === undefined) {
      res.writeHead(502).end('no backend');
      return;
    }
    served.push({ backend, method: req.method ?? '', path: req.url ?? '' });
    const [hostname, port] = (backends[backend] as string).split(':');
    const upstream = request(
      { agent, hostname, port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
        answer.pipe(res);
        answer.on('error', () => res.destroy());
      },
    );
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED') down.add(backend);
      if (res.headersSent) res.destroy();
      else res.writeHead(502).end(`backend ${backend}: ${error.message}`);
    });
    req.pipe(upstream);
    req.on('error', () => upstream.destroy());
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
  };

  const server = createServer({ requestTimeout: 0 }, forward);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    host,
    url: `http://${host}`,
    served,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}
