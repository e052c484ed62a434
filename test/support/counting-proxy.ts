import {
  createServer,
  request,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * An HTTP proxy in front of an upstream registry that records every request, can slow response
 * bodies to a fixed rate (so streaming is measurable), answer 429, or stop listening altogether.
 */
export class CountingProxy {
  readonly requests: string[] = [];
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

  /** Requests so far whose `METHOD path` matches. */
  count(pattern: RegExp): number {
    return this.requests.filter((line) => pattern.test(line)).length;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      this.requests.push(`${req.method} ${req.url}`);
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
        (answer) => void this.relay(answer, res),
      );
      forward.on('error', () => res.destroy());
      req.pipe(forward);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Sends an upstream answer on, no faster than `bytesPerSecond`. */
  private async relay(answer: IncomingMessage, res: ServerResponse): Promise<void> {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    const started = Date.now();
    let sent = 0;
    try {
      for await (const chunk of answer as AsyncIterable<Buffer>) {
        sent += chunk.length;
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
        const due = this.bytesPerSecond ? started + (sent / this.bytesPerSecond) * 1000 : 0;
        if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
      }
      res.end();
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
