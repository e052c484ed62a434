import { readdir } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { processUsage } from './process-usage.ts';

/**
 * Clients that misbehave on purpose, and what a test measures of the registry they attack: its
 * resident memory and open descriptors, and the latency a well-behaved client sees meanwhile.
 */

/** A TCP connection to `host` (`127.0.0.1:port`), optionally from another loopback address. */
export function openConnection(host: string, localAddress?: string): Promise<Socket> {
  const [hostname, port] = host.split(':');
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), localAddress }, () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Resolves true once the socket has closed, false if it is still open after `timeoutMs`. */
export function closesWithin(socket: Socket, timeoutMs: number): Promise<boolean> {
  if (socket.closed) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function head(method: string, path: string, host: string, headers: Record<string, string>) {
  const lines = Object.entries({ Host: host, ...headers }).map(
    ([name, value]) => `${name}: ${value}`,
  );
  return `${method} ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`;
}

/**
 * Sends a GET and never reads a byte of the answer: once the kernel's buffers are full, the
 * response waits in the registry.
 */
export async function stalledReader(
  host: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<Socket> {
  const socket = await openConnection(host);
  socket.pause();
  // A reset by the registry surfaces here when the test finally closes the socket.
  socket.on('error', () => undefined);
  socket.write(head('GET', path, host, headers));
  return socket;
}

/**
 * Sends request headers promising `declaredLength` body bytes, then one byte every
 * `intervalMs` until the connection closes: a body that never ends.
 */
export async function tricklingBody(
  host: string,
  method: string,
  path: string,
  declaredLength: number,
  intervalMs: number,
  headers: Record<string, string> = {},
): Promise<Socket> {
  const socket = await openConnection(host);
  socket.on('error', () => undefined);
  socket.resume();
  socket.write(head(method, path, host, { ...headers, 'Content-Length': String(declaredLength) }));
  const timer = setInterval(() => {
    if (socket.writable) socket.write('x');
  }, intervalMs);
  socket.once('close', () => clearInterval(timer));
  return socket;
}

/** Runs `task` for every index below `count`, at most `concurrency` at a time. */
export async function inParallel(
  count: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const index = next;
      next += 1;
      await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** An HTTP exchange over a caller's agent, the response body read whole. */
export function exchange(
  agent: Agent,
  host: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<{
  status: number;
  body: Buffer;
  headers: Record<string, string | string[] | undefined>;
}> {
  const [hostname, port] = host.split(':');
  return new Promise((resolve, reject) => {
    const req = request({ agent, hostname, port: Number(port), method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export interface Footprint {
  readonly rssMiB: number;
  readonly peakMiB: number;
  /** Open descriptors, every kind. */
  readonly fds: number;
}

/** Resident memory, its peak and open descriptors of a process, from /proc. */
export async function footprint(pid: number): Promise<Footprint> {
  const usage = await processUsage(pid);
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  return { rssMiB: usage.rssMB, peakMiB: usage.peakMB, fds };
}

/** The value of a counter sample in a Prometheus text exposition, 0 when absent. */
export function counterValue(metrics: string, sample: string): number {
  const line = metrics.split('\n').find((candidate) => candidate.startsWith(`${sample} `));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}

/**
 * A client that behaves: pulls one manifest and one blob over its own keep-alive connection,
 * again and again until stopped, and keeps how long each pull took.
 */
export class SteadyPuller {
  readonly latenciesMs: number[] = [];
  readonly failures: string[] = [];
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });
  private running = true;
  private readonly loop: Promise<void>;

  constructor(host: string, repository: string, blob: string, token: string) {
    const headers = { Authorization: `Bearer ${token}` };
    this.loop = (async () => {
      while (this.running) {
        const started = performance.now();
        try {
          const manifest = await exchange(
            this.agent,
            host,
            'GET',
            `/v2/${repository}/manifests/latest`,
            {
              ...headers,
              Accept: 'application/vnd.oci.image.manifest.v1+json',
            },
          );
          const layer = await exchange(
            this.agent,
            host,
            'GET',
            `/v2/${repository}/blobs/${blob}`,
            headers,
          );
          if (manifest.status !== 200 || layer.status !== 200)
            this.failures.push(`manifest ${manifest.status}, blob ${layer.status}`);
        } catch (error) {
          this.failures.push(String(error));
        }
        this.latenciesMs.push(performance.now() - started);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
  }

  /** The given percentile (0-100) of the pull latencies so far. */
  percentile(p: number): number {
    const sorted = [...this.latenciesMs].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    this.agent.destroy();
  }
}
