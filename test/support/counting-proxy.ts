import {
  createServer,
  request,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request through the proxy and when its answer's body came (performance.now() times). */
export interface Exchange {
  readonly line: string;
  readonly started: number;
  status: number | undefined;
  firstByte: number | undefined;
  finished: number | undefined;
  bytes: number;
}

/**
 * An HTTP proxy in front of an upstream registry that records every request, can slow response
 * bodies to a fixed rate (so streaming is measurable), answer 429, or stop listening altogether.
 */
export class CountingProxy {
  readonly requests: string[] = [];
  /** The same requests with their timings, for time-to-first-byte measurements. */
  readonly exchanges: Exchange[] = [];
  /** Response body bytes per second; unlimited when 0. */
  bytesPerSecond = 0;
  rateLimited = false;
  private server: Server | undefined;
  private port = 0;
  private readonly target: URL;

  constructor(target: string) {
    this.target = new URL(target);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The exchanges so far whose `METHOD path` matches, oldest first. */
  matching(pattern: RegExp): Exchange[] {
    return this.exchanges.filter((exchange) => pattern.test(exchange.line));
  }

  /** Requests so far whose `METHOD path` matches. */
  count(pattern: RegExp): number {
    return this.requests.filter((line) => pattern.test(line)).length;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const line = `${req.method} ${req.url}`;
      this.requests.push(line);
      const exchange: Exchange = {
        line,
        started: performance.now(),
        status: undefined,
        firstByte: undefined,
        finished: undefined,
        bytes: 0,
      };
      this.exchanges.push(exchange);
      if (this.rateLimited) {
        res.writeHead(429, { 'Content-Type': 'application/json' }).end('{"errors":[]}');
        return;
      }
      const forward = request(
        {
          host: this.target.hostname,
          port: this.target.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (answer) => void this.relay(answer, res, exchange),
      );
      forward.on('error', () => res.destroy());
      req.pipe(forward);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Sends an upstream answer on, no faster than `bytesPerSecond`. */
  private async relay(
    answer: IncomingMessage,
    res: ServerResponse,
    exchange: Exchange,
  ): Promise<void> {
    exchange.status = answer.statusCode;
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    const started = Date.now();
    let sent = 0;
    try {
      for await (const chunk of answer as AsyncIterable<Buffer>) {
        sent += chunk.length;
        exchange.firstByte ??= performance.now();
        exchange.bytes = sent;
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
        const due = this.bytesPerSecond ? started + (sent / this.bytesPerSecond) * 1000 : 0;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      res.end();
      exchange.finished = performance.now();
    } catch {
      res.destroy();
    }
  }

  /** Stops listening and cuts every connection: the upstream is unreachable until `start`. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
