import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { readFile } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { GetPipeError, pipeGet, type PipeAnswer } from '../util/get-pipe.ts';
import { reloadIntervalMillis, watchFiles, type FileWatch } from '../tls/reload.ts';

/** Headers that describe one connection, not the message; a proxy must not forward them. */
const hopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
]);

/**
 * How long a new connection to the registry may take. A connection that kube-proxy still sends
 * to a registry pod that just went away gets no answer at all; it must fail fast and be retried.
 */
const connectTimeoutMillis = 3_000;
/** Waits before each new attempt of a request that never reached the registry. */
const retryDelaysMillis = [250, 500, 1_000, 2_000, 4_000];
/** Connection errors that mean the request was never received. */
const notConnectedCodes = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT']);

/** The request never reached the registry, so sending it again cannot do anything twice. */
class NotConnectedError extends Error {}

/**
 * A pooled connection the registry closed while it sat idle (a pod shutting down, a keep-alive
 * timeout): the request failed before any answer, so the registry never saw it, and one without
 * a body can be sent again on a new connection.
 */
function closedWhileIdle(
  request: { reusedSocket: boolean },
  error: NodeJS.ErrnoException,
): boolean {
  return request.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
}

/** A request for the registry, as the node proxy forwards it. */
export interface UpstreamRequest {
  readonly method: string;
  /** Origin-form target, e.g. `/v2/team-a/web/manifests/1`. */
  readonly path: string;
  /** The client's headers; hop-by-hop ones are dropped on the way. */
  readonly headers: IncomingHttpHeaders;
  /** The client's body, streamed when given. */
  readonly body?: NodeJS.ReadableStream;
  /** Ends the request, connecting and retries included, e.g. at a deadline. */
  readonly signal?: AbortSignal;
}

/** A request target that is not a path on the registry. */
export class BadTargetError extends Error {
  constructor(target: string) {
    super(`request target ${JSON.stringify(target.slice(0, 100))} is not a path`);
  }
}

/**
 * The registry Service as the node proxy reaches it: one keep-alive connection pool, TLS verified
 * against the operator's CA. The client's headers, Authorization included, go through untouched.
 * With a server name, `url` only says where to connect (the Service's ClusterIP, so no DNS is
 * needed); the name is what TLS verifies in the registry's certificate and what Host says.
 */
export interface UpstreamOptions {
  /**
   * The file `ca` was read from: re-read when it changes (a renewed or added CA in the mounted
   * Secret), and new connections verify with what it holds then.
   */
  readonly caFile?: string | undefined;
  readonly reloadIntervalMillis?: number;
}

export class Upstream {
  readonly url: URL;
  /** Host of every request, so also the host the registry names in its token realm and Location. */
  private readonly host: string;
  private readonly serverName: string | undefined;
  private agent: HttpAgent | HttpsAgent;
  private ca: Buffer | undefined;
  private readonly caWatch: FileWatch | undefined;

  constructor(
    url: URL,
    ca: Buffer | undefined,
    serverName?: string,
    options: UpstreamOptions = {},
  ) {
    this.url = url;
    this.host = serverName ? `${serverName}${url.port ? `:${url.port}` : ''}` : url.host;
    this.serverName = serverName;
    this.ca = ca;
    this.agent = this.newAgent();
    const caFile = options.caFile;
    this.caWatch =
      caFile && url.protocol === 'https:'
        ? watchFiles(
            [caFile],
            async () => {
              const next = await readFile(caFile).catch(() => undefined);
              // Missing or empty while the volume is swapped: keep the CA in use.
              if (!next || !next.includes('-----BEGIN CERTIFICATE-----')) return false;
              if (!this.ca?.equals(next)) this.replaceCa(next);
              return true;
            },
            options.reloadIntervalMillis ?? reloadIntervalMillis,
          )
        : undefined;
  }

  private newAgent(): HttpAgent | HttpsAgent {
    return this.url.protocol === 'https:'
      ? new HttpsAgent({
          keepAlive: true,
          maxSockets: 128,
          ...(this.ca ? { ca: this.ca } : {}),
          ...(this.serverName ? { servername: this.serverName } : {}),
        })
      : new HttpAgent({ keepAlive: true, maxSockets: 128 });
  }

  /**
   * New connections verify with `ca`. Requests in flight finish on their connections; each of
   * the old pool's connections is closed once idle, so none outlives the CA it was verified with.
   */
  private replaceCa(ca: Buffer): void {
    const old = this.agent;
    this.ca = ca;
    this.agent = this.newAgent();
    // After the agent's own 'free' handler, which may hand the socket to a queued request.
    old.on('free', () => setImmediate(() => closeIdle(old)));
    closeIdle(old);
  }

  /**
   * Whether the registry answers: the status of an anonymous `GET /v2/`, which a registry that
   * serves answers with 200 or 401; rejects when no answer came within `timeoutMillis`.
   */
  async check(timeoutMillis: number): Promise<number> {
    // One attempt: the check reports what a request would meet now.
    const response = await this.sendOnce({
      method: 'GET',
      path: '/v2/',
      headers: {},
      signal: AbortSignal.timeout(timeoutMillis),
    });
    response.resume();
    return response.statusCode ?? 0;
  }

  /**
   * Sends a request upstream; `body` (the client's request) is streamed when given. Resolves with
   * the response once its headers arrive; the caller consumes or discards the body. A request
   * without a body that could not be delivered (refused, unreachable, no connection within
   * 3 s) is sent again, a few times over about eight seconds: long enough to ride out a
   * registry pod being replaced, which is all a pull in flight would otherwise see fail.
   */
  async send(request: UpstreamRequest): Promise<IncomingMessage> {
    // A request with a body cannot be sent again: the body has been read.
    if (request.body) return this.sendOnce(request);
    return retryUnconnected(() => this.sendOnce(request), request.signal);
  }

  /**
   * GETs a blob and copies a 2xx answer's body into `destination` through reused buffers
   * (util/get-pipe.ts says why not node:http); `onHead` hears its headers before the first body
   * byte. Another answer comes back with its body, none of it written. On a connection of its
   * own, closed after the answer. Sent again, like `send`, while the registry cannot be reached.
   */
  async pipe(
    path: string,
    headers: IncomingHttpHeaders,
    destination: Writable,
    onHead: (status: number, headers: ReadonlyMap<string, string>) => void,
  ): Promise<PipeAnswer> {
    if (!isOriginForm(path)) throw new BadTargetError(path);
    const outgoing: Record<string, string> = {};
    for (const [name, value] of Object.entries(forwardedHeaders(headers, false)))
      if (value !== undefined)
        outgoing[name] = Array.isArray(value) ? value.join(', ') : String(value);
    const once = async (): Promise<PipeAnswer> => {
      try {
        return await pipeGet(this.url, { host: this.host, path, headers: outgoing }, destination, {
          ca: this.ca,
          servername: this.serverName,
          connectTimeoutMillis,
          onHead,
        });
      } catch (error) {
        const notConnected =
          error instanceof GetPipeError &&
          !error.bodyStarted &&
          (notConnectedCodes.has(error.code) || error.code === 'ConnectTimeout');
        throw notConnected ? new NotConnectedError(error.message, { cause: error }) : error;
      }
    };
    return retryUnconnected(once);
  }

  private sendOnce({
    method,
    path,
    headers,
    body,
    signal,
  }: UpstreamRequest): Promise<IncomingMessage> {
    if (!isOriginForm(path)) return Promise.reject(new BadTargetError(path));
    const outgoing = forwardedHeaders(headers, body !== undefined);
    outgoing.host = this.host;
    const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const request = send(
        `${this.url.origin}${path}`,
        { method, headers: outgoing, agent: this.agent, ...(signal ? { signal } : {}) },
        resolve,
      );
      request.on('socket', (socket) => {
        if (!socket.connecting) return; // a pooled connection, connected already
        const timer = setTimeout(
          () => request.destroy(new NotConnectedError(`connecting to ${this.url.host} timed out`)),
          connectTimeoutMillis,
        );
        socket.once('connect', () => clearTimeout(timer));
        socket.once('close', () => clearTimeout(timer));
      });
      request.on('error', (error: NodeJS.ErrnoException) =>
        reject(
          notConnectedCodes.has(error.code ?? '') || closedWhileIdle(request, error)
            ? new NotConnectedError(error.message, { cause: error })
            : error,
        ),
      );
      // No answer, or no bytes of one, for a minute: the registry is treated as unreachable.
      request.setTimeout(60_000, () => request.destroy(new Error(`${method} ${path} timed out`)));
      if (body) {
        body.pipe(request);
        body.on('error', (error) => request.destroy(error));
      } else {
        request.end();
      }
    });
  }

  /**
   * Response headers for the client: hop-by-hop ones dropped, and the registry's own address in
   * the token realm and Location replaced by the address the client used (`http://<host>`), so
   * the client keeps talking to its node's proxy.
   */
  clientHeaders(headers: IncomingHttpHeaders, clientHost: string): OutgoingHttpHeaders {
    const result: OutgoingHttpHeaders = {};
    const origin = `${this.url.protocol}//${this.host}`;
    const local = `http://${clientHost}`;
    const rewritten = new Set(['www-authenticate', 'location']);
    const rewrite = (text: string) => text.split(origin).join(local);
    for (const [name, value] of Object.entries(headers)) {
      if (value === undefined || hopByHop.has(name)) continue;
      if (rewritten.has(name)) {
        result[name] = Array.isArray(value) ? value.map(rewrite) : rewrite(String(value));
      } else {
        result[name] = value;
      }
    }
    return result;
  }

  close(): void {
    this.caWatch?.stop();
    this.agent.destroy();
  }
}

/**
 * Runs `once` until it does not fail with NotConnectedError (a request the registry never
 * received, so sending it again does nothing twice), waiting `retryDelaysMillis` between
 * attempts, or until `signal` ends it.
 */
async function retryUnconnected<T>(once: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await once();
    } catch (error) {
      const delay = retryDelaysMillis[attempt];
      if (!(error instanceof NotConnectedError) || delay === undefined || signal?.aborted)
        throw error;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/** Only origin-form targets ("/v2/..."): "//host/..." or an absolute URL would leave the registry. */
function isOriginForm(path: string): boolean {
  return path.startsWith('/') && !path.startsWith('//');
}

/** The client's headers as sent on to the registry: hop-by-hop ones dropped, Host not set. */
function forwardedHeaders(headers: IncomingHttpHeaders, hasBody: boolean): OutgoingHttpHeaders {
  // Headers the client named in Connection are hop-by-hop too.
  const connection = String(headers.connection ?? '')
    .split(',')
    .map((name) => name.trim().toLowerCase());
  const outgoing: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !hopByHop.has(name) && !connection.includes(name))
      outgoing[name] = value;
  }
  // A request sent without its body must not announce one, or the pooled connection desyncs.
  if (!hasBody) {
    delete outgoing['content-length'];
    delete outgoing['transfer-encoding'];
  }
  return outgoing;
}

/** Closes the agent's idle pooled connections (none is serving a request). */
function closeIdle(agent: HttpAgent): void {
  for (const sockets of Object.values(agent.freeSockets))
    for (const socket of sockets ?? []) socket.destroy();
}
