import { createHash } from 'node:crypto';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { finished } from 'node:stream/promises';
import {
  createServer,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { NodeProxyConfig } from '../config/node-proxy.ts';
import type { Logger } from '../observability/logger.ts';
import { registerCertificateExpiry } from '../observability/certificate-expiry.ts';
import { Counter, Gauge, MetricsRegistry } from '../observability/metrics.ts';
import { answerProbe, formatAddress, listenOn, type ProbeState } from '../observability/probes.ts';
import { corkForThisTurn, drained, VerifiedSender } from '../util/client-writes.ts';
import { copyFileRange } from '../util/file-range.ts';
import type { PipeAnswer } from '../util/get-pipe.ts';
import { BlobCache } from './blob-cache.ts';
import { FillSink } from './fill-sink.ts';
import { BadTargetError, Upstream } from './upstream.ts';
import { UpstreamHealth } from './upstream-health.ts';

const blobPath = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/;

/**
 * The blob a GET names, read from the path without its query: containerd asks a mirror for
 * `/v2/<name>/blobs/<digest>?ns=<registry>`. The request is still forwarded whole, `?ns=`
 * included, because the registry resolves and authorizes the name with it.
 */
function blobOf(url: string): RegExpExecArray | null {
  const query = url.indexOf('?');
  return blobPath.exec(query === -1 ? url : url.slice(0, query));
}

/** A cached blob's last bytes, sent only once the whole blob has matched its digest. */
const heldBackBytes = 64 * 1024;

/** Often enough that a kubelet probing every 10 s sees a change within one probe or two. */
const upstreamChecks = { intervalMillis: 5_000, timeoutMillis: 3_000 };

export interface RunningNodeProxy {
  readonly address: string;
  readonly cache: BlobCache;
  stop(): Promise<void>;
}

/**
 * `berth node-proxy`: the registry on every node's loopback, so `localhost:<port>/team/app:tag`
 * works for kubelets, which resolve names through the node and accept plain HTTP only on
 * localhost. Every request goes to the registry Service over verified TLS with the client's own
 * credentials; blob GETs are served from a node-local cache, each time only after the registry
 * answered a HEAD with those credentials, so the cache never widens who may read a blob.
 */
export async function startNodeProxy(
  config: NodeProxyConfig,
  logger: Logger,
): Promise<RunningNodeProxy> {
  const metrics = new MetricsRegistry();
  metrics.registerProcessMetrics();
  const requests = metrics.register(
    new Counter('berth_node_proxy_blob_requests_total', 'Blob GETs by outcome.', ['outcome']),
  );
  const fetches = metrics.register(
    new Counter('berth_node_proxy_upstream_blob_fetches_total', 'Blob GETs sent to the registry.'),
  );
  const evictions = metrics.register(
    new Counter('berth_node_proxy_cache_evictions_total', 'Blobs evicted from the cache.'),
  );
  const corrupt = metrics.register(
    new Counter('berth_node_proxy_cache_corrupt_total', 'Cached blobs dropped for a bad digest.'),
  );
  const ca = config.caFile ? await readFile(config.caFile) : undefined;
  if (config.caFile)
    registerCertificateExpiry(metrics, [{ certificate: 'ca', file: config.caFile }]);
  const upstream = new Upstream(config.upstream, ca, config.tlsServerName, {
    caFile: config.caFile,
  });
  const health = new UpstreamHealth(upstream, upstreamChecks, logger);
  metrics.register(
    new Gauge(
      'berth_node_proxy_upstream_up',
      'Whether the registry answered the last check.',
      () => (health.state.up ? 1 : 0),
    ),
  );
  const cache = new BlobCache(config.cacheDirectory, config.cacheSize, logger, {
    evicted: () => evictions.inc(),
    corrupt: () => corrupt.inc(),
  });
  metrics.register(
    new Gauge('berth_node_proxy_cache_bytes', 'Bytes held by the blob cache.', () => cache.size),
  );
  await cache.open();

  const handler = new ProxyHandler(upstream, cache, logger, {
    outcome: (outcome) => requests.inc({ outcome }),
    fetched: () => fetches.inc(),
  });
  const probes = {
    metrics,
    readiness: (): ProbeState => {
      const { up, reason } = health.state;
      return up
        ? { ready: true }
        : { ready: false, reason: 'UpstreamUnavailable', message: reason };
    },
  };
  // Bigger buffers than the 16 KiB default: fewer pauses and system calls per blob.
  const server = createServer({ highWaterMark: 1 << 20 }, (req, res) => {
    // Liveness is the process's own; readiness is whether pulls through this node can work.
    if (answerProbe(req, res, probes)) return;
    handler.handle(req, res).catch((error: unknown) => {
      if (error instanceof BadTargetError) {
        if (!res.headersSent)
          res.writeHead(400, { 'Content-Type': 'text/plain' }).end('bad request target\n');
        return;
      }
      logger.error({ err: error, method: req.method, path: req.url }, 'proxy request failed');
      if (!res.headersSent) unavailable(res);
      else res.destroy();
    });
  });
  // Large blobs take long; the defaults would cut them off.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;
  await listenOn(server, config.listen);
  health.start();
  const bound = formatAddress(server.address());
  logger.info(
    { listen: bound, upstream: config.upstream.href, tlsServerName: config.tlsServerName },
    'node proxy listening',
  );
  return {
    address: bound,
    cache,
    stop: () => {
      health.stop();
      return closeServer(server, upstream);
    },
  };
}

interface ProxyObserver {
  outcome(outcome: 'hit' | 'miss' | 'shared' | 'denied'): void;
  fetched(): void;
}

class ProxyHandler {
  private readonly upstream: Upstream;
  private readonly cache: BlobCache;
  private readonly logger: Logger;
  private readonly observer: ProxyObserver;

  constructor(upstream: Upstream, cache: BlobCache, logger: Logger, observer: ProxyObserver) {
    this.upstream = upstream;
    this.cache = cache;
    this.logger = logger;
    this.observer = observer;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/';
    const blob = req.method === 'GET' && !req.headers.range ? blobOf(path) : null;
    if (!blob) return this.pass(req, res);
    const digest = blob[2] as string;

    // The registry decides, every time, whether this request may read this blob.
    const check = await this.upstream.send({ method: 'HEAD', path, headers: req.headers });
    check.resume();
    if (check.statusCode !== 200) {
      this.observer.outcome('denied');
      // The registry's own answer to the GET, body included (error JSON for 401/403/404).
      return this.pass(req, res);
    }
    const cached = await this.openCached(digest);
    if (cached) {
      this.observer.outcome('hit');
      return this.serveCached(res, digest, cached);
    }
    const inFlight = this.cache.flight(digest);
    if (inFlight) {
      this.observer.outcome('shared');
      const filled = (await inFlight) ? await this.openCached(digest) : undefined;
      return filled ? this.serveCached(res, digest, filled) : this.pass(req, res);
    }
    this.observer.outcome('miss');
    await this.fetchAndServe(req, res, path, digest);
  }

  /** Streams any request to the registry and its answer back. */
  private async pass(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === 'GET' && blobOf(req.url ?? '')) this.observer.fetched();
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
    const response = await this.upstream.send({
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers: req.headers,
      ...(hasBody ? { body: req } : {}),
    });
    res.writeHead(
      response.statusCode ?? 502,
      this.upstream.clientHeaders(response.headers, req.headers.host ?? ''),
    );
    await relay(response, res);
  }

  /**
   * The first miss on this node: one GET upstream, streamed to the client and into the cache at
   * once. The fetch is registered before anything is awaited, so requests for the digest that
   * arrive meanwhile wait for it and are then served from the cache.
   */
  private async fetchAndServe(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    digest: string,
  ): Promise<void> {
    const cached = await this.cache.fetchOnce(digest, async (writer) => {
      this.observer.fetched();
      const client = new VerifiedSender(res);
      const sink = new FillSink(client);
      let length = 0;
      let cacheable = false;
      const onHead = (status: number, headers: ReadonlyMap<string, string>): void => {
        length = Number(headers.get('content-length'));
        cacheable = status === 200 && this.cache.accepts(length);
        if (cacheable) sink.cacheInto(writer);
        const host = req.headers.host ?? '';
        res.writeHead(status, this.upstream.clientHeaders(Object.fromEntries(headers), host));
      };
      let answer: PipeAnswer;
      try {
        answer = await this.upstream.pipe(path, req.headers, sink, onHead);
      } catch (error) {
        sink.stop();
        // The registry's stream broke: the client sees a cut connection and retries.
        if (res.headersSent) client.finish(false);
        throw error;
      }
      if ('body' in answer) {
        // Not a blob after all (deleted since the HEAD, say): the registry's own answer, whole.
        // Requests waiting on this fetch make their own.
        await this.pass(req, res);
        return false;
      }
      const verified = (await sink.complete()) === digest && sink.received === length;
      client.finish(verified);
      if (!verified)
        this.logger.warn({ digest }, 'registry sent bytes that do not match the digest');
      return verified && cacheable;
    });
    // A fill that failed before answering (the registry unreachable) must still answer; one
    // relayed whole (the registry's own error) has ended the response already.
    if (!cached && !res.headersSent) unavailable(res);
    else if (!res.writableEnded) res.destroy();
  }

  /** The cached blob, opened; an entry whose file is gone is forgotten (a miss). */
  private async openCached(
    digest: string,
  ): Promise<{ file: FileHandle; size: number } | undefined> {
    const cached = this.cache.lookup(digest);
    if (!cached) return undefined;
    try {
      return { file: await open(cached.path, 'r'), size: cached.size };
    } catch (error) {
      this.logger.warn({ err: error, digest }, 'cached blob unreadable; fetching again');
      this.cache.forget(digest);
      return undefined;
    }
  }

  /**
   * Serves a cached blob, verifying it as it goes: the last bytes are sent only once the whole
   * blob matched its digest; a mismatch cuts the client off and drops the entry.
   */
  private async serveCached(
    res: ServerResponse,
    digest: string,
    cached: { file: FileHandle; size: number },
  ): Promise<void> {
    const headers: OutgoingHttpHeaders = {
      'Content-Type': 'application/octet-stream',
      'Content-Length': cached.size,
      'Docker-Content-Digest': digest,
    };
    res.writeHead(200, headers);
    const hash = createHash('sha256');
    const held = Buffer.allocUnsafe(Math.min(cached.size, heldBackBytes));
    const heldFrom = cached.size - held.length;
    try {
      // The open handle keeps reading even if eviction unlinks the file meanwhile.
      await copyFileRange(cached.file, 0, heldFrom - 1, res, (chunk) => hash.update(chunk));
      const { bytesRead } = await cached.file.read(held, 0, held.length, heldFrom);
      if (bytesRead !== held.length) throw new Error('cached blob is shorter than its entry');
    } catch (error) {
      // A client that went away is no failure of the cache.
      if (!res.destroyed) this.logger.warn({ err: error, digest }, 'cached blob read failed');
      res.destroy();
      return;
    } finally {
      await cached.file.close().catch(() => undefined);
    }
    if (`sha256:${hash.update(held).digest('hex')}` === digest) {
      res.end(held);
      return;
    }
    // Dropped before the client hears of it, so its retry fetches a good copy.
    await this.cache.dropCorrupt(digest);
    res.destroy();
  }
}

/**
 * Streams a registry response to the client, with backpressure, batching writes per turn;
 * resolves when the client's response is over, however it ended (also if it already had).
 */
async function relay(source: IncomingMessage, res: ServerResponse): Promise<void> {
  if (res.destroyed) {
    source.destroy();
    return;
  }
  source.on('data', (chunk: Buffer) => {
    corkForThisTurn(res);
    if (!res.write(chunk)) {
      source.pause();
      void drained(res).then(() => source.resume());
    }
  });
  source.on('end', () => res.end());
  source.on('error', () => res.destroy());
  await finished(res).catch(() => undefined);
  source.destroy();
}

function unavailable(res: ServerResponse): void {
  res.writeHead(502, { 'Content-Type': 'application/json' }).end(
    JSON.stringify({
      errors: [
        {
          code: 'UNAVAILABLE',
          message: 'the registry cannot be reached from this node',
          detail: {},
        },
      ],
    }),
  );
}

async function closeServer(server: Server, upstream: Upstream): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
  upstream.close();
}
